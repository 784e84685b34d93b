"""``/v1/organization``: the calling key's organization and its settings."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ADMIN, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.schemas import (
    NoncompliantDestination,
    OrganizationRead,
    OrganizationUpdate,
    OrganizationUpdated,
)
from campaigns.services import destinations
from campaigns.services import organizations as service

router = APIRouter(
    dependencies=[ADMIN],
    prefix="/v1/organization",
    tags=["organization"],
    route_class=JsonBodyRoute,
)


@router.get("", response_model=OrganizationRead)
async def get_organization(
    session: SessionDep, organization_id: OrganizationId
) -> OrganizationRead:
    """The organization of the API key, with its settings as flat fields."""
    organization = await service.get_organization(session, organization_id=organization_id)
    return OrganizationRead.model_validate(organization)


@router.patch(
    "",
    response_model=OrganizationUpdated,
    responses=problem_responses("validation_error", "invalid_retention"),
)
async def update_organization(
    data: OrganizationUpdate, session: SessionDep, organization_id: OrganizationId
) -> OrganizationUpdated:
    """Change the settings sent (unknown fields and nulls are 422 ``validation_error``).

    - ``visitor_cookie`` (boolean, default false): let scans set a first-party visitor
      cookie that links a visitor's scans across days in attribution journeys. In the EU
      this cookie needs the visitor's consent.
    - ``visitor_cookie_consent``: ``organization`` (default; your consent management
      covers the cookie) or ``ask`` (the visitor is asked before it is set).
    - ``scan_retention_days`` (1 to 3650, default 395: 13 months): scans older are
      deleted by the daily purge.
    - ``precise_location_retention_days`` (1 to 3650, default 30, at most
      ``scan_retention_days``: else 422 ``invalid_retention``): consented GPS positions
      older are reduced to the scan's matched store and city.
    - ``allowed_destination_hosts``: hosts destination URLs may point at (exact, or
      ``*.example.com`` for subdomains; null or empty: unrestricted). Later writes of
      campaigns, tags and rules outside them are 422 ``destination_not_allowed``; URLs
      already stored outside them are listed in ``noncompliant_destinations``.
    """
    organization = await service.update_organization(
        session, organization_id=organization_id, data=data
    )
    noncompliant = []
    if "allowed_destination_hosts" in data.model_fields_set:
        noncompliant = await destinations.noncompliant_destinations(
            session,
            organization_id=organization_id,
            patterns=organization.allowed_destination_hosts or [],
        )
    read = OrganizationRead.model_validate(organization)
    return OrganizationUpdated(
        **read.model_dump(),
        noncompliant_destinations=[
            NoncompliantDestination.model_validate(item, from_attributes=True)
            for item in noncompliant
        ],
    )
