"""Access and erasure requests (GDPR art. 15 and 17) about the person behind scans.

A person is named by one ``click_id`` (the ``pcid`` their redirect carried) or one
``visitor`` (the visitor cookie id, linking their scans across days). What is held
about them: their scans (every column), the consented GPS fixes of those scans, the
conversions linked to them (by click id or credited scan), and the rows of every
registered holder (:mod:`campaigns.personal_data`).

Erasure, in the caller's one transaction: the scans are deleted, every holder's rows
are erased, and the conversions are kept but unlinked: ``click_id``, ``scan_id``,
``campaign_id`` and ``tag_id`` become null (``attributed: false``), so the merchant's
sales stay while nothing ties them to the person any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from campaigns.db import note_written_rows
from campaigns.errors import InvalidInput, NotFound
from campaigns.models import Conversion, Scan, VisitorCookieConsent
from campaigns.personal_data import HOLDERS
from campaigns.schemas import PrivacyErasure, PrivacyPosition, PrivacyScan

#: Longest click id looked up (``scans.click_id`` is 32, ``conversions.click_id`` 64).
MAX_CLICK_ID = 64

_SCAN_COLUMNS = [c for c in Scan.__table__.columns if c.name != "position"]


def _subject(click_id: str | None, visitor: str | None) -> tuple[str | None, uuid.UUID | None]:
    """Validate the query: exactly one of the two. Raises :class:`InvalidInput`
    (``invalid_privacy_query``)."""
    if (click_id is None) == (visitor is None):
        raise InvalidInput(
            "Give exactly one of `click_id` and `visitor`", code="invalid_privacy_query"
        )
    if click_id is not None:
        if not 1 <= len(click_id) <= MAX_CLICK_ID:
            raise InvalidInput("`click_id` is 1 to 64 characters", code="invalid_privacy_query")
        return click_id, None
    try:
        return None, uuid.UUID(str(visitor))
    except ValueError:
        raise InvalidInput(
            "`visitor` is a visitor cookie id (a UUID)", code="invalid_privacy_query"
        ) from None


def _whose(
    organization_id: int, click_id: str | None, cookie: uuid.UUID | None
) -> ColumnElement[bool]:
    """The subject's scans: by click id, or by visitor cookie id, which a scan carries
    itself or (the scan that showed the consent page) through its consent row."""
    if click_id is not None:
        return Scan.click_id == click_id
    consented = select(VisitorCookieConsent.click_id).where(
        VisitorCookieConsent.organization_id == organization_id,
        VisitorCookieConsent.cookie_id == cookie,
    )
    return or_(Scan.cookie_id == cookie, Scan.click_id.in_(consented))


def _not_found() -> NotFound:
    return NotFound("Nothing is held about this person", code="privacy_subject_not_found")


async def _scans(
    conn: AsyncConnection, organization_id: int, click_id: str | None, cookie: uuid.UUID | None
) -> list[dict[str, Any]]:
    where = _whose(organization_id, click_id, cookie)
    query = (
        select(
            *_SCAN_COLUMNS,
            text("ST_X(scans.position::geometry) AS position_x"),
            text("ST_Y(scans.position::geometry) AS position_y"),
        )
        .where(Scan.organization_id == organization_id, where)
        .order_by(Scan.scanned_at, Scan.id)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


def _conversion_filter(
    organization_id: int, click_ids: Sequence[str], scan_ids: Sequence[int]
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (
        Conversion.organization_id == organization_id,
        or_(Conversion.click_id.in_(click_ids), Conversion.scan_id.in_(scan_ids)),
    )


@dataclass(frozen=True, slots=True)
class Held:
    """What :func:`access` found: the subject as asked, scans, GPS fixes, the linked
    conversions (ORM rows; the API renders them as ``ConversionRead``), and other
    holders' rows per table."""

    click_id: str | None
    visitor: str | None
    scans: list[PrivacyScan]
    positions: list[PrivacyPosition]
    conversions: list[Conversion]
    other: dict[str, list[dict[str, Any]]]


async def access(
    session: AsyncSession, *, organization_id: int, click_id: str | None, visitor: str | None
) -> Held:
    """Everything the organization holds about the person (module docstring). Raises
    :class:`InvalidInput` (``invalid_privacy_query``: neither or both, a bad visitor
    id) and :class:`NotFound` (``privacy_subject_not_found``: nothing held, or only
    another organization's)."""
    click, cookie = _subject(click_id, visitor)
    conn = await session.connection()
    scans = await _scans(conn, organization_id, click, cookie)
    click_ids = sorted({s["click_id"] for s in scans} | ({click} if click else set()))
    scan_ids = [s["id"] for s in scans]
    conversions = list(
        await session.scalars(
            select(Conversion)
            .where(*_conversion_filter(organization_id, click_ids, scan_ids))
            .order_by(Conversion.id)
        )
    )
    if not scans and not conversions:
        raise _not_found()
    positions: list[dict[str, Any]] = []
    other: dict[str, list[dict[str, Any]]] = {}
    for holder in HOLDERS.values():
        if holder.collect is None:
            continue
        rows = await holder.collect(conn, organization_id, click_ids)
        if holder.name == "scan_locations":
            positions = rows
        else:
            other[holder.name] = rows
    return Held(
        click_id=click,
        visitor=str(cookie) if cookie else None,
        scans=[_privacy_scan(s) for s in scans],
        positions=[PrivacyPosition(**p) for p in positions],
        conversions=conversions,
        other=other,
    )


def _privacy_scan(row: dict[str, Any]) -> PrivacyScan:
    x, y = row.pop("position_x"), row.pop("position_y")
    for name in ("position_lat", "position_lon"):
        row.pop(name)
    visitor_id, cookie_id, ip = row.pop("visitor_id"), row.pop("cookie_id"), row.pop("ip_truncated")
    return PrivacyScan(
        **row,
        position=[x, y] if x is not None else None,
        visitor_id=visitor_id.hex() if visitor_id is not None else None,
        cookie_id=str(cookie_id) if cookie_id is not None else None,
        ip_truncated=str(ip) if ip is not None else None,
    )


async def audit_erasure(
    session: AsyncSession, *, organization_id: int, erasure: PrivacyErasure
) -> None:
    """Note the erasure's rows for the audit trail (recorded by the unit of work at
    commit, with the calling key or user: :func:`campaigns.services.audit.record_changes`),
    one event per table with its count; never the click id or visitor id erased."""
    del organization_id
    for table, rows in erasure.counts.items():
        if rows:
            note_written_rows(session, table, count=rows)


async def adjust_rollups_for_erasure(
    conn: AsyncConnection,
    *,
    organization_id: int,
    scan_ids: Sequence[int],
    click_ids: Sequence[str] = (),
) -> int:
    """Take an erasure out of the report rollups: in its transaction, before the scans
    are deleted and the conversions unlinked (both still readable here), mark dirty the
    (campaign, UTC day) of each scan and of each conversion (``occurred_at``) linked to
    them or to ``click_ids``, so the rollup worker's next pass recomputes those days
    without them. Returns the marks written. A frozen day (its scans past the
    retention term, :mod:`campaigns.services.rollups`) is not recomputed by the worker:
    its mark is kept for the next purge, which recomputes it while its raw rows are
    complete. The retention purge does not call it: its deletions leave totals and
    series unchanged."""
    if not scan_ids and not click_ids:
        return 0
    result = await conn.execute(
        text(
            "INSERT INTO rollup_dirty (campaign_id, day)"
            " SELECT DISTINCT campaign_id, (scanned_at AT TIME ZONE 'UTC')::date"
            " FROM scans WHERE id = ANY(CAST(:ids AS bigint[])) AND organization_id = :org"
            " UNION SELECT DISTINCT campaign_id, (occurred_at AT TIME ZONE 'UTC')::date"
            " FROM conversions WHERE organization_id = :org AND campaign_id IS NOT NULL"
            " AND (scan_id = ANY(CAST(:ids AS bigint[]))"
            " OR click_id = ANY(CAST(:clicks AS text[])))"
        ),
        {"ids": list(scan_ids), "clicks": list(click_ids), "org": organization_id},
    )
    return result.rowcount


async def erase(
    session: AsyncSession, *, organization_id: int, click_id: str | None, visitor: str | None
) -> PrivacyErasure:
    """Erase what the organization holds about the person, in the session's transaction
    (module docstring). Returns rows per table: ``scans`` deleted, each holder's rows,
    ``conversions`` unlinked. Raises like :func:`access`."""
    click, cookie = _subject(click_id, visitor)
    conn = await session.connection()
    where = _whose(organization_id, click, cookie)
    found = (
        await session.execute(
            select(Scan.id, Scan.click_id)
            .where(Scan.organization_id == organization_id, where)
            .with_for_update()
        )
    ).all()
    scan_ids = [row[0] for row in found]
    click_ids = sorted({row[1] for row in found} | ({click} if click else set()))
    # Holders and rollup marks first, while the conversions still name the click ids
    # (a conversion's webhook delivery is found through it).
    counts: dict[str, int] = {}
    for holder in HOLDERS.values():
        counts[holder.name] = await holder.erase(conn, organization_id, click_ids)
    await adjust_rollups_for_erasure(
        conn, organization_id=organization_id, scan_ids=scan_ids, click_ids=click_ids
    )
    # Unlinked before the scans go: deleting them would null scan_id through the key.
    unlinked = await conn.execute(
        update(Conversion)
        .where(*_conversion_filter(organization_id, click_ids, scan_ids))
        .values(click_id=None, scan_id=None, campaign_id=None, tag_id=None)
    )
    if not found and not unlinked.rowcount:
        raise _not_found()
    deleted = await conn.execute(delete(Scan).where(Scan.id.in_(scan_ids)))
    counts.update(scans=deleted.rowcount, conversions=unlinked.rowcount)
    erasure = PrivacyErasure(
        click_id=click, visitor=str(cookie) if cookie else None, counts=dict(sorted(counts.items()))
    )
    await audit_erasure(session, organization_id=organization_id, erasure=erasure)
    return erasure
