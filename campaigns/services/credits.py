"""Stored attribution credits: every settled conversion's touches at the default
parameters, credited by every model, so the common report is a sum (issue 9).

``conversion_credits`` holds one row per touch of a conversion's journey at
:data:`~campaigns.services.attribution.DEFAULT_LOOKBACK_DAYS` and
:data:`~campaigns.services.attribution.DEFAULT_HALF_LIFE_DAYS`: the touch's rank ``idx``
of ``n`` (the integer weights of last, first touch, linear and position based follow from
them), its time-decay weight over :data:`~campaigns.attribution.TIME_DECAY_DENOMINATOR`,
and its share of the conversion's value by every model (largest remainder). They are
computed by the report's own SQL (:func:`campaigns.services.attribution._journey_ctes`,
the same time-decay CTEs and the same split arithmetic), so a report reading them equals
the live one by construction (tests compare both, and the Python models, on random data).

``conversions.credits_n`` says where a conversion stands: NULL, not settled (reports
credit it live); else the length of its stored journey (0: no journey, unattributed).

**Settled**: credits are stored only once the conversion's click scan is older than
:data:`SETTLE_MARGIN` (a scan of the same visitor taken just before it may still be in a
scan writer's batch); a conversion credited sooner stays NULL until :func:`refresh`.

**Kept right** (what changes a journey at the default parameters):

- crediting (:func:`campaigns.crediting.credit_conversions`, at receipt and at the spool
  replay) stores the credited conversions' credits in its transaction; a conversion
  stored without a scan gets ``credits_n = 0`` (its scan, if it comes from the spool,
  credits it then);
- a late scan replayed from the spool (its ``scanned_at`` is in the past, so it can enter
  settled journeys of its visitor): :func:`late_scans_conversions` finds the conversions
  whose click scan shares its cookie or its visitor id that day and comes after it, and
  the replay recomputes them in its crediting transaction. A live scan is never older
  than the settle margin, so the scan path writes nothing here;
- database triggers (migration ``5c2e8a7d1b93``) make stale (rows deleted,
  ``credits_n`` NULL) the conversions touched by a deleted scan (erasure, retention
  purge), by a consent answered or erased, or unlinked from their click id (erasure);
  deleted conversions take their rows with them (foreign key).
- refunds are split at report time by the stored weights (as the live path does);
  tags' locations are read at report time; a deleted campaign has no report.

Stale and unsettled conversions are credited live by reports and stored again by
:func:`refresh` (``passerelle credits refresh``; the app's :class:`RefreshWorker`).
Other parameters (lookback, half-life) always take the live path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns import attribution
from campaigns.attribution import Model
from campaigns.services.attribution import (
    _KEYS,
    _TIME_DECAY_CTES,
    _WEIGHTS,
    DEFAULT_HALF_LIFE_DAYS,
    DEFAULT_LOOKBACK_DAYS,
    GroupBy,
    _journey_ctes,
    split_sql,
)

log = logging.getLogger(__name__)

#: How old a conversion's click scan must be before its credits are stored: longer than
#: a scan can spend between its ``scanned_at`` and its commit (writer batches, retries)
#: or its spooling (spooled scans make stored credits stale when replayed).
SETTLE_MARGIN = dt.timedelta(minutes=5)
#: Conversions stored per statement by :func:`refresh`.
REFRESH_BATCH = 20_000
#: The advisory lock key held by a :func:`refresh` batch ("credits" in ASCII).
REFRESH_LOCK = 0x63726564697473
_HALF_LIFE_US = dt.timedelta(days=DEFAULT_HALF_LIFE_DAYS) // dt.timedelta(microseconds=1)
_MODELS: tuple[Model, ...] = attribution.MODELS

_IDS_CONVERSIONS = """
    conv AS (
        SELECT c.id, c.click_id, c.occurred_at, c.value_amount_minor, c.value_currency,
               c.credits_n, true AS counted
        FROM conversions c WHERE c.id = ANY(:ids) AND c.organization_id = :org
    )"""


def _psycopg(sql: str) -> str:
    """SQLAlchemy ``:name`` parameters as psycopg's ``%(name)s`` (casts ``::`` kept)."""
    return re.sub(r"(?<![:\w]):([a-z_]\w*)", r"%(\1)s", sql)


def _sum_weight(model: Model, alias: str) -> tuple[str, str]:
    """The touch's integer weight and its conversion's weight sum for ``model`` as
    integers (no ``numeric`` per row: sums of ``int`` are ``bigint``, of ``bigint``
    ``numeric``, exact either way)."""
    if model == "time_decay":
        return f"{alias}.w_time_decay", ":decay_units"
    w, total = _WEIGHTS[model]
    for name in ("idx", "n"):
        w = re.sub(rf"\b{name}\b", f"{alias}.{name}", w)
        total = re.sub(rf"\b{name}\b", f"{alias}.{name}", total)
    return w, total


def _weight(model: Model, alias: str) -> tuple[str, str]:
    """The touch's integer weight and its conversion's weight sum (numeric SQL) for
    ``model`` from stored or computed ``idx``, ``n`` and ``w_time_decay`` of ``alias``."""
    w, total = _sum_weight(model, alias)
    return f"CAST({w} AS numeric)", f"CAST({total} AS numeric)"


def _store_sql() -> str:
    """Store the credits of the conversions ``:ids`` of ``:org`` whose click scan is
    settled at ``:now``, and set every one's ``credits_n``."""
    weights = ",\n".join(
        f"{w} AS w_{m}, {total} AS t_{m}"
        for m in _MODELS
        if m != "time_decay"
        for w, total in [_weight(m, "t")]
    )
    splits = ",\n".join(
        f"CASE WHEN coalesce(value_amount_minor, 0) = 0 THEN 0 ELSE "
        f"{split_sql('value_amount_minor', f'w_{m}', f't_{m}', 'conversion_id', 'idx')} END"
        for m in _MODELS
    )
    return f"""
    {_journey_ctes(_IDS_CONVERSIONS)},
    unsettled AS (
        SELECT conversion_id FROM click WHERE scanned_at > :now - make_interval(secs => :settle_s)
    ),
    touch AS MATERIALIZED (
        SELECT j.conversion_id, j.scan_id AS key, j.scan_id, j.campaign_id, j.tag_id,
               j.scanned_at, conv.occurred_at, conv.counted, conv.value_amount_minor,
               conv.value_currency,
               row_number() OVER (PARTITION BY j.conversion_id
                                  ORDER BY j.scanned_at, j.scan_id) AS idx,
               count(*) OVER (PARTITION BY j.conversion_id) AS n
        FROM journey j
        JOIN conv ON conv.id = j.conversion_id
        WHERE j.conversion_id NOT IN (SELECT conversion_id FROM unsettled)
    ),
    {_TIME_DECAY_CTES},
    weighted AS (
        SELECT t.conversion_id, t.idx, t.n, t.scan_id, t.campaign_id, t.tag_id, t.scanned_at,
               t.occurred_at, t.value_amount_minor, t.value_currency,
               d.w AS w_time_decay, CAST(d.total AS numeric) AS t_time_decay,
               {weights}
        FROM touch t JOIN weight d ON d.conversion_id = t.conversion_id AND d.idx = t.idx
    ),
    stored AS (
        INSERT INTO conversion_credits (
            conversion_id, idx, organization_id, occurred_at, n, scan_id, campaign_id,
            tag_id, scanned_at, value_currency, w_time_decay,
            {", ".join(f"v_{m}" for m in _MODELS)})
        SELECT conversion_id, idx, :org, occurred_at, n, scan_id, campaign_id, tag_id,
               scanned_at, value_currency, w_time_decay,
               {splits}
        FROM weighted
        RETURNING conversion_id
    )
    UPDATE conversions c
    SET credits_n = CASE WHEN u.conversion_id IS NOT NULL THEN NULL
                         ELSE coalesce(t.n, 0) END
    FROM conv
    LEFT JOIN (SELECT DISTINCT conversion_id FROM unsettled) u ON u.conversion_id = conv.id
    LEFT JOIN (SELECT conversion_id, max(n) AS n FROM touch GROUP BY conversion_id) t
        ON t.conversion_id = conv.id
    WHERE c.id = conv.id
    """  # noqa: S608 - module constants only; every value is a bound parameter


_STORE_SQL = _psycopg(_store_sql())

_LATE_SCANS_SQL = """
WITH late AS (
    SELECT s.organization_id, s.scanned_at, s.visitor_id,
           coalesce(s.cookie_id, vc.cookie_id) AS cookie_id
    FROM scans s LEFT JOIN visitor_cookie_consents vc ON vc.click_id = s.click_id
    WHERE s.click_id = ANY(%(ids)s) AND NOT s.is_bot AND NOT s.internal
),
later AS (
    SELECT k.click_id, k.organization_id FROM late l
    JOIN scans k ON k.cookie_id = l.cookie_id AND k.scanned_at >= l.scanned_at
    WHERE k.organization_id = l.organization_id
    UNION
    SELECT k.click_id, k.organization_id FROM late l
    JOIN visitor_cookie_consents vc ON vc.cookie_id = l.cookie_id
    JOIN scans k ON k.click_id = vc.click_id AND k.scanned_at >= l.scanned_at
    WHERE k.organization_id = l.organization_id
    UNION
    SELECT k.click_id, k.organization_id FROM late l
    JOIN scans k ON k.visitor_id = l.visitor_id AND k.scanned_at >= l.scanned_at
        AND k.scanned_at < date_trunc('day', l.scanned_at, 'UTC') + interval '1 day'
    WHERE k.organization_id = l.organization_id
)
SELECT DISTINCT c.id FROM later k
JOIN conversions c ON c.click_id = k.click_id AND c.organization_id = k.organization_id
WHERE c.credits_n IS NOT NULL
"""


async def store_credits(
    conn: psycopg.AsyncConnection[Any],
    conversion_ids: Sequence[int],
    *,
    now: dt.datetime | None = None,
) -> None:
    """(Re)compute and store the credits of ``conversion_ids`` (any organizations) in
    ``conn``'s current transaction: earlier rows are replaced; a conversion whose click
    scan is younger than :data:`SETTLE_MARGIN` at ``now`` (default: the database's
    ``now()``) gets no rows and ``credits_n`` NULL. Raises ``psycopg.Error``."""
    if not conversion_ids:
        return
    ids = sorted(set(conversion_ids))
    by_org: dict[int, list[int]] = defaultdict(list)
    # Rows locked in id order: concurrent storers of one conversion (the refresh, a spool
    # replay) take turns instead of inserting the same touches twice.
    cur = await conn.execute(
        "SELECT id, organization_id FROM conversions WHERE id = ANY(%s) ORDER BY id"
        " FOR NO KEY UPDATE",
        (ids,),
    )
    for conversion_id, organization_id in await cur.fetchall():
        by_org[organization_id].append(conversion_id)
    await conn.execute("DELETE FROM conversion_credits WHERE conversion_id = ANY(%s)", (ids,))
    if now is None:
        cur = await conn.execute("SELECT now()")
        row = await cur.fetchone()
        assert row is not None
        now = row[0]
    for organization_id, org_ids in sorted(by_org.items()):
        await conn.execute(
            _STORE_SQL,
            {
                "ids": org_ids,
                "org": organization_id,
                "lookback": DEFAULT_LOOKBACK_DAYS,
                "half_life_us": _HALF_LIFE_US,
                "decay_units": attribution.TIME_DECAY_DENOMINATOR,
                "now": now,
                "settle_s": SETTLE_MARGIN.total_seconds(),
            },
        )


async def late_scans_conversions(
    conn: psycopg.AsyncConnection[Any], click_ids: Sequence[str]
) -> list[int]:
    """The conversions with stored credits whose journey a late (spooled) scan of
    ``click_ids`` may enter: their click scan shares the late scan's cookie (its own or
    consented) or its visitor id the same UTC day, in the same organization, and is not
    older (a superset: the lookback and the NFC verdict are not checked). Raises
    ``psycopg.Error``."""
    cur = await conn.execute(_LATE_SCANS_SQL, {"ids": list(click_ids)})
    return [int(row[0]) for row in await cur.fetchall()]


async def refresh(
    engine: AsyncEngine,
    *,
    now: dt.datetime | None = None,
    batch_size: int = REFRESH_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Store the credits of every conversion without them (``credits_n`` NULL: the
    backfill after the migration, stale ones, those credited within the settle margin),
    ``batch_size`` conversions per transaction in id order; ``progress(done)`` after each
    batch. Returns at once when another refresh holds :data:`REFRESH_LOCK`. Returns the
    number of conversions looked at (some may stay unsettled).
    Raises ``psycopg.Error`` / SQLAlchemy errors."""
    done, after = 0, 0
    while True:
        async with engine.begin() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            conn: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            cur = await conn.execute(
                "SELECT id FROM conversions WHERE credits_n IS NULL AND id > %s"
                " ORDER BY id LIMIT %s",
                (after, batch_size),
            )
            ids = [int(r[0]) for r in await cur.fetchall()]
            if not ids:
                return done
            # One refresher at a time (every app process runs one): the others skip.
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (REFRESH_LOCK,))
            locked = await cur.fetchone()
            if locked is None or not locked[0]:
                return done
            await conn.execute("SET LOCAL work_mem = '128MB'")
            await store_credits(conn, ids, now=now)
        done += len(ids)
        after = ids[-1]
        if progress is not None:
            progress(done)


class RefreshWorker:
    """Runs :func:`refresh` every ``interval_s`` seconds in the app (0: never), so stale
    and newly settled conversions leave the reports' live path."""

    def __init__(self, engine: AsyncEngine, *, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop (a no-op when ``interval_s`` is 0)."""
        if self._interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="passerelle-credits")

    async def stop(self) -> None:
        """Cancel the loop and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await refresh(self._engine)
            except Exception:
                log.exception("stored credits refresh failed")


def stored_credits_sql(model: Model, group_by: GroupBy) -> str:
    """The report's groups from stored credits (conversions with ``credits_n`` set), in
    the rows of :func:`campaigns.services.attribution._credits_sql`: credit rows
    ``(key, denominator, NULL, sum of weights)`` of the campaign's touches of
    conversions occurring in the window, revenue rows ``(key, NULL, currency, minor
    units)`` of their stored value splits, and of each refund dated in the window split
    by the stored weights of its conversion's whole journey. The touches are read once,
    into one aggregate per (key, weight sum, currency), which the credit and revenue rows
    then sum (a few thousand rows)."""
    key = _KEYS[group_by].replace("j.", "cc.")
    w_int, total_int = _sum_weight(model, "cc")
    w, total = _weight(model, "cc")
    refund_split = split_sql("m.amount", "w.w", "w.total", "m.conversion_id, m.event", "w.idx")
    return f"""
    WITH cr AS MATERIALIZED (
        SELECT {key} AS key, {total_int} AS total, cc.value_currency AS currency,
               sum({w_int}) AS w, sum(cc.v_{model}) AS v
        FROM conversion_credits cc LEFT JOIN tags t ON t.id = cc.tag_id
        WHERE cc.campaign_id = :campaign AND cc.organization_id = :org
          AND cc.occurred_at >= :start AND cc.occurred_at < :end
        GROUP BY 1, 2, 3
    ),
    refund AS (
        SELECT r.conversion_id, r.id AS event, -r.amount_minor AS amount,
               c.value_currency AS currency
        FROM refunds r JOIN conversions c ON c.id = r.conversion_id
        WHERE r.organization_id = :org AND r.refunded_at >= :start AND r.refunded_at < :end
          AND c.organization_id = :org AND c.credits_n > 0
    ),
    refund_weight AS (
        SELECT cc.conversion_id, cc.idx, cc.campaign_id, {key} AS key, {w} AS w,
               {total} AS total
        FROM conversion_credits cc LEFT JOIN tags t ON t.id = cc.tag_id
        WHERE cc.conversion_id IN (SELECT conversion_id FROM refund)
    ),
    refund_split AS (
        SELECT w.key, w.campaign_id, m.currency, {refund_split} AS part
        FROM refund m JOIN refund_weight w ON w.conversion_id = m.conversion_id
    )
    SELECT key, total AS denominator, NULL AS currency, sum(w) AS amount
    FROM cr GROUP BY key, total
    UNION ALL
    SELECT key, NULL, currency, sum(v) FROM cr WHERE currency IS NOT NULL
    GROUP BY key, currency
    UNION ALL
    SELECT key, NULL, currency, sum(part) FROM refund_split WHERE campaign_id = :campaign
    GROUP BY key, currency
    """  # noqa: S608 - module constants only; every value is a bound parameter
