"""Organizations (tenants) and their API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput, NotFound, Unauthorized
from campaigns.models import ApiKey, Organization, utcnow
from campaigns.schemas import OrganizationUpdate
from campaigns.scopes import ADMIN, SCOPES

#: Visible part of every key; lets secret scanners (and people) recognise a Passerelle key.
KEY_PREFIX = "psk_"
#: ``last_used_at`` is written at most this often per key, to keep auth read-only.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly issued API key: ``secret`` is the full key, shown once and never stored."""

    api_key: ApiKey
    secret: str


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a key. Keys carry 256 random bits, so a fast unsalted hash is sound."""
    return hashlib.sha256(secret.encode()).digest()


async def create_organization(
    session: AsyncSession, *, name: str
) -> tuple[Organization, IssuedKey]:
    """Create an organization with its first API key (named ``default``). Raises
    :class:`InvalidInput` (``invalid_name``) for an empty or over-long name."""
    name = name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise InvalidInput("name must be 1 to 200 printable characters", code="invalid_name")
    organization = Organization(name=name)
    session.add(organization)
    await session.flush()
    issued = await issue_api_key(
        session, organization_id=organization.id, name="default", scopes=[ADMIN]
    )
    return organization, issued


async def issue_api_key(
    session: AsyncSession, *, organization_id: int, name: str, scopes: Sequence[str]
) -> IssuedKey:
    """Issue a new key holding ``scopes`` (:data:`campaigns.scopes.SCOPES`, at least one):
    ``psk_`` + 43 characters of URL-safe base64 (256 random bits). Raises
    :class:`InvalidInput` (``validation_error``) for no scope or an unknown one,
    ``invalid_name`` for an empty or over-long name, and :class:`NotFound` for an
    unknown organization."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if not scopes or unknown:
        raise InvalidInput(
            f"scopes must be one or more of {', '.join(SCOPES)}",
            errors=[{"loc": ["body", "scopes"], "msg": "unknown or no scope", "type": "scopes"}],
        )
    name = name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise InvalidInput("name must be 1 to 200 printable characters", code="invalid_name")
    if await session.get(Organization, organization_id) is None:
        raise NotFound(f"Organization {organization_id} not found", code="organization_not_found")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        organization_id=organization_id,
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        secret_hash=hash_secret(secret),
        # Canonical order, no duplicates: what the list shows is what was granted.
        scopes=[scope for scope in SCOPES if scope in scopes],
    )
    session.add(api_key)
    await session.flush()
    return IssuedKey(api_key=api_key, secret=secret)


async def revoke_api_key(session: AsyncSession, *, organization_id: int, key_id: int) -> ApiKey:
    """Revoke a key of the organization. Raises :class:`NotFound`."""
    api_key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == organization_id)
    )
    if api_key is None:
        raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
    api_key.revoked_at = api_key.revoked_at or utcnow()
    await session.flush()
    return api_key


async def list_api_keys(session: AsyncSession, *, organization_id: int) -> list[ApiKey]:
    """The organization's keys (revoked ones included), oldest first. Secrets are never
    stored, so only the visible ``prefix`` identifies a key to people."""
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.organization_id == organization_id).order_by(ApiKey.id)
    )
    return list(rows)


async def authenticate(session: AsyncSession, *, secret: str) -> ApiKey:
    """The live key matching ``secret``. Raises :class:`Unauthorized` if unknown or revoked."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 100:
        raise Unauthorized("Invalid API key", code="invalid_api_key")
    api_key = await session.scalar(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret)))
    if api_key is None or api_key.revoked_at is not None:
        raise Unauthorized("Invalid or revoked API key", code="invalid_api_key")
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        # SKIP LOCKED: the row lock lasts until the request commits; a concurrent request
        # on the same key skips the bookkeeping instead of waiting for it.
        locked = select(ApiKey.id).where(ApiKey.id == api_key.id).with_for_update(skip_locked=True)
        await session.execute(
            update(ApiKey).where(ApiKey.id.in_(locked.scalar_subquery())).values(last_used_at=now)
        )
    return api_key


async def get_organization(session: AsyncSession, *, organization_id: int) -> Organization:
    """The organization and its settings. Raises :class:`NotFound`
    (``organization_not_found``)."""
    organization = await session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(f"Organization {organization_id} not found", code="organization_not_found")
    return organization


async def update_organization(
    session: AsyncSession, *, organization_id: int, data: OrganizationUpdate
) -> Organization:
    """Apply the settings present in ``data`` (``name``, ``visitor_cookie``,
    ``visitor_cookie_consent``, ``scan_retention_days``, ``precise_location_retention_days``,
    ``allowed_destination_hosts``; the schema refuses nulls but for the last). Raises
    :class:`NotFound`, and :class:`InvalidInput` ``invalid_retention`` when the
    precise-location term would exceed the scans' (a GPS fix cannot outlive its scan).
    What a new allowed-hosts list no longer allows is
    :func:`campaigns.services.destinations.noncompliant_destinations`."""
    organization = await get_organization(session, organization_id=organization_id)
    changes = data.model_dump(exclude_unset=True)
    scan_days = changes.get("scan_retention_days", organization.scan_retention_days)
    precise_days = changes.get(
        "precise_location_retention_days", organization.precise_location_retention_days
    )
    if precise_days > scan_days:
        raise InvalidInput(
            f"precise_location_retention_days ({precise_days}) must not exceed "
            f"scan_retention_days ({scan_days})",
            code="invalid_retention",
        )
    for key, value in changes.items():
        setattr(organization, key, value)
    await session.flush()
    return organization
