"""``/v1/campaigns``: create, list, read, update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from api.deps import CAMPAIGNS_READ, CAMPAIGNS_WRITE, OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from api.views import campaign_read
from campaigns.schemas import CampaignCreate, CampaignRead, CampaignUpdate, Page
from campaigns.services import campaigns as service

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], route_class=JsonBodyRoute)


class CampaignPage(Page[CampaignRead]):
    """A page of campaigns; ``limit`` echoes the page size asked for (default 50)."""

    limit: int = Field(description="The page size asked for (1 to 200)", examples=[50])


@router.post(
    "",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=201,
    response_model=CampaignRead,
    responses=problem_responses("slug_taken", "redirect_loop", "destination_not_allowed"),
)
async def create_campaign(
    data: CampaignCreate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> CampaignRead:
    """Create a campaign (409 ``slug_taken`` when the slug is used; 422 ``redirect_loop``
    when a URL points at this service's short links)."""
    campaign = await service.create_campaign(
        session,
        organization_id=organization_id,
        data=data,
        short_link_origin=settings.short_link_origin,
    )
    return campaign_read(campaign)


@router.get(
    "",
    dependencies=[CAMPAIGNS_READ],
    response_model=CampaignPage,
    responses=problem_responses("invalid_cursor"),
)
async def list_campaigns(
    session: SessionDep,
    organization_id: OrganizationId,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    archived: bool | None = None,
) -> CampaignPage:
    """Newest first; follow ``next_cursor`` for the next page (422 ``invalid_cursor``)."""
    rows, next_cursor = await service.list_campaigns(
        session, organization_id=organization_id, limit=limit, cursor=cursor, archived=archived
    )
    return CampaignPage(
        items=[campaign_read(c) for c in rows], next_cursor=next_cursor, limit=limit
    )


@router.get(
    "/{campaign_id}",
    dependencies=[CAMPAIGNS_READ],
    response_model=CampaignRead,
    responses=problem_responses("campaign_not_found"),
)
async def get_campaign(
    campaign_id: int, session: SessionDep, organization_id: OrganizationId
) -> CampaignRead:
    """One campaign (404 ``campaign_not_found``)."""
    campaign = await service.get_campaign(
        session, organization_id=organization_id, campaign_id=campaign_id
    )
    return campaign_read(campaign)


@router.patch(
    "/{campaign_id}",
    dependencies=[CAMPAIGNS_WRITE],
    response_model=CampaignRead,
    responses=problem_responses(
        "campaign_not_found",
        "slug_taken",
        "invalid_schedule",
        "destination_required",
        "name_required",
        "slug_required",
        "archived_required",
        "redirect_loop",
        "destination_not_allowed",
    ),
)
async def update_campaign(
    campaign_id: int,
    data: CampaignUpdate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> CampaignRead:
    """Change the fields sent; tags follow within a second on every server."""
    campaign = await service.update_campaign(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        data=data,
        short_link_origin=settings.short_link_origin,
    )
    return campaign_read(campaign)


@router.delete(
    "/{campaign_id}",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=204,
    responses=problem_responses("campaign_not_found"),
)
async def delete_campaign(
    campaign_id: int, session: SessionDep, organization_id: OrganizationId
) -> Response:
    """Delete a campaign: its tags stop resolving; its scans stay for reports."""
    await service.delete_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    return Response(status_code=204)
