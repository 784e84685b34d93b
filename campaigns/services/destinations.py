"""Rules on where Passerelle may send people: destination and fallback URLs of campaigns,
tags, redirect rules and their split arms go through :func:`check_destinations` on every
write: not on the service's own origin, and on a host the organization allows.

A destination on the service's own short-link origin would send a scan back into
Passerelle: ``/s/CODE`` pointing at ``/s/CODE`` is an endless redirect loop (browsers give
up after about 20 hops), and a link to another code double-counts scans. Such URLs are
refused whatever their path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput
from campaigns.models import Campaign, Organization, RedirectRule, Tag

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(url: str) -> tuple[str, int | None] | None:
    """``(host, port)`` compared for "same service": host lower case, IDNA (UTS #46)
    ASCII form, without a trailing dot; port ``None`` when it is its scheme's default
    (so ``http://h`` and ``https://h:443`` both give ``("h", None)``: a plain-http link
    normally reaches the same service through an https redirect). ``None`` for a URL
    without a host or with an invalid port or host."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port
        if not host.isascii():
            host = idna.encode(host, uts46=True).decode("ascii")
    except (ValueError, idna.IDNAError):
        return None
    if port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        port = None
    return host.lower().rstrip("."), port


def is_own_origin(url: str, short_link_origin: str) -> bool:
    """Whether ``url`` points at ``short_link_origin`` (same host and port as described in
    :func:`_host_port`, any scheme and path)."""
    own = _host_port(short_link_origin)
    return own is not None and _host_port(url) == own


def check_not_own_origin(short_link_origin: str, **urls: str | None) -> None:
    """Refuse URLs on the service's own short-link origin (``BASE_URL``).

    ``urls`` maps body field names to URLs (``None`` skips a field), e.g.
    ``destination_url=..., fallback_url=...``. Raises :class:`InvalidInput`
    (``redirect_loop``, 422) listing every such field in ``errors``.
    """
    looping = [
        name
        for name, url in urls.items()
        if url is not None and is_own_origin(url, short_link_origin)
    ]
    if looping:
        raise InvalidInput(
            f"{', '.join(looping)} must not point at this service's own short links "
            f"({short_link_origin}): a scan would redirect to itself",
            code="redirect_loop",
            errors=[
                {
                    "loc": ["body", name],
                    "msg": "points at the short-link origin",
                    "type": "redirect_loop",
                }
                for name in looping
            ],
        )


def normalise_host_pattern(pattern: str) -> str:
    """A host pattern of ``allowed_destination_hosts`` in its compared form: lower case,
    IDNA (UTS #46) ASCII, no trailing dot; ``*.`` kept in front of a wildcard. Raises
    ``ValueError`` for anything but a host name or ``*.`` + host name (no scheme, port,
    path, IP literal or inner ``*``)."""
    wildcard = pattern.startswith("*.")
    host = pattern[2:] if wildcard else pattern
    host = host.strip().rstrip(".")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii") if host else ""
    except idna.IDNAError as exc:
        raise ValueError(f"not a host name: {pattern!r}") from exc
    labels = ascii_host.split(".")
    if not ascii_host or len(ascii_host) > 253 or (wildcard and len(labels) < 2):
        raise ValueError(f"not a host name: {pattern!r}")
    if labels[-1].isdigit():
        raise ValueError(f"an IP address is not a host name: {pattern!r}")
    return ("*." if wildcard else "") + ascii_host.lower()


def host_allowed(url: str, patterns: Sequence[str]) -> bool:
    """Whether ``url``'s host matches one of ``patterns`` (normalised by
    :func:`normalise_host_pattern`): ``shop.example.com`` matches that host only (any
    port), ``*.example.com`` any subdomain of ``example.com`` at any depth but not
    ``example.com`` itself. An empty ``patterns`` allows every host."""
    if not patterns:
        return True
    parsed = _host_port(url)
    if parsed is None:
        return False
    host = parsed[0]
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


async def check_destinations(
    session: AsyncSession,
    *,
    organization_id: int,
    short_link_origin: str,
    **urls: str | None,
) -> None:
    """Every check a destination URL written by the API goes through (campaign
    destination and fallback, tag override, rule destination and split arms): not on the
    short-link origin (:func:`check_not_own_origin`, ``redirect_loop``), and on a host
    the organization allows (``allowed_destination_hosts``; raises
    :class:`InvalidInput` ``destination_not_allowed``, 422, with each field in
    ``errors``). ``urls`` maps body field names to URLs; ``None`` skips a field."""
    check_not_own_origin(short_link_origin, **urls)
    if all(url is None for url in urls.values()):
        return
    patterns = await session.scalar(
        select(Organization.allowed_destination_hosts).where(Organization.id == organization_id)
    )
    if not patterns:
        return
    refused = [
        name for name, url in urls.items() if url is not None and not host_allowed(url, patterns)
    ]
    if refused:
        raise InvalidInput(
            f"{', '.join(refused)}: the host is not in the organization's "
            f"allowed_destination_hosts ({', '.join(patterns)})",
            code="destination_not_allowed",
            errors=[
                {
                    "loc": ["body", *name.split(".")],
                    "msg": "host not in allowed_destination_hosts",
                    "type": "destination_not_allowed",
                }
                for name in refused
            ],
        )


@dataclass(frozen=True, slots=True)
class Noncompliant:
    """A stored URL outside the allowed hosts: ``resource_type`` ``campaign``, ``tag`` or
    ``rule``, its ``id``, the ``field`` (``destination_url``, ``fallback_url``,
    ``split.<i>.destination_url``) and the ``url``."""

    resource_type: str
    id: int
    field: str
    url: str


async def noncompliant_destinations(
    session: AsyncSession, *, organization_id: int, patterns: Sequence[str]
) -> list[Noncompliant]:
    """The organization's live campaigns, tags and rules whose URLs ``patterns`` no longer
    allow (what to fix after the list shrank), by resource type then id. Deleted
    campaigns, and their tags and rules, are left out: they redirect nobody."""
    if not patterns:
        return []
    found: list[Noncompliant] = []
    campaigns = await session.execute(
        select(Campaign.id, Campaign.destination_url, Campaign.fallback_url)
        .where(Campaign.organization_id == organization_id, Campaign.deleted_at.is_(None))
        .order_by(Campaign.id)
    )
    for campaign_id, destination, fallback in campaigns:
        for name, url in (("destination_url", destination), ("fallback_url", fallback)):
            if url is not None and not host_allowed(url, patterns):
                found.append(Noncompliant("campaign", campaign_id, name, url))
    live = select(Campaign.id).where(
        Campaign.organization_id == organization_id, Campaign.deleted_at.is_(None)
    )
    tags = await session.execute(
        select(Tag.id, Tag.destination_url)
        .where(
            Tag.organization_id == organization_id,
            Tag.destination_url.is_not(None),
            Tag.campaign_id.in_(live),
        )
        .order_by(Tag.id)
    )
    for tag_id, url in tags:
        if url is not None and not host_allowed(url, patterns):
            found.append(Noncompliant("tag", tag_id, "destination_url", url))
    rules = await session.execute(
        select(RedirectRule.id, RedirectRule.destination_url, RedirectRule.split)
        .where(RedirectRule.organization_id == organization_id, RedirectRule.campaign_id.in_(live))
        .order_by(RedirectRule.id)
    )
    for rule_id, url, split in rules:
        if url is not None and not host_allowed(url, patterns):
            found.append(Noncompliant("rule", rule_id, "destination_url", url))
        for index, variant in enumerate(split or ()):
            arm = variant.get("destination_url")
            if isinstance(arm, str) and not host_allowed(arm, patterns):
                found.append(Noncompliant("rule", rule_id, f"split.{index}.destination_url", arm))
    return found
