"""``/v1/locations``: stores and venues; nearest-first search; bulk import (CSV, GeoJSON)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from api.deps import CAMPAIGNS_READ, CAMPAIGNS_WRITE, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute, parse_content_type
from api.views import location_read
from campaigns.errors import DomainError, InvalidInput
from campaigns.schemas import (
    LocationCreate,
    LocationImportRead,
    LocationRead,
    LocationUpdate,
    Page,
)
from campaigns.services import locations as service
from campaigns.services.campaigns import MAX_PAGE_SIZE

router = APIRouter(prefix="/v1/locations", tags=["locations"], route_class=JsonBodyRoute)

_GEO = (
    "invalid_coordinates",
    "invalid_geojson",
    "invalid_geometry",
    "geofence_excludes_point",
    "invalid_radius",
    "area_conflict",
    "invalid_timezone",
)

#: Half the equator: no two points on Earth are further apart (metres).
MAX_DISTANCE_M = 20_037_509.0


class LocationPage(Page[LocationRead]):
    """A page of locations; ``limit`` echoes the page size asked for (default 50)."""

    limit: int = Field(description="The page size asked for (default 50)", examples=[50])


class UnsupportedMediaType(DomainError):
    """The import body is neither CSV nor GeoJSON (415)."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


@router.post(
    "",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=201,
    response_model=LocationRead,
    responses=problem_responses("location_external_id_taken", *_GEO),
)
async def create_location(
    data: LocationCreate, session: SessionDep, organization_id: OrganizationId
) -> LocationRead:
    """Create a location (409 ``location_external_id_taken``; 422 ``invalid_coordinates``,
    ``invalid_geojson``, ``invalid_geometry``, ``geofence_excludes_point``,
    ``invalid_radius``, ``area_conflict``)."""
    location = await service.create_location(session, organization_id=organization_id, data=data)
    return location_read(location)


@router.get(
    "",
    dependencies=[CAMPAIGNS_READ],
    response_model=LocationPage,
    responses=problem_responses("near_required", "invalid_cursor", "invalid_coordinates"),
)
async def list_locations(
    session: SessionDep,
    organization_id: OrganizationId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    near: Annotated[
        str | None, Query(max_length=100, description="`LON,LAT`: nearest first")
    ] = None,
    within_m: Annotated[
        float | None, Query(gt=0, le=MAX_DISTANCE_M, description="With `near`: at most (m)")
    ] = None,
) -> LocationPage:
    """Newest first, cursor-paginated; or, with ``near=LON,LAT``, the ``limit`` nearest
    (geodesic ``distance_m`` on each, optionally ``within_m``; one page, no cursor)."""
    if near is None:
        if within_m is not None:
            raise InvalidInput("within_m needs near=LON,LAT", code="near_required")
        rows, next_cursor = await service.list_locations(
            session, organization_id=organization_id, limit=limit, cursor=cursor
        )
        items = [location_read(location) for location in rows]
        return LocationPage(items=items, next_cursor=next_cursor, limit=limit)
    if cursor is not None:
        raise InvalidInput("near= answers one page: no cursor", code="invalid_cursor")
    nearest = await service.nearest_locations(
        session,
        organization_id=organization_id,
        near=service.parse_near(near),
        within_m=within_m,
        limit=limit,
    )
    items = [location_read(location, distance) for location, distance in nearest]
    return LocationPage(items=items, next_cursor=None, limit=limit)


_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/geo+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _format_of(media_type: str, filename: str = "") -> service.ImportFormat | None:
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".geojson", ".json")):
        return "geojson"
    if media_type == "text/csv":
        return "csv"
    if media_type in ("application/geo+json", "application/json"):
        return "geojson"
    return None


@router.post(
    "/import",
    dependencies=[CAMPAIGNS_WRITE],
    response_model=LocationImportRead,
    openapi_extra=_IMPORT_BODY,
    responses=problem_responses("file_required", "unsupported_media_type", "payload_too_large"),
)
async def import_locations(
    request: Request, session: SessionDep, organization_id: OrganizationId
) -> LocationImportRead:
    """Create or update (on ``external_id``) many locations from a CSV (header
    ``name,external_id,lat,lon,radius_m,address,timezone``) or a GeoJSON
    FeatureCollection, sent as the body or as the multipart field ``file`` (UTF-8, or the
    ``charset`` its ``Content-Type`` declares, e.g. ``text/csv; charset=windows-1252``
    for a spreadsheet's export). Every row is
    checked first: any bad row answers 422 ``validation_error`` listing each problem
    (``row``, ``field``, ``code``, ``detail``) and nothing is written."""
    media_type, charset = parse_content_type(request.headers.get("content-type"))
    content: bytes | str
    if media_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None:
            raise InvalidInput("the multipart field `file` is missing", code="file_required")
        if isinstance(upload, str):
            # Sent as a text field (curl -F "file=<stores.csv"): no name nor type to say
            # the format, and a CSV header never starts with "{".
            content = upload
            fmt: service.ImportFormat | None = (
                "geojson" if upload.lstrip("\ufeff \t\r\n").startswith("{") else "csv"
            )
        else:
            content = await upload.read()
            part_type, charset = parse_content_type(upload.content_type)
            fmt = _format_of(part_type, upload.filename or "")
    else:
        content = await request.body()
        fmt = _format_of(media_type)
    if fmt is None:
        raise UnsupportedMediaType(
            "Send text/csv, application/geo+json or application/json (or a .csv, .geojson "
            "or .json file in the multipart field `file`)"
        )
    summary = await service.import_locations(
        session, organization_id=organization_id, content=content, fmt=fmt, encoding=charset
    )
    return LocationImportRead(created=summary.created, updated=summary.updated)


@router.get(
    "/{location_id}",
    dependencies=[CAMPAIGNS_READ],
    response_model=LocationRead,
    responses=problem_responses("location_not_found"),
)
async def get_location(
    location_id: int, session: SessionDep, organization_id: OrganizationId
) -> LocationRead:
    """One location (404 ``location_not_found``)."""
    location = await service.get_location(
        session, organization_id=organization_id, location_id=location_id
    )
    return location_read(location)


@router.patch(
    "/{location_id}",
    dependencies=[CAMPAIGNS_WRITE],
    response_model=LocationRead,
    responses=problem_responses("location_not_found", "location_external_id_taken", *_GEO),
)
async def update_location(
    location_id: int, data: LocationUpdate, session: SessionDep, organization_id: OrganizationId
) -> LocationRead:
    """Change the fields sent; the merged location is checked like a new one."""
    location = await service.update_location(
        session, organization_id=organization_id, location_id=location_id, data=data
    )
    return location_read(location)


@router.delete(
    "/{location_id}",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=204,
    responses=problem_responses("location_not_found", "location_in_use"),
)
async def delete_location(
    location_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    detach: bool = False,
) -> Response:
    """Delete a location: 409 ``location_in_use`` while tags are placed in it, unless
    ``?detach=true`` (those tags then lose ``location_id`` and keep ``placement``)."""
    await service.delete_location(
        session, organization_id=organization_id, location_id=location_id, detach=detach
    )
    return Response(status_code=204)
