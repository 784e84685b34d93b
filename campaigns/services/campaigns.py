"""Campaigns: create, read, list (cursor-paginated), update, delete. Scoped by organization."""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import unicodedata
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from campaigns.db import flush_unique
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import Campaign, utcnow
from campaigns.schemas import CampaignCreate, CampaignUpdate
from campaigns.services.destinations import check_destinations

MAX_PAGE_SIZE = 200
#: Tries at a generated slug. The first is the next free ``-N``; the others add a random
#: suffix, so concurrent creations with one name stop picking the same candidate.
SLUG_ATTEMPTS = 10
#: Random slug suffix: 6 characters of ``[a-z0-9]`` (31 bits), so even hundreds of
#: concurrent creations with one name almost never draw the same one twice.
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SUFFIX_LENGTH = 6
Row = TypeVar("Row")
#: Ids are PostgreSQL ``bigint``: a larger number cannot name a row (and would make the
#: query itself fail), so it is answered like any unknown id.
MAX_ID = 2**63 - 1


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware time in UTC, so a write answers exactly what a later read shows."""
    return value.astimezone(dt.UTC) if value is not None else None


#: Latin letters that Unicode decomposition leaves whole (ligatures, stroked letters), so
#: NFKD's ASCII fold would drop them: ``"Cœur"`` became ``"cur"``.
_FOLD = str.maketrans(
    {
        "Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss", "ẞ": "SS",
        "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "Ð": "D", "ð": "d",
        "Þ": "TH", "þ": "th", "Ł": "L", "ł": "l", "ı": "i", "Ŋ": "N", "ŋ": "n",
    }
)  # fmt: skip


def slugify(name: str) -> str:
    """A URL slug from a name: ASCII-folded, lower case, hyphen-separated, ≤ 100 chars
    (``"Été 2026 — Vitrines!"`` -> ``"ete-2026-vitrines"``, ``"Cœur de ville"`` ->
    ``"coeur-de-ville"``); ``campaign`` if nothing is left."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD))
    folded = decomposed.encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:100].strip("-")
    return slug or "campaign"


async def _unique_slug(session: AsyncSession, organization_id: int, base: str) -> str:
    # Candidates are ``base`` then ``{stem}-2``, ``{stem}-3``...; the stem is cut so the
    # suffix fits 100 characters, so every candidate starts with it (not always with
    # ``base``): match on the stem, or long names get the same suffix twice.
    stem = base[:95].rstrip("-")
    taken = set(
        await session.scalars(
            select(Campaign.slug).where(
                Campaign.organization_id == organization_id,
                Campaign.deleted_at.is_(None),
                Campaign.slug.like(f"{stem}%"),
            )
        )
    )
    if base not in taken:
        return base
    n = 2
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"


def _random_slug(base: str) -> str:
    stem = base[: 100 - 1 - _SUFFIX_LENGTH].rstrip("-")
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(_SUFFIX_LENGTH))
    return f"{stem}-{suffix}"


def _cost_columns(cost: Any) -> dict[str, Any]:
    if cost is None:
        return {"cost_amount_minor": None, "cost_currency": None}
    return {"cost_amount_minor": cost.amount_minor, "cost_currency": cost.currency}


async def create_campaign(
    session: AsyncSession, *, organization_id: int, data: CampaignCreate, short_link_origin: str
) -> Campaign:
    """Create a campaign. A slug is generated from the name when absent: the name's slug,
    else suffixed ``-2``, ``-3``... and, when concurrent requests take that one first, a
    random 6-character suffix (``summer-windows-k3x9qa``). Each try runs in a savepoint,
    so a clash undoes only that try.

    ``short_link_origin`` is the service's own origin (``BASE_URL``). Raises
    :class:`Conflict` (``slug_taken``) when a given slug is already used by a live
    campaign of the organization, :class:`InvalidInput` (``redirect_loop``) when
    ``destination_url`` or ``fallback_url`` points at the short-link origin."""
    await check_destinations(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        destination_url=data.destination_url,
        fallback_url=data.fallback_url,
    )
    base = slugify(data.name)
    for attempt in range(SLUG_ATTEMPTS):
        if data.slug is not None:
            slug = data.slug
        elif attempt == 0:
            slug = await _unique_slug(session, organization_id, base)
        else:
            slug = _random_slug(base)
        campaign = Campaign(
            organization_id=organization_id,
            name=data.name,
            slug=slug,
            destination_url=data.destination_url,
            fallback_url=data.fallback_url,
            starts_at=_utc(data.starts_at),
            ends_at=_utc(data.ends_at),
            utm=data.utm.model_dump(exclude_none=True),
            nfc_invalid_tap=data.nfc_invalid_tap,
            timezone=data.timezone,
            precise_location=data.precise_location,
            **_cost_columns(data.cost),
        )
        try:
            await _flush_slug(session, slug, add=campaign)
        except Conflict:
            if data.slug is not None:
                raise
            continue  # another request took this candidate: draw a random one
        return campaign
    # 9 random draws in a row all taken: only reachable with millions of same-name campaigns.
    raise Conflict("Could not find a free slug; send one", code="slug_taken")


async def _flush_slug(session: AsyncSession, slug: str, *, add: Campaign | None = None) -> None:
    """Flush (adding ``add`` first) inside a savepoint: a slug clash rolls back only that
    (and forgets ``add``), then raises :class:`Conflict` ``slug_taken``."""
    await flush_unique(
        session,
        add=add,
        constraint="uq_campaigns_organization_id_slug",
        conflict=Conflict(f"Slug {slug!r} is already used by another campaign", code="slug_taken"),
    )


async def get_campaign(
    session: AsyncSession, *, organization_id: int, campaign_id: int
) -> Campaign:
    """The organization's live campaign. Raises :class:`NotFound` (also for other tenants')."""
    if not 1 <= campaign_id <= MAX_ID:
        raise NotFound(f"Campaign {campaign_id} not found", code="campaign_not_found")
    campaign = await session.scalar(
        select(Campaign).where(
            Campaign.id == campaign_id,
            Campaign.organization_id == organization_id,
            Campaign.deleted_at.is_(None),
        )
    )
    if campaign is None:
        raise NotFound(f"Campaign {campaign_id} not found", code="campaign_not_found")
    return campaign


def check_window(start: dt.datetime | None, end: dt.datetime | None) -> None:
    """Check a report or list window ``[start, end)``: raises :class:`InvalidInput`
    (``validation_error``) for a naive bound, (``invalid_window``) when ``end <= start``."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.utcoffset() is None:
            raise InvalidInput(
                f"{name!r} must carry a timezone",
                errors=[{"loc": ["query", name], "msg": "timezone required", "type": "tz"}],
            )
    if start is not None and end is not None and end <= start:
        raise InvalidInput(
            "'to' must be after 'from'",
            code="invalid_window",
            errors=[
                {"loc": ["query", "to"], "msg": "must be after 'from'", "type": "invalid_window"}
            ],
        )


def encode_cursor(last_id: int) -> str:
    """Opaque cursor for keyset pagination on ``id`` descending."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor points after. Raises :class:`InvalidInput` (``invalid_cursor``)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        last_id = int(value)
        if prefix != "id" or not 0 <= last_id <= MAX_ID:
            raise ValueError(raw)
        return last_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("Invalid pagination cursor", code="invalid_cursor") from exc


async def keyset_page(
    session: AsyncSession,
    query: Select[Row],
    id_column: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """One page of ``query``, newest first by ``id_column``: the rows and the cursor of the
    next page (None on the last). Raises :class:`InvalidInput` (``invalid_cursor``)."""
    if cursor is not None:
        query = query.where(id_column < decode_cursor(cursor))
    rows = list(await session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))
    next_cursor = (
        encode_cursor(getattr(rows[limit - 1], id_column.key)) if len(rows) > limit else None
    )
    return rows[:limit], next_cursor


async def list_campaigns(
    session: AsyncSession,
    *,
    organization_id: int,
    limit: int = 50,
    cursor: str | None = None,
    archived: bool | None = None,
) -> tuple[list[Campaign], str | None]:
    """Newest first, ``limit`` (1..200) per page; returns the page and the next cursor."""
    query = select(Campaign).where(
        Campaign.organization_id == organization_id, Campaign.deleted_at.is_(None)
    )
    if archived is not None:
        query = query.where(Campaign.archived.is_(archived))
    return await keyset_page(session, query, Campaign.id, limit=limit, cursor=cursor)


async def update_campaign(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    data: CampaignUpdate,
    short_link_origin: str,
) -> Campaign:
    """Apply the fields present in ``data``. Raises :class:`NotFound`, :class:`Conflict`
    (``slug_taken``) and :class:`InvalidInput` (``invalid_schedule``: ``ends_at`` not after
    ``starts_at`` once merged with stored values; ``destination_required``,
    ``nfc_invalid_tap_required``, ``timezone_required`` and the like for ``null`` on a
    required field; ``redirect_loop``: a URL on ``short_link_origin``, the service's own
    origin)."""
    campaign = await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    fields = data.model_dump(exclude_unset=True)
    await check_destinations(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        destination_url=fields.get("destination_url"),
        fallback_url=fields.get("fallback_url"),
    )
    if "destination_url" in fields and fields["destination_url"] is None:
        raise InvalidInput("destination_url cannot be removed", code="destination_required")
    if "name" in fields and fields["name"] is None:
        raise InvalidInput("name cannot be removed", code="name_required")
    if "slug" in fields and fields["slug"] is None:
        raise InvalidInput("slug cannot be removed", code="slug_required")
    if "timezone" in fields and fields["timezone"] is None:
        raise InvalidInput("timezone cannot be removed", code="timezone_required")
    for key in ("name", "slug", "destination_url", "fallback_url", "timezone"):
        if key in fields:
            setattr(campaign, key, fields[key])
    for key in ("starts_at", "ends_at"):
        if key in fields:
            setattr(campaign, key, _utc(fields[key]))
    if "archived" in fields:
        if fields["archived"] is None:
            raise InvalidInput("archived must be true or false", code="archived_required")
        campaign.archived = fields["archived"]
    if "nfc_invalid_tap" in fields:
        if fields["nfc_invalid_tap"] is None:
            raise InvalidInput(
                "nfc_invalid_tap must be 'flag' or 'block'", code="nfc_invalid_tap_required"
            )
        campaign.nfc_invalid_tap = fields["nfc_invalid_tap"]
    if "precise_location" in fields:
        if fields["precise_location"] is None:
            raise InvalidInput(
                "precise_location must be 'off' or 'ask'", code="precise_location_required"
            )
        campaign.precise_location = fields["precise_location"]
    if "utm" in fields:
        campaign.utm = data.utm.model_dump(exclude_none=True) if data.utm else {}
    if "cost" in fields:
        for key, value in _cost_columns(data.cost).items():
            setattr(campaign, key, value)
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        raise InvalidInput("ends_at must be after starts_at", code="invalid_schedule")
    campaign.updated_at = utcnow()
    await _flush_slug(session, campaign.slug)
    return campaign


async def delete_campaign(session: AsyncSession, *, organization_id: int, campaign_id: int) -> None:
    """Delete a campaign: it leaves the API and its tags stop resolving (404), while its
    scans and conversions stay for reporting until retention removes them."""
    campaign = await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    campaign.deleted_at = utcnow()
    campaign.updated_at = campaign.deleted_at
    await session.flush()
