"""``POST /v1/conversions``: the merchant reports an outcome carrying a click id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from api.views import conversion_read
from campaigns.schemas import ConversionCreate, ConversionRead
from campaigns.services import conversions as service

router = APIRouter(prefix="/v1/conversions", tags=["conversions"], route_class=JsonBodyRoute)


@router.post(
    "",
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
      An unknown click id (or another organization's) is stored with ``attributed:
      false``.
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
