"""``GET /v1/campaigns/{id}/stats`` and ``stats.csv``: a campaign's figures over a time
window, with an optional time series, ROAS and breakdowns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import (
    REPORTS_READ,
    OrganizationId,
    ReleasedOrganizationId,
    SessionDep,
    SessionFactory,
)
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns import csv_reports
from campaigns.attribution import Model
from campaigns.db import unit_of_work
from campaigns.schemas import CampaignStats, Interval, Timestamp, Timezone
from campaigns.services import stats as service

router = APIRouter(
    dependencies=[REPORTS_READ], prefix="/v1/campaigns", tags=["stats"], route_class=CheckedRoute
)

Start = Annotated[
    Timestamp | None, Query(alias="from", description="Inclusive start, ISO 8601 with a timezone")
]
End = Annotated[
    Timestamp | None, Query(alias="to", description="Exclusive end, ISO 8601 with a timezone")
]
IntervalQuery = Annotated[
    Interval | None,
    Query(description="Add a `series` of hour, day or week (ISO, from Monday) buckets"),
]
TzQuery = Annotated[
    Timezone | None,
    Query(description="IANA time zone of the series buckets; default the campaign's"),
]
ModelQuery = Annotated[Model, Query(description="Attribution model of the revenue in `roas`")]
_ERRORS = problem_responses(
    "campaign_not_found",
    "validation_error",
    "invalid_window",
    "invalid_timezone",
    "too_many_buckets",
)


@router.get("/{campaign_id}/stats", response_model=CampaignStats, responses=_ERRORS)
async def get_stats(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    start: Start = None,
    end: End = None,
    interval: IntervalQuery = None,
    tz: TzQuery = None,
    model: ModelQuery = "last_touch",
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
      campaign, placed by ``occurred_at``; ``revenue``: their values summed per currency,
      less refunds dated in the window (from their own time on; it can be negative).
    - ``conversion_rate``: ``conversions / scans``, 0.0 when there are no scans; it can
      exceed 1 (several conversions per click, or conversions of earlier scans).
    - ``series`` (with ``interval=hour|day|week``): the same figures per bucket of the
      time zone ``tz`` (IANA, default the campaign's; 422 ``invalid_timezone``): local
      hours, local days (23 or 25 hours on daylight saving changes) or ISO weeks from
      Monday, empty buckets included, from the bucket of ``from`` (else the first scan
      or conversion) to the bucket of ``to`` (else now); at most 10,000 buckets (422
      ``too_many_buckets``).
    - ``cost`` and ``roas``: the campaign's cost, and the revenue credited by ``model``
      (as in ``/attribution`` for the same window) in the cost's currency divided by it;
      null without a cost or with a zero cost.
    - ``breakdowns``: human scans and the conversions credited (last touch) to them per
      ``channel``, ``device_type``, ``os`` and ``country``.
    """
    return await service.campaign_stats(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        start=start,
        end=end,
        interval=interval,
        tz=tz,
        model=model,
    )


def csv_response(body: Any, filename: str) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type=csv_reports.MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report as CSV (streamed), see the column layout above.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/{campaign_id}/stats.csv",
    response_class=StreamingResponse,
    responses={**CSV_RESPONSE, **_ERRORS},
)
async def get_stats_csv(
    campaign_id: int,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    start: Start = None,
    end: End = None,
    interval: IntervalQuery = None,
    tz: TzQuery = None,
    model: ModelQuery = "last_touch",
) -> StreamingResponse:
    """The figures of ``GET /stats`` (same parameters, same errors, answered before the
    stream starts) for spreadsheets, ``text/csv`` in UTF-8.

    - With ``interval``: one row per series bucket, columns ``start, scans,
      unique_visitors, conversions, revenue_minor_<CUR>...`` (one money column per
      currency, minor units), streamed from the database bucket by bucket.
    - Without: one row per tag, then a total row: ``row`` (``tag`` or ``total``),
      ``tag_id, code, label, scans, bot_scans, burst_scans, replayed_taps, invalid_taps,
      unique_visitors, conversions, conversion_rate, revenue_minor_<CUR>...,
      cost_minor, cost_currency, roas`` (cost and ROAS on the total row).

    Text cells starting with ``= + - @`` get a leading apostrophe (formula injection).
    """
    filename = f"campaign-{campaign_id}-stats.csv"
    if interval is None:
        async with unit_of_work(sessions) as session:
            stats = await service.campaign_stats(
                session,
                organization_id=organization_id,
                campaign_id=campaign_id,
                start=start,
                end=end,
                model=model,
            )
        return csv_response(csv_reports.stats_csv(stats), filename)
    async with unit_of_work(sessions) as session:
        plan = await service.plan_series(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            start=start,
            end=end,
            interval=interval,
            tz=tz,
        )

    async def body() -> AsyncIterator[bytes]:
        async with unit_of_work(sessions) as stream_session:
            points = service.series_points(stream_session, plan)
            async for line in csv_reports.series_csv(points, plan.currencies):
                yield line

    return csv_response(body(), filename)
