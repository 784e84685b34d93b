"""``GET /v1/campaigns/{id}/stats/locations`` and ``/heatmap``: where a campaign was
scanned (figures defined in :mod:`campaigns.services.geo_reports`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import REPORTS_READ, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.schemas import LocationStats, Timestamp
from campaigns.services import geo_reports as service

router = APIRouter(
    dependencies=[REPORTS_READ], prefix="/v1/campaigns", tags=["stats"], route_class=CheckedRoute
)

_From = Annotated[
    Timestamp | None, Query(alias="from", description="Inclusive start, ISO 8601 with a timezone")
]
_To = Annotated[
    Timestamp | None, Query(alias="to", description="Exclusive end, ISO 8601 with a timezone")
]


@router.get(
    "/{campaign_id}/stats/locations",
    response_model=LocationStats,
    responses=problem_responses("campaign_not_found", "invalid_window"),
)
async def scans_per_location(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    start: _From = None,
    end: _To = None,
) -> LocationStats:
    """The campaign's scans per matched store over ``[from, to)``: human and bot scans,
    daily unique visitors, scans with a consented position and scans far from their
    tag's placement; unmatched scans in a last row with ``location_id: null``."""
    return await service.location_stats(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
    )


_HEATMAP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "GeoJSON FeatureCollection: one Polygon per hexagon (WGS 84) with "
        "`properties.scans`, most scans first, `cell_m`, and `data_since` (oldest scan time "
        "covered: the organization's retention horizon)",
        "content": {"application/geo+json": {"schema": {"type": "object"}}},
    }
}


@router.get(
    "/{campaign_id}/heatmap",
    response_class=JSONResponse,
    responses={
        **_HEATMAP_RESPONSE,
        **problem_responses("campaign_not_found", "invalid_window"),
    },
)
async def heatmap(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    cell_m: Annotated[
        float,
        Query(
            ge=service.MIN_CELL_M,
            le=service.MAX_CELL_M,
            description="Hexagon size, metres from centre to vertex (50 to 50,000)",
        ),
    ] = 500,
    start: _From = None,
    end: _To = None,
) -> JSONResponse:
    """Human scans counted in hexagons of ``cell_m`` metres over ``[from, to)``; IP
    positions coarser than a cell are left out."""
    collection = await service.heatmap(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        cell_m=cell_m,
        start=start,
        end=end,
    )
    return JSONResponse(collection, media_type="application/geo+json")
