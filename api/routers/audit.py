"""``GET /v1/audit``: the organization's audit trail of management writes (``admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ADMIN, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.schemas import AuditEventRead, AuditPage, Timestamp
from campaigns.services import audit as service

router = APIRouter(
    prefix="/v1/audit", tags=["audit"], dependencies=[ADMIN], route_class=CheckedRoute
)


@router.get(
    "",
    response_model=AuditPage,
    responses=problem_responses("invalid_cursor", "invalid_window"),
)
async def list_audit(
    session: SessionDep,
    organization_id: OrganizationId,
    action: Annotated[
        str | None,
        Query(max_length=100, description="Only this operation, e.g. `campaigns_update`"),
    ] = None,
    start: Annotated[
        Timestamp | None,
        Query(alias="from", description="Inclusive start, ISO 8601 with a zone"),
    ] = None,
    end: Annotated[
        Timestamp | None, Query(alias="to", description="Exclusive end, ISO 8601 with a zone")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """Management writes (keys, settings, campaigns, tags, locations, rules), newest
    first: who (key or user), when, which operation, on what, how many rows. Follow
    `next_cursor` for the next page."""
    events, next_cursor = await service.list_events(
        session,
        organization_id=organization_id,
        limit=limit,
        cursor=cursor,
        action=action,
        since=start,
        until=end,
    )
    return AuditPage(
        items=[AuditEventRead.model_validate(event) for event in events], next_cursor=next_cursor
    )
