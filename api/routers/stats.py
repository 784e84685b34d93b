"""``GET /v1/campaigns/{id}/stats``: a campaign's figures over a time window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import OrganizationId, SessionDep
from api.errors import problem_responses
from campaigns.schemas import CampaignStats, Timestamp
from campaigns.services import stats as service

router = APIRouter(prefix="/v1/campaigns", tags=["stats"])


@router.get(
    "/{campaign_id}/stats",
    response_model=CampaignStats,
    responses=problem_responses("campaign_not_found", "invalid_window"),
)
async def get_stats(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    start: Annotated[
        Timestamp | None,
        Query(alias="from", description="Inclusive start, ISO 8601 with a timezone"),
    ] = None,
    end: Annotated[
        Timestamp | None,
        Query(alias="to", description="Exclusive end, ISO 8601 with a timezone"),
    ] = None,
) -> CampaignStats:
    """Scans, visitors, conversions and revenue of a campaign over ``[from, to)``, in
    total and for every tag (tags without scans included). Both bounds are optional;
    ``to`` must be after ``from`` (422 ``invalid_window``); URL-encode ``+`` in offsets
    or use ``Z``.

    - ``scans``: human scans (bots, link previewers and ``HEAD`` requests are in
      ``bot_scans``), placed by scan time.
    - ``unique_visitors``: distinct visitor ids among human scans. Visitor ids are salted
      per UTC day (they cannot be linked across days), so over several days this is the
      sum of daily unique visitors, not distinct people.
    - ``conversions``: conversions attributed (last touch on their click id) to this
      campaign, placed by ``occurred_at``; ``revenue``: their values summed per currency.
    - ``conversion_rate``: ``conversions / scans``, 0.0 when there are no scans; it can
      exceed 1 (several conversions per click, or conversions of earlier scans).
    """
    return await service.campaign_stats(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        start=start,
        end=end,
    )
