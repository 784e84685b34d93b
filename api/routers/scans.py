"""``GET /v1/campaigns/{id}/scans``: a campaign's scans, as JSON pages, GeoJSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.deps import REPORTS_READ, OrganizationId, SessionDep, get_session_factory
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.schemas import ScanPage, ScanRead, Timestamp
from campaigns.services import scans as service

router = APIRouter(
    dependencies=[REPORTS_READ], prefix="/v1/campaigns", tags=["scans"], route_class=CheckedRoute
)

#: Scans written per chunk of a streamed export.
_CHUNK = 500

_EXPORTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON: a page of scans, newest first (`format=json`). GeoJSON: a "
        "FeatureCollection of every scan in the window, oldest first (`format=geojson`, "
        "`application/geo+json`). CSV: the same rows with a header (`format=csv`), "
        "`lon`/`lat` for the position.",
        "content": {
            "application/geo+json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.get(
    "/{campaign_id}/scans",
    response_model=ScanPage,
    responses={
        **_EXPORTS,
        **problem_responses("campaign_not_found", "invalid_window", "invalid_cursor"),
    },
)
async def list_scans(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)],
    start: Annotated[
        Timestamp | None,
        Query(alias="from", description="Inclusive start, ISO 8601 with a timezone"),
    ] = None,
    end: Annotated[
        Timestamp | None,
        Query(alias="to", description="Exclusive end, ISO 8601 with a timezone"),
    ] = None,
    format: Annotated[
        Literal["json", "geojson", "csv"] | None,
        Query(
            description="`json` (pages), `geojson` or `csv` (every scan, streamed); "
            "without it, `Accept: application/geo+json` asks for `geojson`, else `json`"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="JSON page size")] = 100,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous JSON page")
    ] = None,
    accept: Annotated[
        str | None,
        Header(
            description="`application/geo+json` (without `format`): the GeoJSON export",
            max_length=1024,
        ),
    ] = None,
) -> ScanPage | StreamingResponse | JSONResponse:
    """The campaign's scans in ``[from, to)``: people's and bots' (``is_bot``), each with
    its device, GeoIP country/region/city, position of record (``geo_source`` ``gps``,
    ``placement`` or ``ip``, ``accuracy_m``), matched store, ``far_from_placement``, its
    ``outcome`` and, for NFC taps, ``nfc_counter`` and ``nfc_verification``. Never an
    address nor a visitor id."""
    if format is None:
        format = "geojson" if _wants_geojson(accept) else "json"
    if format == "json":
        items, next_cursor = await service.list_scans(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
        )
        return ScanPage(items=items, next_cursor=next_cursor)
    await service.check_report(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
    )

    async def scans() -> AsyncIterator[list[ScanRead]]:
        # Its own session: the request's is closed once the response starts.
        async with factory() as own:
            chunk: list[ScanRead] = []
            async for scan in service.stream_scans(
                own,
                organization_id=organization_id,
                campaign_id=campaign_id,
                start=start,
                end=end,
            ):
                chunk.append(scan)
                if len(chunk) == _CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    filename = f"campaign-{campaign_id}-scans"
    if format == "geojson":
        return StreamingResponse(
            _geojson(scans()),
            media_type="application/geo+json",
            headers={"Content-Disposition": f'attachment; filename="{filename}.geojson"'},
        )
    return StreamingResponse(
        _csv(scans()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def _wants_geojson(accept: str | None) -> bool:
    """Whether an ``Accept`` header (RFC 9110 §12.5.1) prefers ``application/geo+json``:
    named with a non-zero ``q`` at least that of ``application/json`` when both are
    named. Wildcards alone keep the JSON pages."""
    weights: dict[str, float] = {}
    for media_range in (accept or "").split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media_type.lower()] = q
    geojson = weights.get("application/geo+json", 0.0)
    return geojson > 0 and geojson >= weights.get("application/json", 0.0)


async def _geojson(chunks: AsyncIterator[list[ScanRead]]) -> AsyncIterator[bytes]:
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for chunk in chunks:
        text = ",".join(
            json.dumps(service.geojson_feature(scan), separators=(",", ":")) for scan in chunk
        )
        yield (text if first else "," + text).encode()
        first = False
    yield b"]}"


async def _csv(chunks: AsyncIterator[list[ScanRead]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 §2
    writer.writerow(service.CSV_COLUMNS)
    yield buffer.getvalue().encode()
    async for chunk in chunks:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(service.csv_row(scan) for scan in chunk)
        yield buffer.getvalue().encode()
