"""Conversions: online outcomes reported by the merchant, attributed last-touch to a scan.

A conversion carries the click id (``pcid``) that ``GET /s/{code}`` appended to the
destination. The click id names exactly one scan, so last-touch attribution credits that
scan, its tag and its campaign. A click id that is unknown, or that belongs to another
organization, is stored unattributed (``scan_id``/``campaign_id``/``tag_id`` null): the
merchant's order is never lost, and no tenant can learn or credit another's click ids.
So is a conversion whose click id is an internal scan (staff testing a poster from a phone
signed into the dashboard): it is not the campaign's.
The crediting itself is :func:`campaigns.crediting.credit_conversions`, shared with the
spool replay (a scan stored after its conversion).

``external_id`` (the order number) is the idempotency key, unique per organization. The
insert is ``INSERT ... ON CONFLICT (organization_id, external_id) DO NOTHING``: of two
racing requests one inserts, the other waits for it to commit and then reads the stored
row. A replay is told from a conflicting reuse by ``fingerprint``, the SHA-256 of the
canonical body (:func:`fingerprint`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.crediting import credit_conversions
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.feed.store import FEED_COMMITTED
from campaigns.models import Conversion, Refund, utcnow
from campaigns.schemas import ConversionCreate, RefundCreate
from campaigns.services.campaigns import MAX_ID, check_window, keyset_page
from campaigns.services.credits import store_credits
from campaigns.webhooks.outbox import write_conversion_events

#: How far in the future ``occurred_at`` may be: generous for skewed merchant clocks, but
#: a conversion dated days ahead is a bug (wrong timezone, wrong field) and would sit in
#: future report windows.
MAX_FUTURE_SKEW = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class RecordedConversion:
    """The stored conversion and whether this call created it (``False``: a replay)."""

    conversion: Conversion
    created: bool


def fingerprint(data: ConversionCreate) -> bytes:
    """SHA-256 of the canonical body: ``click_id``, ``event``, ``value`` (or null) and
    ``occurred_at`` when sent (absent otherwise, so a retry without it matches although
    the stored time is the first receive time).

    The body is taken after validation (``event`` stripped, currency upper case) and times
    are normalised to UTC, so equivalent spellings of the same request (``+01:00`` vs
    ``Z``, ``eur`` vs ``EUR``) are one request. ``external_id`` is the key, not hashed.
    """
    body: dict[str, Any] = {
        "click_id": data.click_id,
        "event": data.event,
        "value": (
            {"amount_minor": data.value.amount_minor, "currency": data.value.currency}
            if data.value is not None
            else None
        ),
    }
    if data.occurred_at is not None:
        body["occurred_at"] = data.occurred_at.astimezone(dt.UTC).isoformat()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).digest()


async def record_conversion(
    session: AsyncSession,
    *,
    organization_id: int,
    data: ConversionCreate,
    now: dt.datetime | None = None,
) -> RecordedConversion:
    """Store a conversion once per ``external_id`` and attribute it to its click's scan.

    ``occurred_at`` defaults to ``now`` (the receive time). Returns the new row
    (``created=True``) or, for a replay of the same body, the stored one
    (``created=False``). Raises :class:`InvalidInput` (``occurred_at_in_future``) when
    ``occurred_at`` is more than :data:`MAX_FUTURE_SKEW` ahead, and :class:`Conflict`
    (``conversion_conflict``) when ``external_id`` is stored with a different body; in
    both cases nothing is written.
    """
    now = now or utcnow()
    if data.occurred_at is not None and data.occurred_at > now + MAX_FUTURE_SKEW:
        raise InvalidInput(
            f"occurred_at is more than {MAX_FUTURE_SKEW.total_seconds() / 3600:g} hours "
            "in the future",
            code="occurred_at_in_future",
            errors=[
                {
                    "loc": ["body", "occurred_at"],
                    "msg": "must not be more than 24 hours in the future",
                    "type": "occurred_at_in_future",
                }
            ],
        )
    digest = fingerprint(data)

    values: dict[str, Any] = {
        "organization_id": organization_id,
        "external_id": data.external_id,
        "event": data.event,
        "click_id": data.click_id,
        "value_amount_minor": data.value.amount_minor if data.value else None,
        "value_currency": data.value.currency if data.value else None,
        "occurred_at": data.occurred_at or now,
        "received_at": now,
        "fingerprint": digest,
    }
    # Under READ COMMITTED a conflicting insert waits for the other transaction: if it
    # commits, DO NOTHING, and the SELECT below (a new statement, a new snapshot) sees its
    # row; if it rolls back, this insert goes ahead. Either way exactly one row.
    new_id = await session.scalar(
        insert(Conversion)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["organization_id", "external_id"])
        .returning(Conversion.id)
    )
    if new_id is not None:
        # Stored unattributed; the one crediting step links it to its click's scan, if
        # that scan is already in the database (else the spool replay will).
        conn = await _driver_connection(session)
        if await credit_conversions(conn, [data.click_id]):
            session.info[FEED_COMMITTED] = True  # a live-feed batch, announced at commit
        else:
            # No scan yet (its spool replay will credit it): stored as unattributed.
            await store_credits(conn, [new_id])
        # The webhooks' outbox rows, in this transaction: sent if and only if stored.
        await write_conversion_events(session, conversion_id=new_id)
    stored = await session.scalar(
        select(Conversion)
        .where(
            Conversion.organization_id == organization_id,
            Conversion.external_id == data.external_id,
        )
        .execution_options(populate_existing=True)
    )
    assert stored is not None  # inserted above or by the transaction we waited for
    if new_id is not None:
        return RecordedConversion(stored, created=True)
    if stored.fingerprint != digest:
        raise Conflict(
            f"external_id {data.external_id!r} was already used for a different conversion",
            code="conversion_conflict",
        )
    return RecordedConversion(stored, created=False)


async def _driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under ``session``, in the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)  # the psycopg async dialect
    return driver


async def list_conversions(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Conversion], str | None]:
    """The organization's conversions, newest first (by id), cursor-paginated, ``limit``
    (1..200) per page: optionally those credited last-touch to ``campaign_id`` and with
    ``occurred_at`` in ``[start, end)``. Another organization's campaign id simply matches
    nothing. Raises :class:`InvalidInput` (``invalid_cursor``, ``invalid_window``)."""
    check_window(start, end)
    query = select(Conversion).where(Conversion.organization_id == organization_id)
    if campaign_id is not None:
        query = query.where(Conversion.campaign_id == campaign_id)
    if start is not None:
        query = query.where(Conversion.occurred_at >= start)
    if end is not None:
        query = query.where(Conversion.occurred_at < end)
    return await keyset_page(session, query, Conversion.id, limit=limit, cursor=cursor)


async def refunded_amounts(session: AsyncSession, *, conversion_ids: list[int]) -> dict[int, int]:
    """Total refunded per conversion id, in minor units (absent: nothing refunded)."""
    if not conversion_ids:
        return {}
    rows = await session.execute(
        select(Refund.conversion_id, func.sum(Refund.amount_minor))
        .where(Refund.conversion_id.in_(conversion_ids))
        .group_by(Refund.conversion_id)
    )
    return {conversion_id: int(total) for conversion_id, total in rows}


def refund_fingerprint(conversion_id: int, data: RefundCreate) -> bytes:
    """SHA-256 of the canonical refund request: the conversion, ``amount_minor`` and
    ``refunded_at`` when sent (UTC). ``external_id`` is the key, not hashed."""
    body: dict[str, Any] = {"conversion_id": conversion_id, "amount_minor": data.amount_minor}
    if data.refunded_at is not None:
        body["refunded_at"] = data.refunded_at.astimezone(dt.UTC).isoformat()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True, slots=True)
class RecordedRefund:
    """The stored refund, its conversion, and whether this call created it."""

    refund: Refund
    conversion: Conversion
    created: bool


def _refund_error(detail: str, code: str, msg: str, field: str) -> InvalidInput:
    return InvalidInput(
        detail, code=code, errors=[{"loc": ["body", field], "msg": msg, "type": code}]
    )


async def record_refund(
    session: AsyncSession,
    *,
    organization_id: int,
    conversion_id: int,
    data: RefundCreate,
    now: dt.datetime | None = None,
) -> RecordedRefund:
    """Refund part of a conversion's value, once per ``external_id``.

    The conversion row is locked (``SELECT ... FOR UPDATE``) for the rest of the
    transaction, so concurrent refunds of one conversion are checked one after the other
    and their sum never exceeds the value. ``refunded_at`` defaults to ``now``.

    Returns the new refund (``created=True``) or, for a replay of the same body, the
    stored one (``created=False``). Raises :class:`NotFound` (``conversion_not_found``,
    also for another organization's), :class:`Conflict` (``refund_conflict``:
    ``external_id`` stored with another body or conversion), :class:`InvalidInput`
    (``refund_exceeds_value``: the conversion has no value or the refunds would exceed it;
    ``refunded_at_in_future``; ``refunded_before_conversion``). Nothing is written on error.
    """
    now = now or utcnow()
    if not 1 <= conversion_id <= MAX_ID:
        raise NotFound(f"Conversion {conversion_id} not found", code="conversion_not_found")
    conversion = await session.scalar(
        select(Conversion)
        .where(Conversion.id == conversion_id, Conversion.organization_id == organization_id)
        .with_for_update()
    )
    if conversion is None:
        raise NotFound(f"Conversion {conversion_id} not found", code="conversion_not_found")
    digest = refund_fingerprint(conversion_id, data)

    stored = await session.scalar(
        select(Refund).where(
            Refund.organization_id == organization_id, Refund.external_id == data.external_id
        )
    )
    if stored is not None:
        return _replay(stored, conversion, digest, data.external_id)

    refunded_at = data.refunded_at or now
    if refunded_at > now + MAX_FUTURE_SKEW:
        raise _refund_error(
            "refunded_at is more than 24 hours in the future",
            "refunded_at_in_future",
            "must not be more than 24 hours in the future",
            "refunded_at",
        )
    if refunded_at < conversion.occurred_at:
        raise _refund_error(
            "refunded_at is before the conversion occurred",
            "refunded_before_conversion",
            "must not be before the conversion's occurred_at",
            "refunded_at",
        )
    already = (await refunded_amounts(session, conversion_ids=[conversion_id])).get(
        conversion_id, 0
    )
    value = conversion.value_amount_minor
    if value is None or already + data.amount_minor > value:
        left = 0 if value is None else value - already
        raise _refund_error(
            f"Refunds would exceed the conversion's value ({left} minor units left to refund)",
            "refund_exceeds_value",
            f"must be at most {left}",
            "amount_minor",
        )

    # The lock serialises refunds of this conversion; the same external_id sent for two
    # different conversions at once is settled by the unique constraint instead.
    new_id = await session.scalar(
        insert(Refund)
        .values(
            organization_id=organization_id,
            conversion_id=conversion_id,
            external_id=data.external_id,
            amount_minor=data.amount_minor,
            refunded_at=refunded_at,
            created_at=now,
            fingerprint=digest,
        )
        .on_conflict_do_nothing(index_elements=["organization_id", "external_id"])
        .returning(Refund.id)
    )
    refund = await session.scalar(
        select(Refund)
        .where(Refund.organization_id == organization_id, Refund.external_id == data.external_id)
        .execution_options(populate_existing=True)
    )
    assert refund is not None  # inserted above or by the transaction we waited for
    if new_id is None:
        return _replay(refund, conversion, digest, data.external_id)
    return RecordedRefund(refund, conversion, created=True)


def _replay(
    stored: Refund, conversion: Conversion, digest: bytes, external_id: str
) -> RecordedRefund:
    if stored.fingerprint != digest:
        raise Conflict(
            f"external_id {external_id!r} was already used for a different refund",
            code="refund_conflict",
        )
    return RecordedRefund(stored, conversion, created=False)
