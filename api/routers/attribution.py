"""``GET /v1/campaigns/{id}/attribution``: multi-touch attribution of a campaign."""

from __future__ import annotations

from typing import Annotated

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
from api.routers.stats import CSV_RESPONSE, csv_response
from api.routing import JsonBodyRoute
from campaigns import csv_reports
from campaigns.attribution import Model
from campaigns.db import unit_of_work
from campaigns.schemas import AttributionReport, Timestamp
from campaigns.services import attribution as service

router = APIRouter(
    dependencies=[REPORTS_READ],
    prefix="/v1/campaigns",
    tags=["attribution"],
    route_class=JsonBodyRoute,
)


ModelQuery = Annotated[Model, Query(description="Attribution model")]
LookbackQuery = Annotated[
    int,
    Query(
        ge=service.MIN_LOOKBACK_DAYS,
        le=service.MAX_LOOKBACK_DAYS,
        description="How far before a conversion its journey reaches, in days",
    ),
]
HalfLifeQuery = Annotated[
    float,
    Query(
        ge=service.MIN_HALF_LIFE_DAYS,
        le=service.MAX_HALF_LIFE_DAYS,
        description="time_decay: a touch this many days older gets half the credit "
        "(one second, 1/86400, to 365 days)",
    ),
]
GroupByQuery = Annotated[service.GroupBy, Query(description="Rows per tag, location or day")]
Start = Annotated[
    Timestamp | None,
    Query(alias="from", description="Inclusive start of occurred_at, ISO 8601 with a zone"),
]
End = Annotated[
    Timestamp | None,
    Query(alias="to", description="Exclusive end of occurred_at, ISO 8601 with a zone"),
]
_ERRORS = problem_responses("campaign_not_found", "validation_error", "invalid_window")


@router.get(
    "/{campaign_id}/attribution",
    response_model=AttributionReport,
    responses=_ERRORS,
)
async def get_attribution(
    campaign_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    model: ModelQuery = "last_touch",
    lookback_days: LookbackQuery = service.DEFAULT_LOOKBACK_DAYS,
    half_life_days: HalfLifeQuery = service.DEFAULT_HALF_LIFE_DAYS,
    group_by: GroupByQuery = "tag",
    start: Start = None,
    end: End = None,
) -> AttributionReport:
    """Credit for the organization's conversions with ``occurred_at`` in ``[from, to)``
    earned by this campaign's scans, under one attribution model.

    A conversion's **journey** is the scan of its click id, preceded by the same
    visitor's human scans (no bots, no flagged NFC taps) in any of the organization's
    campaigns within ``lookback_days`` before the conversion. The same visitor is the
    click scan's visitor cookie when it has one, else its daily visitor id that same UTC
    day. The click's own scan always counts, even as a bot or beyond the lookback.

    Models: ``last_touch`` (all to the click's scan), ``first_touch`` (all to the
    journey's first scan), ``linear`` (equal shares), ``time_decay`` (a scan
    ``half_life_days`` older than another gets half its credit), ``position_based``
    (40 % first, 40 % last, 20 % shared by the scans between).

    - ``rows``: one per ``tag_id``, ``location_id`` (the tag's) or ``day`` (the scan's
      date in the campaign's ``timezone``) with ``conversions`` (fractional credit) and
      ``revenue`` (the conversions' values split in the same shares, in minor units per
      currency, less refunds dated in the window, split the same way).
    - ``totals``: the sum of the rows. Credit earned by other campaigns' scans of the
      same journeys is not shown here.
    - ``unattributed``: the organization's conversions in the window whose click id
      names no scan, with their revenue.
    """
    return await service.attribution_report(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        model=model,
        lookback_days=lookback_days,
        half_life_days=half_life_days,
        group_by=group_by,
        start=start,
        end=end,
    )


@router.get(
    "/{campaign_id}/attribution.csv",
    response_class=StreamingResponse,
    responses={**CSV_RESPONSE, **_ERRORS},
)
async def get_attribution_csv(
    campaign_id: int,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    model: ModelQuery = "last_touch",
    lookback_days: LookbackQuery = service.DEFAULT_LOOKBACK_DAYS,
    half_life_days: HalfLifeQuery = service.DEFAULT_HALF_LIFE_DAYS,
    group_by: GroupByQuery = "tag",
    start: Start = None,
    end: End = None,
) -> StreamingResponse:
    """The report of ``GET /attribution`` (same parameters, same errors) for
    spreadsheets, ``text/csv`` in UTF-8: one row per group key, columns
    ``<tag_id|location_id|day>, conversions, revenue_minor_<CUR>...`` (fractional
    credit; one money column per currency, minor units, after refunds), then a
    ``total`` row and an ``unattributed`` row."""
    async with unit_of_work(sessions) as session:
        report = await service.attribution_report(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            model=model,
            lookback_days=lookback_days,
            half_life_days=half_life_days,
            group_by=group_by,
            start=start,
            end=end,
        )
    return csv_response(
        csv_reports.attribution_csv(report), f"campaign-{campaign_id}-attribution.csv"
    )
