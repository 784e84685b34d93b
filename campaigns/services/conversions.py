"""Conversions: online outcomes reported by the merchant, attributed last-touch to a scan.

A conversion carries the click id (``pcid``) that ``GET /s/{code}`` appended to the
destination. The click id names exactly one scan, so last-touch attribution credits that
scan, its tag and its campaign. A click id that is unknown, or that belongs to another
organization, is stored unattributed (``scan_id``/``campaign_id``/``tag_id`` null): the
merchant's order is never lost, and no tenant can learn or credit another's click ids.
The crediting itself is :func:`campaigns.attribution.credit_conversions`, shared with the
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
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.attribution import credit_conversions
from campaigns.errors import Conflict, InvalidInput
from campaigns.models import Conversion, utcnow
from campaigns.schemas import ConversionCreate

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
        await credit_conversions(await _driver_connection(session), [data.click_id])
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
