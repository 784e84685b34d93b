"""Tags: ``POST/GET /v1/campaigns/{id}/tags``, ``POST /v1/campaigns/{id}/tags/bulk``,
``GET/PATCH /v1/tags/{id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from api.deps import CAMPAIGNS_READ, CAMPAIGNS_WRITE, OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from api.views import tag_created, tag_read
from campaigns.schemas import (
    Page,
    TagBulkCreate,
    TagBulkRead,
    TagCreate,
    TagCreated,
    TagRead,
    TagUpdate,
)
from campaigns.services import tags as service
from campaigns.services.campaigns import MAX_PAGE_SIZE

router = APIRouter(tags=["tags"], route_class=JsonBodyRoute)


class TagPage(Page[TagRead]):
    """A page of tags; ``limit`` echoes the page size asked for (default 50)."""

    limit: int = Field(description="The page size asked for (1 to 200)", examples=[50])


@router.post(
    "/v1/campaigns/{campaign_id}/tags",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=201,
    response_model=TagCreated,
    responses=problem_responses(
        "campaign_not_found",
        "location_not_found",
        "redirect_loop",
        "destination_not_allowed",
        "invalid_coordinates",
        "invalid_geojson",
        "nfc_uid_taken",
        "tag_label_taken",
    ),
)
async def create_tag(
    campaign_id: int,
    data: TagCreate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> TagCreated:
    """Create a tag with a fresh random code; scannable at once on this server and within
    a second on every other. Kind ``nfc_sun`` (NTAG 424 DNA) needs ``nfc.uid``; its SDM
    keys (supplied or derived) are in this answer only (409 ``nfc_uid_taken``)."""
    tag = await service.create_tag(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        data=data,
        short_link_origin=settings.short_link_origin,
        secret_key=settings.keyring,
    )
    keys = service.tag_sun_keys(tag, secret_key=settings.keyring) if tag.kind == "nfc_sun" else None
    return tag_created(tag, settings.short_link_origin, keys)


@router.post(
    "/v1/campaigns/{campaign_id}/tags/bulk",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=201,
    response_model=TagBulkRead,
    responses={
        200: {"description": "Every tag already existed: nothing created", "model": TagBulkRead},
        **problem_responses(
            "campaign_not_found",
            "location_not_found",
            "labels_mismatch",
            "no_locations",
            "too_many_tags",
        ),
    },
)
async def create_tags_bulk(
    campaign_id: int,
    data: TagBulkCreate,
    response: Response,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> TagBulkRead:
    """One tag per location and label, placed at the location's point, all in one
    transaction (all or nothing). Idempotent on (campaign, location, label): a repeated
    call creates nothing and answers 200 with the same tags; 201 when it created some.
    The tags scan at once on this server and within a second on every other."""
    result = await service.create_tags_bulk(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        kind=data.kind,
        location_ids=data.location_ids,
        per_location=data.per_location,
        labels=data.labels,
    )
    if not result.created:
        response.status_code = 200
    origin = settings.short_link_origin
    return TagBulkRead(
        created=result.created,
        existing=len(result.tags) - result.created,
        tags=[tag_read(tag, origin) for tag in result.tags],
    )


@router.get(
    "/v1/campaigns/{campaign_id}/tags",
    dependencies=[CAMPAIGNS_READ],
    response_model=TagPage,
    responses=problem_responses("campaign_not_found", "invalid_cursor"),
)
async def list_tags(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TagPage:
    """A campaign's tags, newest first."""
    rows, next_cursor = await service.list_tags(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        limit=limit,
        cursor=cursor,
    )
    origin = settings.short_link_origin
    return TagPage(items=[tag_read(t, origin) for t in rows], next_cursor=next_cursor, limit=limit)


@router.get(
    "/v1/tags/{tag_id}",
    dependencies=[CAMPAIGNS_READ],
    response_model=TagRead,
    responses=problem_responses("tag_not_found"),
)
async def get_tag(
    tag_id: int, session: SessionDep, organization_id: OrganizationId, settings: SettingsDep
) -> TagRead:
    """One tag (404 ``tag_not_found``)."""
    tag = await service.get_tag(session, organization_id=organization_id, tag_id=tag_id)
    return tag_read(tag, settings.short_link_origin)


@router.patch(
    "/v1/tags/{tag_id}",
    dependencies=[CAMPAIGNS_WRITE],
    response_model=TagRead,
    responses=problem_responses(
        "tag_not_found",
        "location_not_found",
        "status_required",
        "redirect_loop",
        "destination_not_allowed",
        "invalid_coordinates",
        "invalid_geojson",
        "tag_label_taken",
    ),
)
async def update_tag(
    tag_id: int,
    data: TagUpdate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> TagRead:
    """Relabel, re-point, disable (scans then get 404) or re-enable a tag."""
    tag = await service.update_tag(
        session,
        organization_id=organization_id,
        tag_id=tag_id,
        data=data,
        short_link_origin=settings.short_link_origin,
    )
    return tag_read(tag, settings.short_link_origin)
