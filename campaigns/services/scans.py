"""A campaign's scans as reports show them: JSON pages, GeoJSON and CSV.

Scans are read through the ``scan_positions`` view (:data:`campaigns.models.scan_positions`),
so a consented GPS fix is the scan's position. No address (not even truncated) and no
visitor id ever leaves through here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.models import scan_positions
from campaigns.schemas import ScanRead
from campaigns.services.campaigns import (
    check_window,
    decode_cursor,
    encode_cursor,
    get_campaign,
)

#: The columns of a :class:`ScanRead`, in CSV order (``lon``/``lat`` for ``position``).
CSV_COLUMNS = (
    "id",
    "click_id",
    "tag_id",
    "scanned_at",
    "channel",
    "is_bot",
    "bot_reason",
    "device_type",
    "os",
    "browser",
    "country",
    "region",
    "city",
    "lon",
    "lat",
    "geo_source",
    "accuracy_m",
    "location_id",
    "far_from_placement",
    "rule_id",
    "variant",
    "internal",
    "outcome",
    "nfc_counter",
    "nfc_verification",
)

_V = scan_positions.c
_COLUMNS = (
    _V.scan_id,
    _V.click_id,
    _V.tag_id,
    _V.scanned_at,
    _V.channel,
    _V.is_bot,
    _V.bot_reason,
    _V.device_type,
    _V.os,
    _V.browser,
    _V.country,
    _V.region,
    _V.city,
    func.ST_X(func.geometry(_V.position)).label("lon"),
    func.ST_Y(func.geometry(_V.position)).label("lat"),
    _V.geo_source,
    _V.accuracy_m,
    _V.location_id,
    _V.far_from_placement,
    _V.rule_id,
    _V.variant,
    _V.internal,
    _V.outcome,
    _V.nfc_counter,
    _V.nfc_verification,
)


async def check_report(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> None:
    """Raise what a report of this campaign and window would: :class:`InvalidInput`
    (``invalid_window``), :class:`NotFound` (``campaign_not_found``). Streams call it
    before their first byte."""
    check_window(start, end)
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)


async def _query(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> Select[Any]:
    await check_report(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
    )
    query = select(*_COLUMNS).where(
        _V.organization_id == organization_id, _V.campaign_id == campaign_id
    )
    if start is not None:
        query = query.where(_V.scanned_at >= start)
    if end is not None:
        query = query.where(_V.scanned_at < end)
    return query


def scan_read(row: Any) -> ScanRead:
    """A :class:`ScanRead` from a row of the report's columns."""
    values = dict(row._mapping)
    lon, lat = values.pop("lon"), values.pop("lat")
    values["id"] = values.pop("scan_id")
    position = {"type": "Point", "coordinates": [lon, lat]} if lon is not None else None
    return ScanRead(**values, position=position)


async def list_scans(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[ScanRead], str | None]:
    """One page (``limit`` scans, newest first) of the campaign's scans in ``[start,
    end)`` and the next page's cursor. Raises :class:`NotFound` (``campaign_not_found``)
    and :class:`InvalidInput` (``invalid_window``, ``invalid_cursor``)."""
    query = await _query(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
    )
    if cursor is not None:
        query = query.where(_V.scan_id < decode_cursor(cursor))
    rows = list(await session.execute(query.order_by(_V.scan_id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].scan_id) if len(rows) > limit else None
    return [scan_read(row) for row in rows[:limit]], next_cursor


async def stream_scans(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> AsyncIterator[ScanRead]:
    """Every scan of the campaign in ``[start, end)``, oldest first, streamed from a
    server-side cursor (memory stays flat). Raises as :func:`list_scans` before the
    first scan."""
    query = await _query(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
    )
    result = await session.stream(query.order_by(_V.scan_id).execution_options(yield_per=2000))
    async for row in result:
        yield scan_read(row)


def geojson_feature(scan: ScanRead) -> dict[str, Any]:
    """A scan as a GeoJSON Feature (RFC 7946 §3.2): ``id`` the scan id, ``geometry`` its
    position (null when unknown), every other field in ``properties``."""
    properties = scan.model_dump(mode="json", exclude={"id", "position"})
    return {"type": "Feature", "id": scan.id, "geometry": scan.position, "properties": properties}


def csv_row(scan: ScanRead) -> list[Any]:
    """A scan's values in :data:`CSV_COLUMNS` order (``lon``/``lat`` empty when unknown)."""
    values = scan.model_dump(mode="json")
    coordinates = scan.position["coordinates"] if scan.position else (None, None)
    values["lon"], values["lat"] = coordinates
    return [values[name] for name in CSV_COLUMNS]
