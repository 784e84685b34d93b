"""Report rollups: the figures of ``stats`` per campaign and UTC hour, kept as scans arrive.

What is stored (tables in :mod:`campaigns.models`): per (campaign, tag, UTC hour) the
scan counts of ``stats`` and three visitor figures, the same for the whole campaign,
human scans per breakdown value, and conversions (count, value per currency, per tag and
per breakdown value of their click scan) per UTC hour of ``occurred_at``.

How it is kept (docs/DECISIONS.md, "Report rollups"): no trigger on ``scans`` (the hot
path). A background worker (:class:`RollupWorker`, one per process, but only one pass at
a time in the whole deployment through a PostgreSQL advisory lock) recomputes, from the
raw rows, every (campaign, UTC day) that may have changed since its previous pass:

- days of scans with ``scanned_at`` at or after the previous pass's start minus
  ``margin`` (a scan is committed by the group commit within milliseconds of its
  ``scanned_at``; the margin covers a slow commit, so a scan committed out of id order
  is never missed);
- days of ``occurred_at`` of conversions received since then (``received_at``);
- days marked in ``rollup_dirty`` (the spool replay writes scans late, and credits
  conversions late).

A recompute deletes the day's rollup rows of the campaign and inserts the recomputed
ones in one transaction: idempotent, and readers see the old day or the new one. After a
pass, ``rollup_state.folded_until`` (the start of the UTC hour holding pass start minus
``margin``) tells readers which hours are complete; later hours are read from the raw
tables. A bulk load (COPY of old scans) is out of the worker's sight: run
:func:`rebuild` (``passerelle rollups rebuild``).

Unique visitors: visitor ids are salted per UTC day, so the visitors of a span are the
sum over UTC days of each day's distinct visitors (the stats definition). Within a day,
``first_visitors`` of an hour counts the visitors whose first human scan of the day is in
that hour and ``last_visitors`` those whose last is, so the distinct visitors of any
*prefix* of a day (midnight to hour h) is a sum of ``first_visitors`` and of any
*suffix* a sum of ``last_visitors``: exact, with no sketch. A local day of a whole-hour
time zone is a suffix of one UTC day plus a prefix of the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from campaigns.scanning.record import BOT_REASONS

log = logging.getLogger(__name__)

#: Key of the advisory lock held during a pass or a rebuild (any constant bigint).
LOCK_KEY: Final = 0x70617373_726F6C6C  # "passroll"
HOUR: Final = dt.timedelta(hours=1)
DAY: Final = dt.timedelta(days=1)
DEFAULT_MARGIN: Final = dt.timedelta(minutes=5)

#: Rollup tables holding one (campaign, hour) span per recompute.
TABLES: Final = (
    "scan_rollups",
    "campaign_rollups",
    "scan_breakdown_rollups",
    "conversion_rollups",
    "campaign_conversion_rollups",
    "conversion_breakdown_rollups",
)
#: Rollup tables holding one (campaign, day) per recompute.
DAY_TABLES: Final = ("scan_day_rollups", "conversion_day_rollups")

_HUMAN = "NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'"
_COUNTED = "coalesce(nfc_verification, 'valid') = 'valid'"

#: The day's scans of one campaign with their UTC hour.
_DAY_SCANS = f"""
    s AS (
        SELECT tag_id, date_trunc('hour', scanned_at, 'UTC') AS hour, is_bot, burst,
               nfc_verification, bot_reason, visitor_id, channel, device_type, os, country,
               ({_HUMAN}) AS human, ({_COUNTED}) AS counted
        FROM scans
        WHERE campaign_id = :c AND scanned_at >= :d0 AND scanned_at < :d1
    )"""  # noqa: S608 - constants and bound parameters only

_SCAN_ROLLUPS = f"""
    INSERT INTO scan_rollups (campaign_id, tag_id, hour, scans, bot_scans, burst_scans,
        replayed_taps, invalid_taps, {", ".join(f"bot_{r}" for r in BOT_REASONS)},
        visitors, first_visitors, last_visitors)
    WITH {_DAY_SCANS},
    counts AS (
        SELECT tag_id, hour,
               count(*) FILTER (WHERE human) AS scans,
               count(*) FILTER (WHERE is_bot AND counted) AS bot_scans,
               count(*) FILTER (WHERE human AND burst) AS burst_scans,
               count(*) FILTER (WHERE nfc_verification = 'replayed') AS replayed,
               count(*) FILTER (WHERE nfc_verification = 'invalid') AS invalid,
               {", ".join(f"count(*) FILTER (WHERE bot_reason = '{r}' AND counted)" for r in BOT_REASONS)},
               count(DISTINCT visitor_id) FILTER (WHERE human) AS visitors
        FROM s GROUP BY tag_id, hour
    ),
    v AS (
        SELECT tag_id, visitor_id, min(hour) AS first, max(hour) AS last
        FROM s WHERE human AND visitor_id IS NOT NULL GROUP BY tag_id, visitor_id
    ),
    f AS (SELECT tag_id, first AS hour, count(*) AS n FROM v GROUP BY 1, 2),
    l AS (SELECT tag_id, last AS hour, count(*) AS n FROM v GROUP BY 1, 2)
    SELECT :c, counts.*, coalesce(f.n, 0), coalesce(l.n, 0)
    FROM counts LEFT JOIN f USING (tag_id, hour) LEFT JOIN l USING (tag_id, hour)
"""  # noqa: S608, E501 - module constants only

_FIGURES = "scans, bot_scans, burst_scans, replayed_taps, invalid_taps, " + ", ".join(
    f"bot_{r}" for r in BOT_REASONS
)
_SCAN_DAY_ROLLUPS = f"""
    INSERT INTO scan_day_rollups (campaign_id, day, tag_id, {_FIGURES}, visitors)
    SELECT :c, CAST(:d0 AT TIME ZONE 'UTC' AS date), tag_id,
           {", ".join(f"sum({f.strip()})" for f in _FIGURES.split(","))}, sum(first_visitors)
    FROM scan_rollups WHERE campaign_id = :c AND hour >= :d0 AND hour < :d1
    GROUP BY tag_id
"""  # noqa: S608 - module constants only

_CAMPAIGN_ROLLUPS = f"""
    INSERT INTO campaign_rollups (campaign_id, hour, scans, visitors, first_visitors,
        last_visitors)
    WITH {_DAY_SCANS},
    counts AS (
        SELECT hour, count(*) AS scans, count(DISTINCT visitor_id) AS visitors
        FROM s WHERE human GROUP BY hour
    ),
    v AS (
        SELECT visitor_id, min(hour) AS first, max(hour) AS last
        FROM s WHERE human AND visitor_id IS NOT NULL GROUP BY visitor_id
    ),
    f AS (SELECT first AS hour, count(*) AS n FROM v GROUP BY 1),
    l AS (SELECT last AS hour, count(*) AS n FROM v GROUP BY 1)
    SELECT :c, counts.*, coalesce(f.n, 0), coalesce(l.n, 0)
    FROM counts LEFT JOIN f USING (hour) LEFT JOIN l USING (hour)
"""  # noqa: S608 - module constants only

_DIMENSIONS = (
    "(VALUES ('channel', channel::text), ('device_type', device_type), ('os', os),"
    " ('country', country)) AS x(dimension, value)"
)

_SCAN_BREAKDOWNS = f"""
    INSERT INTO scan_breakdown_rollups (campaign_id, hour, dimension, value, scans)
    WITH {_DAY_SCANS}
    SELECT :c, hour, x.dimension, x.value, count(*)
    FROM s CROSS JOIN LATERAL {_DIMENSIONS}
    WHERE human GROUP BY hour, x.dimension, x.value
"""  # noqa: S608 - module constants only

_CONVERSION_ROLLUPS = """
    INSERT INTO conversion_rollups (campaign_id, hour, tag_id, currency, conversions,
        amount_minor)
    SELECT :c, date_trunc('hour', occurred_at, 'UTC'), tag_id, value_currency, count(*),
           coalesce(sum(value_amount_minor), 0)
    FROM conversions
    WHERE campaign_id = :c AND occurred_at >= :d0 AND occurred_at < :d1
    GROUP BY 2, 3, 4
"""

_CONVERSION_DAY_ROLLUPS = """
    INSERT INTO conversion_day_rollups (campaign_id, day, tag_id, currency, conversions,
        amount_minor)
    SELECT :c, CAST(:d0 AT TIME ZONE 'UTC' AS date), tag_id, currency, sum(conversions),
           sum(amount_minor)
    FROM conversion_rollups WHERE campaign_id = :c AND hour >= :d0 AND hour < :d1
    GROUP BY tag_id, currency
"""

_CAMPAIGN_CONVERSION_ROLLUPS = """
    INSERT INTO campaign_conversion_rollups (campaign_id, hour, currency, conversions,
        amount_minor)
    SELECT :c, hour, currency, sum(conversions), sum(amount_minor)
    FROM conversion_rollups WHERE campaign_id = :c AND hour >= :d0 AND hour < :d1
    GROUP BY hour, currency
"""

_CONVERSION_BREAKDOWNS = """
    INSERT INTO conversion_breakdown_rollups (campaign_id, hour, dimension, value,
        conversions)
    SELECT :c, date_trunc('hour', c.occurred_at, 'UTC'), x.dimension, x.value, count(*)
    FROM conversions c
    JOIN scans s ON s.id = c.scan_id AND s.campaign_id = :c
        AND s.organization_id = c.organization_id
    CROSS JOIN LATERAL (VALUES ('channel', s.channel::text), ('device_type', s.device_type),
        ('os', s.os), ('country', s.country)) AS x(dimension, value)
    WHERE c.campaign_id = :c AND c.occurred_at >= :d0 AND c.occurred_at < :d1
    GROUP BY 2, 3, 4
"""

_RECOMPUTE = (
    _SCAN_ROLLUPS,
    _SCAN_DAY_ROLLUPS,
    _CAMPAIGN_ROLLUPS,
    _SCAN_BREAKDOWNS,
    _CONVERSION_ROLLUPS,
    _CONVERSION_DAY_ROLLUPS,
    _CAMPAIGN_CONVERSION_ROLLUPS,
    _CONVERSION_BREAKDOWNS,
)

#: (campaign, UTC day) pairs that may have changed since ``:since``, and dirty marks up
#: to ``:dirty``. Scans through the (campaign_id, scanned_at) index, campaign by campaign.
_TOUCHED = """
    SELECT c.id AS campaign_id, d.day FROM campaigns c
    CROSS JOIN LATERAL (
        SELECT DISTINCT (s.scanned_at AT TIME ZONE 'UTC')::date AS day FROM scans s
        WHERE s.campaign_id = c.id AND s.scanned_at >= :since
    ) AS d
    UNION
    SELECT DISTINCT campaign_id, (occurred_at AT TIME ZONE 'UTC')::date FROM conversions
    WHERE received_at >= :since AND campaign_id IS NOT NULL
    UNION
    SELECT d.campaign_id, d.day FROM rollup_dirty d JOIN campaigns c ON c.id = d.campaign_id
    WHERE d.id <= :dirty
"""

_ALL_DAYS = """
    SELECT c.id AS campaign_id, d.day FROM campaigns c
    CROSS JOIN LATERAL (
        SELECT DISTINCT (s.scanned_at AT TIME ZONE 'UTC')::date AS day FROM scans s
        WHERE s.campaign_id = c.id
    ) AS d
    WHERE CAST(:campaign AS bigint) IS NULL OR c.id = :campaign
    UNION
    SELECT DISTINCT campaign_id, (occurred_at AT TIME ZONE 'UTC')::date FROM conversions
    WHERE campaign_id IS NOT NULL AND (CAST(:campaign AS bigint) IS NULL OR campaign_id = :campaign)
"""

#: Marks the days of replayed scans, and of the conversions they credit, as dirty (the
#: spool replay calls it in its crediting transaction; psycopg placeholders).
MARK_REPLAYED_SQL = (
    "INSERT INTO rollup_dirty (campaign_id, day) "
    "SELECT DISTINCT campaign_id, (scanned_at AT TIME ZONE 'UTC')::date FROM scans "
    "WHERE click_id = ANY(%(ids)s) "
    "UNION SELECT DISTINCT campaign_id, (occurred_at AT TIME ZONE 'UTC')::date "
    "FROM conversions WHERE click_id = ANY(%(ids)s) AND campaign_id IS NOT NULL"
)


def floor_hour(at: dt.datetime) -> dt.datetime:
    """The start of the UTC hour holding ``at`` (aware)."""
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: dt.datetime) -> dt.datetime:
    """The first UTC hour boundary at or after ``at``."""
    floor = floor_hour(at)
    return floor if floor == at else floor + HOUR


def floor_day(at: dt.datetime) -> dt.datetime:
    """UTC midnight at or before ``at``."""
    return floor_hour(at).replace(hour=0)


def ceil_day(at: dt.datetime) -> dt.datetime:
    """The first UTC midnight at or after ``at``."""
    floor = floor_day(at)
    return floor if floor == at else floor + DAY


async def folded_until(session: AsyncSession | AsyncConnection) -> dt.datetime | None:
    """The instant before which every hour is complete in the rollups, or None when they
    were never built (reports then read the raw tables only)."""
    folded: dt.datetime | None = await session.scalar(
        text("SELECT folded_until FROM rollup_state WHERE id = 1")
    )
    return folded


async def recompute(conn: AsyncConnection, pairs: Iterable[tuple[int, dt.date]]) -> int:
    """Replace the rollup rows of each (campaign id, UTC day) of ``pairs`` by figures
    recomputed from ``scans`` and ``conversions``, one transaction per pair (committed
    here). Idempotent. Returns the number of pairs."""
    done = 0
    for campaign_id, day in sorted(set(pairs)):
        d0 = dt.datetime.combine(day, dt.time(), dt.UTC)
        params = {"c": campaign_id, "d0": d0, "d1": d0 + DAY}
        for table in TABLES:
            await conn.execute(
                text(
                    f"DELETE FROM {table} "  # noqa: S608 - table names are constants
                    "WHERE campaign_id = :c AND hour >= :d0 AND hour < :d1"
                ),
                params,
            )
        for table in DAY_TABLES:
            await conn.execute(
                text(f"DELETE FROM {table} WHERE campaign_id = :c AND day = :day"),  # noqa: S608
                {"c": campaign_id, "day": day},
            )
        for statement in _RECOMPUTE:
            await conn.execute(text(statement), params)
        await conn.commit()
        done += 1
    return done


async def _set_state(conn: AsyncConnection, started: dt.datetime, margin: dt.timedelta) -> None:
    await conn.execute(
        text(
            "INSERT INTO rollup_state (id, last_pass_at, folded_until) VALUES (1, :at, :folded) "
            "ON CONFLICT (id) DO UPDATE SET last_pass_at = EXCLUDED.last_pass_at, "
            "folded_until = EXCLUDED.folded_until"
        ),
        {"at": started, "folded": floor_hour(started - margin)},
    )
    await conn.commit()


@dataclass(frozen=True)
class PassResult:
    """What one pass did: ``days`` (campaign, UTC day) pairs recomputed; ``rebuilt`` true
    when the rollups did not exist and were built from scratch."""

    days: int
    rebuilt: bool


async def rollup_pass(
    engine: AsyncEngine, *, margin: dt.timedelta = DEFAULT_MARGIN
) -> PassResult | None:
    """Fold what changed since the previous pass into the rollups (module docstring).
    Returns None, doing nothing, when another process holds the rollup lock. The first
    pass ever builds everything (:func:`rebuild`). Raises ``SQLAlchemyError``."""
    async with engine.connect() as conn:
        if not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
            await conn.rollback()
            return None
        try:
            await conn.commit()
            started = await conn.scalar(text("SELECT now()"))
            state = (
                await conn.execute(text("SELECT last_pass_at FROM rollup_state WHERE id = 1"))
            ).first()
            if state is None:
                await conn.commit()
                days = await _rebuild_locked(conn, None)
                await _set_state(conn, started, margin)
                return PassResult(days=days, rebuilt=True)
            dirty = await conn.scalar(text("SELECT coalesce(max(id), 0) FROM rollup_dirty"))
            pairs = [
                (int(r.campaign_id), r.day)
                for r in await conn.execute(
                    text(_TOUCHED), {"since": state.last_pass_at - margin, "dirty": dirty}
                )
            ]
            await conn.commit()
            days = await recompute(conn, pairs)
            await conn.execute(text("DELETE FROM rollup_dirty WHERE id <= :d"), {"d": dirty})
            await _set_state(conn, started, margin)
            return PassResult(days=days, rebuilt=False)
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            await conn.commit()


async def _rebuild_locked(conn: AsyncConnection, campaign_id: int | None) -> int:
    scope = "" if campaign_id is None else " WHERE campaign_id = :campaign"
    for table in (*TABLES, *DAY_TABLES):
        await conn.execute(text(f"DELETE FROM {table}{scope}"), {"campaign": campaign_id})  # noqa: S608
    pairs = [
        (int(r.campaign_id), r.day)
        for r in await conn.execute(text(_ALL_DAYS), {"campaign": campaign_id})
    ]
    await conn.commit()
    return await recompute(conn, pairs)


async def rebuild(
    engine: AsyncEngine,
    *,
    campaign_id: int | None = None,
    margin: dt.timedelta = DEFAULT_MARGIN,
) -> int:
    """Rebuild the rollups from the raw tables: every campaign, or only ``campaign_id``
    (after a bulk load). Waits for a running pass (same advisory lock). A full rebuild
    also resets ``rollup_state``; a campaign's rebuild leaves it (and, when the rollups
    were never built, leaves them to the worker's first pass). Returns the number of
    (campaign, UTC day) pairs recomputed. Raises ``SQLAlchemyError``."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        await conn.commit()
        try:
            started = await conn.scalar(text("SELECT now()"))
            await conn.commit()
            days = await _rebuild_locked(conn, campaign_id)
            if campaign_id is None:
                await conn.execute(text("DELETE FROM rollup_dirty"))
                await _set_state(conn, started, margin)
            return days
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            await conn.commit()


class RollupWorker:
    """Runs :func:`rollup_pass` every ``interval_s`` seconds in the background of one
    service process (every process may run one: the advisory lock makes them take turns,
    and a pass skipped for the lock costs one query)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval_s: float,
        margin: dt.timedelta = DEFAULT_MARGIN,
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._margin = margin
        self._task: asyncio.Task[None] | None = None
        #: The last pass's result (None: none done by this process yet).
        self.last: PassResult | None = None

    def start(self) -> None:
        """Start the background loop (no-op for an interval of 0)."""
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="rollup-worker")

    async def stop(self) -> None:
        """Cancel the loop; a pass in flight is rolled back where it stands (each day it
        already replaced is committed, and the next pass redoes the rest)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                result = await rollup_pass(self._engine, margin=self._margin)
                if result is not None:
                    self.last = result
            except (SQLAlchemyError, OSError) as exc:
                log.warning("rollup pass failed (%s); retrying in %.0f s", exc, self._interval_s)
            await asyncio.sleep(self._interval_s)


def rows_by(rows: Iterable[Any], key: str) -> dict[Any, list[Any]]:
    """Group result rows by one attribute."""
    grouped: dict[Any, list[Any]] = {}
    for row in rows:
        grouped.setdefault(getattr(row, key), []).append(row)
    return grouped
