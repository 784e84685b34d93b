"""``/v1/privacy/scans``: access and erasure requests about the person behind scans
(:mod:`campaigns.services.privacy`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ADMIN, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import CheckedRoute
from api.views import conversion_read
from campaigns.schemas import PrivacyErasure, PrivacyRecord
from campaigns.services import privacy as service

router = APIRouter(
    prefix="/v1/privacy", tags=["privacy"], dependencies=[ADMIN], route_class=CheckedRoute
)

_ClickId = Annotated[
    str | None, Query(description="The click id (`pcid`) the person's redirect carried")
]
_Visitor = Annotated[str | None, Query(description="The person's visitor cookie id (a UUID)")]
_ERRORS = problem_responses("privacy_subject_not_found", "invalid_privacy_query")


@router.get("/scans", response_model=PrivacyRecord, responses=_ERRORS)
async def get_privacy_scans(
    session: SessionDep,
    organization_id: OrganizationId,
    click_id: _ClickId = None,
    visitor: _Visitor = None,
) -> PrivacyRecord:
    """Access request: everything held about the person named by exactly one of
    ``click_id`` and ``visitor``: their scans (every column; the address only truncated),
    the consented GPS positions of those scans, the conversions linked to them, and rows
    of other tables keyed by their click ids. 404 ``privacy_subject_not_found`` when
    nothing is held (or only by another organization); 422 ``invalid_privacy_query``
    for neither or both parameters, or a visitor id that is not a UUID."""
    held = await service.access(
        session, organization_id=organization_id, click_id=click_id, visitor=visitor
    )
    return PrivacyRecord(
        click_id=held.click_id,
        visitor=held.visitor,
        scans=held.scans,
        positions=held.positions,
        conversions=[conversion_read(c) for c in held.conversions],
        other=held.other,
    )


@router.delete("/scans", response_model=PrivacyErasure, responses=_ERRORS)
async def erase_privacy_scans(
    session: SessionDep,
    organization_id: OrganizationId,
    click_id: _ClickId = None,
    visitor: _Visitor = None,
) -> PrivacyErasure:
    """Erasure request, in one transaction: the person's scans are deleted with their
    GPS positions (and rows of other tables keyed by their click ids); their conversions
    are kept but unlinked (`click_id` null, `attributed: false`). Returns rows per
    table. Same parameters and errors as the GET."""
    return await service.erase(
        session, organization_id=organization_id, click_id=click_id, visitor=visitor
    )
