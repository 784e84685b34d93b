"""Report rollups: the figures of ``stats`` per campaign and UTC hour, kept as scans arrive.

What is stored (tables in :mod:`campaigns.models`): per (campaign, tag, UTC hour) the
scan counts of ``stats`` and three visitor figures, the same for the whole campaign
(also per UTC quarter hour, for series in zones with 30- or 45-minute offsets),
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

Frozen days (docs/DECISIONS.md, "Frozen rollup days"): a (campaign, UTC day) that
starts before its organization's freeze line (:func:`freeze_lines`: the first UTC
midnight after ``now - scan_retention_days``, or after the horizon of the last purge
when that is later) is frozen. Its raw scans are, or are about to be, deleted by the
retention purge, so its rollup rows are permanent: :func:`recompute` skips it (worker
pass, dirty marks, late conversions) and :func:`rebuild` neither deletes nor recomputes
it; a dirty mark of a frozen day is kept for the purge. Before deleting scans, the
purge calls :func:`seal_before_purge`, which recomputes (bypassing the freeze) the
frozen days still complete in the raw tables that have no rollup rows or are dirty.

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
import time
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
#: A pass's duration times this is the least pause before the next one (:func:`next_pass_at`):
#: the rollups take at most a tenth of one database connection's time.
BUSY_FACTOR: Final = 9.0

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
#: Rollup tables holding one (campaign, quarter hour) span per recompute.
QUARTER_TABLES: Final = ("campaign_quarter_rollups", "campaign_conversion_quarter_rollups")

#: As in :mod:`campaigns.services.stats`: internal scans (staff's) count in no figure but
#: ``internal_scans``.
_HUMAN = "NOT internal AND NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'"
_COUNTED = "NOT internal AND coalesce(nfc_verification, 'valid') = 'valid'"

#: The day's scans of one campaign with their UTC hour.
_DAY_SCANS = f"""
    s AS (
        SELECT tag_id, date_trunc('hour', scanned_at, 'UTC') AS hour, is_bot, burst,
               nfc_verification, bot_reason, visitor_id, channel, device_type, os, country,
               internal, ({_HUMAN}) AS human, ({_COUNTED}) AS counted
        FROM scans
        WHERE campaign_id = :c AND scanned_at >= :d0 AND scanned_at < :d1
    )"""  # noqa: S608 - constants and bound parameters only

_SCAN_ROLLUPS = f"""
    INSERT INTO scan_rollups (campaign_id, tag_id, hour, scans, bot_scans, burst_scans,
        replayed_taps, invalid_taps, {", ".join(f"bot_{r}" for r in BOT_REASONS)},
        internal_scans, visitors, first_visitors, last_visitors)
    WITH {_DAY_SCANS},
    counts AS (
        SELECT tag_id, hour,
               count(*) FILTER (WHERE human) AS scans,
               count(*) FILTER (WHERE is_bot AND counted) AS bot_scans,
               count(*) FILTER (WHERE human AND burst) AS burst_scans,
               count(*) FILTER (WHERE nfc_verification = 'replayed' AND NOT internal)
                 AS replayed,
               count(*) FILTER (WHERE nfc_verification = 'invalid' AND NOT internal)
                 AS invalid,
               {", ".join(f"count(*) FILTER (WHERE bot_reason = '{r}' AND counted)" for r in BOT_REASONS)},
               count(*) FILTER (WHERE internal) AS internal_scans,
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

_FIGURES = "scans, bot_scans, burst_scans, replayed_taps, invalid_taps, internal_scans, " + (
    ", ".join(f"bot_{r}" for r in BOT_REASONS)
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

#: Human scans and visitors per UTC quarter hour (``date_bin`` from the day's midnight):
#: first and last quarter of each visitor's day, and the distinct visitors of the hour
#: starting at each quarter (a scan is in the windows of its quarter and the three
#: before it; windows end with the day).
_CAMPAIGN_QUARTER_ROLLUPS = f"""
    INSERT INTO campaign_quarter_rollups (campaign_id, quarter, scans, first_visitors,
        last_visitors, hour_visitors)
    WITH s AS (
        SELECT date_bin('15 minutes', scanned_at, :d0) AS quarter, visitor_id
        FROM scans
        WHERE campaign_id = :c AND scanned_at >= :d0 AND scanned_at < :d1 AND {_HUMAN}
    ),
    counts AS (SELECT quarter, count(*) AS scans FROM s GROUP BY quarter),
    v AS (
        SELECT visitor_id, min(quarter) AS first, max(quarter) AS last
        FROM s WHERE visitor_id IS NOT NULL GROUP BY visitor_id
    ),
    f AS (SELECT first AS quarter, count(*) AS n FROM v GROUP BY 1),
    l AS (SELECT last AS quarter, count(*) AS n FROM v GROUP BY 1),
    h AS (
        SELECT w.quarter, count(DISTINCT s.visitor_id) AS n
        FROM s CROSS JOIN LATERAL (VALUES (s.quarter), (s.quarter - interval '15 minutes'),
            (s.quarter - interval '30 minutes'), (s.quarter - interval '45 minutes'))
            AS w(quarter)
        WHERE w.quarter >= :d0
        GROUP BY w.quarter
    )
    SELECT :c, h.quarter, coalesce(counts.scans, 0), coalesce(f.n, 0), coalesce(l.n, 0), h.n
    FROM h LEFT JOIN counts USING (quarter) LEFT JOIN f USING (quarter)
    LEFT JOIN l USING (quarter)
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

_CAMPAIGN_CONVERSION_QUARTER_ROLLUPS = """
    INSERT INTO campaign_conversion_quarter_rollups (campaign_id, quarter, currency,
        conversions, amount_minor)
    SELECT :c, date_bin('15 minutes', occurred_at, :d0), value_currency, count(*),
           coalesce(sum(value_amount_minor), 0)
    FROM conversions
    WHERE campaign_id = :c AND occurred_at >= :d0 AND occurred_at < :d1
    GROUP BY 2, 3
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
    _CAMPAIGN_QUARTER_ROLLUPS,
    _SCAN_BREAKDOWNS,
    _CONVERSION_ROLLUPS,
    _CONVERSION_DAY_ROLLUPS,
    _CAMPAIGN_CONVERSION_ROLLUPS,
    _CAMPAIGN_CONVERSION_QUARTER_ROLLUPS,
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


#: ``maintenance_runs.name`` prefix of one organization's purge horizon (followed by
#: its id): ``result->>'scans_before'`` is the latest instant before which the purge
#: deleted (or started deleting) that organization's scans.
PURGED_PREFIX: Final = "purged:"

_FREEZE = """
    SELECT c.id AS campaign_id, o.scan_retention_days AS days,
           CAST(m.result ->> 'scans_before' AS timestamptz) AS purged
    FROM campaigns c JOIN organizations o ON o.id = c.organization_id
    LEFT JOIN maintenance_runs m ON m.name = :prefix || o.id::text
    WHERE CAST(:ids AS bigint[]) IS NULL OR c.id = ANY(:ids)
"""


def freeze_line(
    now: dt.datetime, retention_days: int, purged_before: dt.datetime | None
) -> dt.datetime:
    """The UTC midnight before which a campaign's days are frozen: the first midnight at
    or after ``now - retention_days`` (the retention horizon; the day holding it is
    frozen), or at or after ``purged_before`` (the last purge's horizon: retention may
    have been lengthened since) when that is later."""
    line = ceil_day(now - dt.timedelta(days=retention_days))
    if purged_before is not None:
        line = max(line, ceil_day(purged_before))
    return line


async def freeze_lines(
    conn: AsyncConnection, campaign_ids: Iterable[int] | None, now: dt.datetime
) -> dict[int, dt.datetime]:
    """:func:`freeze_line` of each campaign of ``campaign_ids`` (None: every campaign)
    at ``now``; a campaign that does not exist is absent."""
    ids = None if campaign_ids is None else sorted(set(campaign_ids))
    rows = await conn.execute(text(_FREEZE), {"ids": ids, "prefix": PURGED_PREFIX})
    return {int(r.campaign_id): freeze_line(now, int(r.days), r.purged) for r in rows}


def _is_frozen(lines: dict[int, dt.datetime], campaign_id: int, day: dt.date) -> bool:
    line = lines.get(campaign_id)
    return line is not None and dt.datetime.combine(day, dt.time(), dt.UTC) < line


async def _now(conn: AsyncConnection) -> dt.datetime:
    now: dt.datetime = await conn.scalar(text("SELECT now()"))
    return now


async def recompute(
    conn: AsyncConnection,
    pairs: Iterable[tuple[int, dt.date]],
    *,
    now: dt.datetime | None = None,
    frozen: bool = True,
) -> int:
    """Replace the rollup rows of each (campaign id, UTC day) of ``pairs`` by figures
    recomputed from ``scans`` and ``conversions``, one transaction per pair (committed
    here). Idempotent. Frozen pairs at ``now`` (default: the database's clock) are
    skipped unless ``frozen`` is false (only :func:`seal_before_purge` bypasses the
    freeze, for days whose raw rows are complete). Call it holding :data:`LOCK_KEY`.
    Returns the number of pairs recomputed."""
    todo = sorted(set(pairs))
    if frozen and todo:
        lines = await freeze_lines(conn, {c for c, _ in todo}, now or await _now(conn))
        await conn.commit()
        todo = [(c, day) for c, day in todo if not _is_frozen(lines, c, day)]
    done = 0
    for campaign_id, day in todo:
        d0 = dt.datetime.combine(day, dt.time(), dt.UTC)
        params = {"c": campaign_id, "d0": d0, "d1": d0 + DAY}
        for table, column in (
            *((t, "hour") for t in TABLES),
            *((t, "quarter") for t in QUARTER_TABLES),
        ):
            await conn.execute(
                text(
                    f"DELETE FROM {table} "  # noqa: S608 - table names are constants
                    f"WHERE campaign_id = :c AND {column} >= :d0 AND {column} < :d1"
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


#: Drops the dirty marks up to ``:up_to`` but those of frozen days (kept for the purge's
#: seal); marks of campaigns absent from the lines (deleted) go too.
_DROP_DIRTY = """
    DELETE FROM rollup_dirty d WHERE d.id <= :up_to AND NOT EXISTS (
        SELECT 1 FROM unnest(CAST(:cs AS bigint[]), CAST(:lines AS date[])) AS f(c, line)
        WHERE f.c = d.campaign_id AND d.day < f.line)
"""


async def _drop_dirty(conn: AsyncConnection, up_to: int, lines: dict[int, dt.datetime]) -> None:
    await conn.execute(
        text(_DROP_DIRTY),
        {
            "up_to": up_to,
            "cs": list(lines),
            "lines": [line.astimezone(dt.UTC).date() for line in lines.values()],
        },
    )


async def _set_state(
    conn: AsyncConnection,
    started: dt.datetime,
    margin: dt.timedelta,
    interval: dt.timedelta = dt.timedelta(0),
) -> None:
    """Record a pass that started at ``started`` and ends now: what it folded, and when
    the next pass may start (:func:`next_pass_at`, on the database's clock)."""
    ended: dt.datetime = await conn.scalar(text("SELECT clock_timestamp()"))
    await conn.execute(
        text(
            "INSERT INTO rollup_state (id, last_pass_at, folded_until, next_pass_at)"
            " VALUES (1, :at, :folded, :next)"
            " ON CONFLICT (id) DO UPDATE SET last_pass_at = EXCLUDED.last_pass_at,"
            " folded_until = EXCLUDED.folded_until, next_pass_at = EXCLUDED.next_pass_at"
        ),
        {
            "at": started,
            "folded": floor_hour(started - margin),
            "next": next_pass_at(started, ended, interval),
        },
    )
    await conn.commit()


def next_pass_at(started: dt.datetime, ended: dt.datetime, interval: dt.timedelta) -> dt.datetime:
    """When the pass after one that ran from ``started`` to ``ended`` may start: the
    ``interval`` after its start, or :data:`BUSY_FACTOR` times its duration after its end
    when that is later. A pass recomputes whole (campaign, day) pairs, so its cost grows
    with the day's scans (about 1 s of database CPU for 100,000 scans of one campaign);
    spacing passes by their cost keeps the rollups' share of the database at most a
    tenth of one connection, whatever the day's volume and however many processes run a
    worker (the time is stored in ``rollup_state``, shared by all of them). Reports stay
    exact meanwhile: what is not folded yet is read raw
    (:func:`campaigns.services.stats.split_window`)."""
    return max(started + interval, ended + BUSY_FACTOR * (ended - started))


@dataclass(frozen=True)
class PassResult:
    """What one pass did: ``days`` (campaign, UTC day) pairs recomputed; ``rebuilt`` true
    when the rollups did not exist and were built from scratch."""

    days: int
    rebuilt: bool


async def rollup_pass(
    engine: AsyncEngine,
    *,
    margin: dt.timedelta = DEFAULT_MARGIN,
    now: dt.datetime | None = None,
    interval: dt.timedelta | None = None,
) -> PassResult | None:
    """Fold what changed since the previous pass into the rollups (module docstring),
    frozen days at ``now`` (default: the database's clock) left as they are. Returns
    None, doing nothing, when another process holds the rollup lock, or, when paced
    (``interval`` given: the worker's), before the previous pass's ``next_pass_at``
    (:func:`next_pass_at`). The first pass ever builds everything (:func:`rebuild`).
    Raises ``SQLAlchemyError``."""
    async with engine.connect() as conn:
        if not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
            await conn.rollback()
            return None
        try:
            await conn.commit()
            started = await _now(conn)
            clock = now or started
            state = (
                await conn.execute(
                    text("SELECT last_pass_at, next_pass_at FROM rollup_state WHERE id = 1")
                )
            ).first()
            if (
                interval is not None
                and state is not None
                and state.next_pass_at is not None
                and started < state.next_pass_at
            ):
                return None
            pace = interval or dt.timedelta(0)
            if state is None:
                await conn.commit()
                days = await _rebuild_locked(conn, None, clock)
                await _set_state(conn, started, margin, pace)
                return PassResult(days=days, rebuilt=True)
            dirty = await conn.scalar(text("SELECT coalesce(max(id), 0) FROM rollup_dirty"))
            pairs = [
                (int(r.campaign_id), r.day)
                for r in await conn.execute(
                    text(_TOUCHED), {"since": state.last_pass_at - margin, "dirty": dirty}
                )
            ]
            lines = await freeze_lines(conn, {c for c, _ in pairs}, clock)
            await conn.commit()
            days = await recompute(conn, pairs, now=clock)
            await _drop_dirty(conn, dirty, lines)
            await _set_state(conn, started, margin, pace)
            return PassResult(days=days, rebuilt=False)
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            await conn.commit()


async def _rebuild_locked(conn: AsyncConnection, campaign_id: int | None, now: dt.datetime) -> int:
    """Delete the rollup rows of retained (unfrozen) days, of every campaign or of
    ``campaign_id``, and recompute those days; frozen days' rows stay as they are (their
    raw scans may be gone). Rows of campaigns no longer there go."""
    lines = await freeze_lines(conn, None if campaign_id is None else [campaign_id], now)
    scope = "CAST(:campaign AS bigint) IS NULL OR t.campaign_id = :campaign"
    frozen = {
        "cs": list(lines),
        "lines": list(lines.values()),
        "days": [line.astimezone(dt.UTC).date() for line in lines.values()],
        "campaign": campaign_id,
    }
    for table, column, line in (
        *((t, "hour", "lines") for t in TABLES),
        *((t, "quarter", "lines") for t in QUARTER_TABLES),
        *((t, "day", "days") for t in DAY_TABLES),
    ):
        cast = "date[]" if column == "day" else "timestamptz[]"
        await conn.execute(
            text(
                f"DELETE FROM {table} AS t WHERE ({scope}) AND NOT EXISTS ("  # noqa: S608 - constants
                f" SELECT 1 FROM unnest(CAST(:cs AS bigint[]), CAST(:{line} AS {cast}))"
                f" AS f(c, line) WHERE f.c = t.campaign_id AND t.{column} < f.line)"
            ),
            frozen,
        )
    pairs = [
        (int(r.campaign_id), r.day)
        for r in await conn.execute(text(_ALL_DAYS), {"campaign": campaign_id})
        if not _is_frozen(lines, int(r.campaign_id), r.day)
    ]
    await conn.commit()
    return await recompute(conn, pairs, now=now)


async def rebuild(
    engine: AsyncEngine,
    *,
    campaign_id: int | None = None,
    margin: dt.timedelta = DEFAULT_MARGIN,
    now: dt.datetime | None = None,
) -> int:
    """Rebuild the rollups from the raw tables: every campaign, or only ``campaign_id``
    (after a bulk load). Only retained days are rebuilt: frozen days at ``now``
    (default: the database's clock) keep their rows, neither deleted nor recomputed.
    Waits for a running pass (same advisory lock). A full rebuild also resets
    ``rollup_state`` and drops the dirty marks of retained days; a campaign's rebuild
    leaves them (and, when the rollups were never built, leaves them to the worker's
    first pass). Returns the number of (campaign, UTC day) pairs recomputed. Raises
    ``SQLAlchemyError``."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        await conn.commit()
        try:
            started = await _now(conn)
            clock = now or started
            await conn.commit()
            days = await _rebuild_locked(conn, campaign_id, clock)
            if campaign_id is None:
                lines = await freeze_lines(conn, None, clock)
                up_to = await conn.scalar(text("SELECT coalesce(max(id), 0) FROM rollup_dirty"))
                await _drop_dirty(conn, int(up_to), lines)
                await _set_state(conn, started, margin)
            return days
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            await conn.commit()


#: The (campaign, UTC day) pairs of an organization's scans in ``[:intact, :line)`` (days
#: still complete in the raw tables, frozen or about to be) that have no rollup rows or
#: are marked dirty (marks up to ``:dirty``).
_SEAL_PAIRS = """
    SELECT c.id AS campaign_id, d.day FROM campaigns c
    CROSS JOIN LATERAL (
        SELECT DISTINCT (s.scanned_at AT TIME ZONE 'UTC')::date AS day FROM scans s
        WHERE s.campaign_id = c.id AND s.scanned_at >= :intact AND s.scanned_at < :line
    ) AS d
    WHERE c.organization_id = :org AND (
        NOT EXISTS (SELECT 1 FROM scan_day_rollups r
                    WHERE r.campaign_id = c.id AND r.day = d.day)
        OR EXISTS (SELECT 1 FROM rollup_dirty m
                   WHERE m.campaign_id = c.id AND m.day = d.day AND m.id <= :dirty))
"""

_RECORD_PURGED = """
    INSERT INTO maintenance_runs (name, last_run_at, result)
    VALUES (:name, now(), jsonb_build_object('scans_before', CAST(:before AS text)))
    ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at,
        result = CASE WHEN CAST(maintenance_runs.result ->> 'scans_before' AS timestamptz)
                           >= CAST(:before AS timestamptz)
                      THEN maintenance_runs.result ELSE EXCLUDED.result END
"""

#: The long-ago start of the days still complete when no purge ever ran.
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


async def seal_before_purge(
    engine: AsyncEngine, *, organization_id: int, scans_before: dt.datetime
) -> int:
    """Make the rollups of the days a purge of ``organization_id`` is about to touch
    (scans before ``scans_before``, UTC) complete and permanent, before it deletes any
    scan. Under the rollup lock (:data:`LOCK_KEY`, waiting for a running pass or
    rebuild): every (campaign, UTC day) before the freeze line of ``scans_before`` whose
    raw scans are still complete (on or after the previous purge's horizon) and that
    has no rollup rows or is marked dirty is recomputed, bypassing the freeze (whether
    or not the worker ever ran); then the organization's purge horizon is recorded
    (``maintenance_runs`` row :data:`PURGED_PREFIX` + id; it only moves forward, so days
    a purge touched stay frozen even if the retention is lengthened later), and the dirty
    marks of its frozen days are dropped (a day already partly purged cannot be
    recomputed). Returns the pairs recomputed. Raises ``SQLAlchemyError``."""
    name = f"{PURGED_PREFIX}{organization_id}"
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        await conn.commit()
        try:
            purged = await conn.scalar(
                text(
                    "SELECT CAST(result ->> 'scans_before' AS timestamptz)"
                    " FROM maintenance_runs WHERE name = :name"
                ),
                {"name": name},
            )
            intact = _EPOCH if purged is None else ceil_day(purged)
            line = ceil_day(scans_before)
            if purged is not None:
                line = max(line, intact)
            dirty = await conn.scalar(text("SELECT coalesce(max(id), 0) FROM rollup_dirty"))
            pairs = [
                (int(r.campaign_id), r.day)
                for r in await conn.execute(
                    text(_SEAL_PAIRS),
                    {"org": organization_id, "intact": intact, "line": line, "dirty": dirty},
                )
            ]
            await conn.commit()
            days = await recompute(conn, pairs, frozen=False)
            await conn.execute(
                text(_RECORD_PURGED), {"name": name, "before": scans_before.isoformat()}
            )
            await conn.execute(
                text(
                    "DELETE FROM rollup_dirty d USING campaigns c"
                    " WHERE c.id = d.campaign_id AND c.organization_id = :org"
                    " AND d.id <= :dirty AND d.day < :day"
                ),
                {"org": organization_id, "dirty": dirty, "day": line.date()},
            )
            await conn.commit()
            return days
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            await conn.commit()


class RollupWorker:
    """Runs :func:`rollup_pass` in the background of one service process, trying every
    ``interval_s`` seconds. Every process may run one: the advisory lock makes them take
    turns, and the pacing stored by the last pass (:func:`next_pass_at`) applies to all
    of them, so the deployment runs one pass per interval at most, fewer on a busy day
    (an attempt that is too early, or finds the lock held, costs two queries)."""

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
            began = time.monotonic()
            try:
                result = await rollup_pass(
                    self._engine,
                    margin=self._margin,
                    interval=dt.timedelta(seconds=self._interval_s),
                )
                if result is not None:
                    self.last = result
            except (SQLAlchemyError, OSError) as exc:
                log.warning("rollup pass failed (%s); retrying in %.0f s", exc, self._interval_s)
            await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - began)))


def rows_by(rows: Iterable[Any], key: str) -> dict[Any, list[Any]]:
    """Group result rows by one attribute."""
    grouped: dict[Any, list[Any]] = {}
    for row in rows:
        grouped.setdefault(getattr(row, key), []).append(row)
    return grouped
