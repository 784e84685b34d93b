"""``/v1/conversions``: the merchant reports outcomes carrying a click id (``POST``),
lists them (``GET``) and refunds them (``POST /v1/conversions/{id}/refunds``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from api.deps import CONVERSIONS_WRITE, REPORTS_READ, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from api.views import conversion_read, refund_read
from campaigns.schemas import (
    ConversionCreate,
    ConversionRead,
    Page,
    RefundCreate,
    RefundRead,
    Timestamp,
)
from campaigns.services import conversions as service
from campaigns.services.campaigns import MAX_ID, MAX_PAGE_SIZE

router = APIRouter(prefix="/v1/conversions", tags=["conversions"], route_class=JsonBodyRoute)


class ConversionPage(Page[ConversionRead]):
    """A page of conversions; ``limit`` echoes the page size asked for (default 50)."""

    limit: int = Field(description="The page size asked for (1 to 200)", examples=[50])


@router.post(
    "",
    dependencies=[CONVERSIONS_WRITE],
    status_code=201,
    response_model=ConversionRead,
    responses={
        200: {"model": ConversionRead, "description": "Replay: the stored conversion"},
        **problem_responses("conversion_conflict", "occurred_at_in_future"),
    },
)
async def create_conversion(
    data: ConversionCreate,
    response: Response,
    session: SessionDep,
    organization_id: OrganizationId,
) -> ConversionRead:
    """Record a conversion, credited last-touch to the scan of its ``click_id``.

    - **201**: stored. ``attributed`` is true when ``click_id`` is the click id of a scan
      of this organization; then ``scan_id``, ``campaign_id`` and ``tag_id`` are set.
      An unknown click id (or another organization's, or an internal scan's: staff
      testing a poster from a phone signed into the dashboard) is stored with
      ``attributed: false``.
    - **200**: the same ``external_id`` was already stored with the same body (click_id,
      event, value, occurred_at): the stored conversion, counted once. Safe to retry.
    - **409** ``conversion_conflict``: the ``external_id`` is stored with a different
      body; nothing changes.
    - **422** ``validation_error``: bad body (currency not ISO 4217, negative amount, time
      without timezone, missing field); ``occurred_at_in_future``: ``occurred_at`` more
      than 24 hours after the receive time. ``occurred_at`` defaults to the receive time.
    """
    result = await service.record_conversion(session, organization_id=organization_id, data=data)
    if not result.created:
        response.status_code = 200
    return conversion_read(result.conversion)


@router.get(
    "",
    dependencies=[REPORTS_READ],
    response_model=ConversionPage,
    responses=problem_responses("validation_error", "invalid_window", "invalid_cursor"),
)
async def list_conversions(
    session: SessionDep,
    organization_id: OrganizationId,
    campaign_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="Only conversions credited (last touch) to it"),
    ] = None,
    start: Annotated[
        Timestamp | None,
        Query(alias="from", description="Inclusive start of occurred_at, ISO 8601 with a zone"),
    ] = None,
    end: Annotated[
        Timestamp | None,
        Query(alias="to", description="Exclusive end of occurred_at, ISO 8601 with a zone"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ConversionPage:
    """The organization's conversions, newest first; follow ``next_cursor`` for more.
    ``campaign_id`` keeps those credited last-touch to that campaign (another
    organization's id matches nothing); ``from``/``to`` select by ``occurred_at``."""
    rows, next_cursor = await service.list_conversions(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
    )
    return ConversionPage(
        items=[conversion_read(c) for c in rows], next_cursor=next_cursor, limit=limit
    )


@router.post(
    "/{conversion_id}/refunds",
    dependencies=[CONVERSIONS_WRITE],
    status_code=201,
    response_model=RefundRead,
    responses={
        200: {"model": RefundRead, "description": "Replay: the stored refund"},
        **problem_responses(
            "conversion_not_found",
            "refund_conflict",
            "validation_error",
            "refund_exceeds_value",
            "refunded_at_in_future",
            "refunded_before_conversion",
        ),
    },
)
async def create_refund(
    conversion_id: int,
    data: RefundCreate,
    response: Response,
    session: SessionDep,
    organization_id: OrganizationId,
) -> RefundRead:
    """Refund ``amount_minor`` (in the conversion's currency) of a conversion.

    Revenue in reports drops by the refund from ``refunded_at`` on (default: now): the
    attribution report subtracts refunds dated in its window, split among the touches in
    the same shares as the conversion.

    - **201**: stored. **200**: the same ``external_id`` with the same body was already
      stored: the stored refund, counted once. Safe to retry.
    - **409** ``refund_conflict``: the ``external_id`` is stored with another body.
    - **422** ``refund_exceeds_value``: the refunds of the conversion would exceed its
      value, or it has none; ``refunded_at_in_future`` (more than 24 hours ahead);
      ``refunded_before_conversion``; ``validation_error`` (bad body).
    """
    result = await service.record_refund(
        session, organization_id=organization_id, conversion_id=conversion_id, data=data
    )
    if not result.created:
        response.status_code = 200
    return refund_read(result.refund, result.conversion)
