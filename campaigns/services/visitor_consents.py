"""The answers to the visitor-cookie question of the consent page
(``POST /s/{click_id}/consent``; :mod:`campaigns.scanning.cookies`).

A "yes" is stored in ``visitor_cookie_consents``: the scan's click id, its organization
and the visitor cookie then set. Scans stay append-only (the scan was stored, without a
cookie, before the page was shown); attribution reads the consent scan's cookie from
here (:mod:`campaigns.services.attribution`). A "no" stores nothing: the refusal lives in
the visitor's browser only (the refusal cookie).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import NotFound
from campaigns.models import VisitorCookieConsent


async def record_cookie_consent(
    session: AsyncSession, *, click_id: str, organization_id: int, cookie_id: uuid.UUID
) -> uuid.UUID:
    """Store the "yes" of the scan ``click_id`` (of ``organization_id``) with the visitor
    id ``cookie_id``; returns the visitor id to set: ``cookie_id``, or the one stored by
    an earlier answer for the same scan (a form sent twice keeps one id). Raises
    :class:`NotFound` ``click_not_found`` when the organization no longer exists."""
    statement = (
        insert(VisitorCookieConsent)
        .values(click_id=click_id, organization_id=organization_id, cookie_id=cookie_id)
        .on_conflict_do_nothing(index_elements=["click_id"])
        .returning(VisitorCookieConsent.cookie_id)
    )
    try:
        async with session.begin_nested():
            stored = (await session.execute(statement)).scalar_one_or_none()
    except IntegrityError as exc:  # the organization was deleted since the scan
        raise NotFound("No scan has this click id", code="click_not_found") from exc
    if stored is not None:
        return stored
    earlier = await session.scalar(
        select(VisitorCookieConsent.cookie_id).where(VisitorCookieConsent.click_id == click_id)
    )
    assert earlier is not None
    return earlier
