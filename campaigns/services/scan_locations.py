"""Consented precise positions of scans (``POST /s/{click_id}/location``).

A position is stored in ``scan_locations``, keyed by click id, never in ``scans`` (an
append-only log written by the group commit); the ``scan_positions`` view reads it as
the scan's ``position`` with ``geo_source = 'gps'`` (see docs/DECISIONS.md), and the store
it falls in (matched when it is recorded, by the scan path's rule and matcher) as the
scan's ``location_id``; in no store's area, the scan keeps its own.

Rules: at most one position per click id (the second is a 409
``location_already_recorded``); only within :data:`~campaigns.scanning.recent.LOCATION_WINDOW`
(10 minutes) of the scan (410 ``location_window_closed``); the click id must be a scan's
(404 ``click_not_found``): one this process issued recently (it may still be in the
local spool), else one in ``scans``, else one vouched for by the signed click token the
consent page carries (:mod:`campaigns.scanning.click_tokens`): a scan this service
issued but that is not stored yet (another process's spool or group commit). Its
position is stored all the same, keyed by click id, and the ``scan_positions`` view
joins it to the scan once the scan is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import Conflict, Gone, NotFound
from campaigns.models import Scan, ScanLocation
from campaigns.scanning.recent import LOCATION_WINDOW, RecentClick, RecentClicks
from campaigns.schemas import ScanLocationCreate

#: ``(organization id, lon, lat)`` (WGS 84 degrees) -> the id of the organization's
#: store whose area covers the point, or None.
StoreMatcher = Callable[[int, float, float], int | None]

#: Longest click id looked up (ours are 22 characters; ``scans.click_id`` is 32).
MAX_CLICK_ID = 32


def _not_found() -> NotFound:
    return NotFound("No scan has this click id", code="click_not_found")


async def find_click(
    session: AsyncSession,
    *,
    click_id: str,
    recent: RecentClicks | None,
    vouched: RecentClick | None = None,
) -> RecentClick:
    """The scan of ``click_id``: from ``recent`` (this process's), else the database,
    else ``vouched`` (what a valid click token says of it). Raises :class:`NotFound`
    ``click_not_found``."""
    found = recent.get(click_id) if recent is not None else None
    if found is not None:
        return found
    if len(click_id) > MAX_CLICK_ID:
        raise _not_found()
    row = (
        await session.execute(
            select(Scan.organization_id, Scan.scanned_at).where(Scan.click_id == click_id)
        )
    ).first()
    if row is not None:
        return RecentClick(row[0], row[1])
    if vouched is not None:
        return vouched
    raise _not_found()


async def record_scan_location(
    session: AsyncSession,
    *,
    click_id: str,
    data: ScanLocationCreate,
    now: dt.datetime,
    recent: RecentClicks | None = None,
    vouched: RecentClick | None = None,
    match: StoreMatcher | None = None,
) -> None:
    """Store the consented position ``data`` (WGS 84 degrees, accuracy in metres) of the
    scan ``click_id`` at time ``now`` (aware), with the store it falls in: ``match``
    (organization id, lon, lat) -> location id or None, the scan path's in-memory matcher
    (:meth:`campaigns.scanning.locations.LocationCache.match`); without it, or in no
    store's area, the scan keeps its own store. Raises :class:`NotFound`
    ``click_not_found``, :class:`Gone` ``location_window_closed``, :class:`Conflict`
    ``location_already_recorded``. ``vouched``: the scan's organization and time from a
    valid click token, used when neither ``recent`` nor the database knows the click."""
    click = await find_click(session, click_id=click_id, recent=recent, vouched=vouched)
    if now - click.scanned_at > LOCATION_WINDOW:
        raise Gone(
            "A precise location is accepted within 10 minutes of the scan",
            code="location_window_closed",
        )
    statement = (
        insert(ScanLocation)
        .values(
            click_id=click_id,
            organization_id=click.organization_id,
            position=text("ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography").bindparams(
                lon=data.lon, lat=data.lat
            ),
            accuracy_m=data.accuracy_m,
            location_id=match(click.organization_id, data.lon, data.lat) if match else None,
        )
        .on_conflict_do_nothing(index_elements=["click_id"])
        .returning(ScanLocation.click_id)
    )
    try:
        async with session.begin_nested():
            stored = (await session.execute(statement)).scalar_one_or_none()
    except IntegrityError as exc:  # the organization was deleted since the scan
        raise _not_found() from exc
    if stored is None:
        raise Conflict(
            "A precise location was already recorded for this scan",
            code="location_already_recorded",
        )
