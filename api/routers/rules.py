"""Redirect rules: ``POST/GET /v1/campaigns/{id}/rules``, ``PATCH/DELETE /v1/rules/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CAMPAIGNS_READ, CAMPAIGNS_WRITE, OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.schemas import RuleCreate, RuleList, RuleRead, RuleUpdate
from campaigns.services import rules as service

router = APIRouter(tags=["rules"], route_class=JsonBodyRoute)


@router.post(
    "/v1/campaigns/{campaign_id}/rules",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=201,
    response_model=RuleRead,
    responses=problem_responses(
        "campaign_not_found", "location_not_found", "redirect_loop", "destination_not_allowed"
    ),
)
async def create_rule(
    campaign_id: int,
    body: RuleCreate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> RuleRead:
    """Add a redirect rule: scans meeting every condition (countries, matched stores, OS,
    device types, languages) go to `destination_url`, or to a variant of the weighted
    `split` (sticky per visitor and day; the variant is stored on the scan). The lowest
    matching `priority` wins; every server process applies it within a second."""
    rule = await service.create_rule(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        data=body,
        short_link_origin=settings.short_link_origin,
    )
    return RuleRead.model_validate(rule)


@router.get(
    "/v1/campaigns/{campaign_id}/rules",
    dependencies=[CAMPAIGNS_READ],
    response_model=RuleList,
    responses=problem_responses("campaign_not_found"),
)
async def list_rules(
    campaign_id: int, session: SessionDep, organization_id: OrganizationId
) -> RuleList:
    """The campaign's rules in evaluation order (lowest priority number first)."""
    rules = await service.list_rules(
        session, organization_id=organization_id, campaign_id=campaign_id
    )
    return RuleList(items=[RuleRead.model_validate(rule) for rule in rules])


@router.patch(
    "/v1/rules/{rule_id}",
    dependencies=[CAMPAIGNS_WRITE],
    response_model=RuleRead,
    responses=problem_responses(
        "rule_not_found", "location_not_found", "redirect_loop", "destination_not_allowed"
    ),
)
async def update_rule(
    rule_id: int,
    body: RuleUpdate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> RuleRead:
    """Change a rule's priority, conditions or target (only the fields sent)."""
    rule = await service.update_rule(
        session,
        organization_id=organization_id,
        rule_id=rule_id,
        data=body,
        short_link_origin=settings.short_link_origin,
    )
    return RuleRead.model_validate(rule)


@router.delete(
    "/v1/rules/{rule_id}",
    dependencies=[CAMPAIGNS_WRITE],
    status_code=204,
    response_class=Response,
    responses=problem_responses("rule_not_found"),
)
async def delete_rule(
    rule_id: int, session: SessionDep, organization_id: OrganizationId
) -> Response:
    """Delete a rule; scans go back to the campaign's (or tag's) destination."""
    await service.delete_rule(session, organization_id=organization_id, rule_id=rule_id)
    return Response(status_code=204)
