"""Multi-touch attribution report of a campaign: conversions' journeys, credit per model.

Definitions (the public contract of ``GET /v1/campaigns/{id}/attribution``):

- **Conversions in the report** are the organization's conversions with ``occurred_at``
  in ``[start, end)`` (either bound open).
- **Journey** of a conversion: the scan of its click id (the *click scan*) and, before it,
  the same visitor's human scans in the same organization (any campaign) within
  ``lookback_days`` before ``occurred_at``, oldest first, ending with the click scan.

  - *Human*: ``is_bot`` false and no flagged NFC tap (verification null or ``valid``).
    Internal scans (``scans.internal``: a phone signed into the dashboard, staff testing
    a poster) are never touches.
  - *Same visitor*: scans carrying the click scan's ``cookie_id`` when it has one; else
    scans with its ``visitor_id`` on the same UTC day (visitor ids are salted per day, so
    they cannot match across days); else the click scan alone. A scan's cookie is its
    ``cookie_id``, or, for the scan whose consent page the visitor answered "yes"
    (``visitor_cookie_consent = ask``: stored before the answer, without a cookie), the
    cookie then set, read from ``visitor_cookie_consents`` (scans stay append-only).
  - The click scan is always in the journey, even older than the lookback or flagged as a
    bot or a burst (the conversion proves the click), unless it is an invalid NFC tap:
    then, as when the click id names no scan of the organization, the conversion has no
    journey and is **unattributed**. So is a conversion whose click scan is internal
    (:mod:`campaigns.crediting` never credits it either).

- **Credit**: each touch's share of the conversion under the chosen model
  (:mod:`campaigns.attribution`); a conversion's credits sum to 1. Rows show only the
  touches on this campaign's scans (a journey may cross campaigns), grouped by tag,
  location (the tag's) or day (the scan's day in the campaign's time zone).
- **Revenue**: the conversion's value split in proportion to the credits into minor
  units (largest remainder, exact sums), per currency, never converted.
- **Refunds** lower revenue from their own time on: every refund with ``refunded_at`` in
  the window is split by the same credits and the same rounding and subtracted, whether
  its conversion is in the window or earlier (then rows may show negative revenue). Each
  amount (the value, each refund) is split on its own, so reports over adjacent windows
  add up exactly; a touch's net after a partial refund can differ by one minor unit from
  splitting the net amount.
- ``totals`` is the sum of the rows; ``unattributed`` counts the organization's
  conversions in the window without a journey, and their value less their refunds dated
  in the window.

Journeys are found by SQL on the ``click_id``, ``(cookie_id, scanned_at)`` and
``(visitor_id, scanned_at)`` indexes of ``scans``. Credits and revenue splits are computed
in the same statement (:func:`_credits_sql`: window functions over each journey, integer
weights, numeric quotients and largest remainders), which returns a few rows per group;
the pure models of :mod:`campaigns.attribution` (exact fractions, one conversion at a time
in Python) stay the definition, and ``crediting="python"`` runs them on the same journeys
(tests compare both on random journeys).

**Stored credits** (:mod:`campaigns.services.credits`): at the default lookback (and
half-life, for time decay), the report sums the stored per-touch credits of settled
conversions (``conversions.credits_n`` set) and credits only the others live (the same
SQL restricted to them, :func:`_conversions_cte`); ``crediting="live"`` credits every
conversion live, as do other parameters.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import groupby
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns import attribution
from campaigns.attribution import MODELS, Model
from campaigns.errors import InvalidInput
from campaigns.schemas import (
    AttributionReport,
    AttributionTotals,
    DayAttribution,
    LocationAttribution,
    RevenueRead,
    TagAttribution,
    Unattributed,
)
from campaigns.services.campaigns import check_window, get_campaign
from campaigns.services.retention import data_since

GroupBy = Literal["tag", "location", "day"]
#: Where credits are computed: ``sql`` (in PostgreSQL, the report's path: at the default
#: lookback and half-life, settled conversions' stored credits are summed and only the
#: others credited live, see :mod:`campaigns.services.credits`), ``live`` (in
#: PostgreSQL, every conversion's journey rebuilt from the scans: the path for other
#: parameters, and the benchmark's "before") or ``python`` (the reference models of
#: :mod:`campaigns.attribution`, touch by touch: the test oracle and the benchmark's
#: baseline). All give exactly the same report.
Crediting = Literal["sql", "live", "python"]
GROUP_BYS: tuple[GroupBy, ...] = ("tag", "location", "day")
DEFAULT_LOOKBACK_DAYS = 30
MIN_LOOKBACK_DAYS, MAX_LOOKBACK_DAYS = 1, 90
DEFAULT_HALF_LIFE_DAYS = 7.0
#: ``work_mem`` of the report's transaction (PostgreSQL's default, 4MB, spills the
#: journeys' sorts and hashes to disk from about a day of a national campaign on).
REPORT_WORK_MEM = "128MB"
#: Half-lives above a year weigh every touch of a 90-day lookback almost equally (linear).
MAX_HALF_LIFE_DAYS = 365.0
#: The shortest half-life, one second in days: time decay weighs ages in microseconds, so a
#: shorter one would be no unit of time at all (and 0 µs a division by zero).
MIN_HALF_LIFE_DAYS = 1 / 86_400

#: The scan's NFC verification verdict (``valid``, ``replayed``, ``invalid``; NULL for
#: scans that are not NFC taps): flagged taps (``replayed``, ``invalid``) leave journeys,
#: and a conversion whose click scan is an ``invalid`` tap is unattributed.
NFC_VERIFICATION = "nfc_verification"


def _scans_cte() -> str:
    # Every read of scans goes through this CTE, so the NFC verdict is named once. NOT
    # MATERIALIZED: it is inlined, and each use keeps its own index scan.
    return f"""
    s_all AS NOT MATERIALIZED (
        SELECT id, click_id, organization_id, campaign_id, tag_id, scanned_at, is_bot,
               cookie_id, visitor_id, {NFC_VERIFICATION} AS nfc_verification, internal
        FROM scans
    )"""  # noqa: S608 - a constant of this module, no input


def _conversions_cte(live_only: bool = False) -> str:
    """The organization's conversions counted in the window, or with a refund dated in
    it. Two disjoint branches (no deduplicating sort of a million rows), so the first is
    a range of ``(organization_id, occurred_at)`` (one ``OR`` would read every conversion
    of the organization) and the row estimate stays right for the journey joins.
    ``live_only``: only the conversions without stored credits (``credits_n`` NULL, the
    partial index ``ix_conversions_unsettled_credits``), see
    :mod:`campaigns.services.credits`."""
    live = " AND c.credits_n IS NULL" if live_only else ""
    return f"""
    conv AS (
        SELECT c.id, c.click_id, c.occurred_at, c.value_amount_minor, c.value_currency,
               c.credits_n, true AS counted
        FROM conversions c
        WHERE c.organization_id = :org AND c.occurred_at >= :start AND c.occurred_at < :end{live}
        UNION ALL
        SELECT c.id, c.click_id, c.occurred_at, c.value_amount_minor, c.value_currency,
               c.credits_n, false AS counted
        FROM conversions c
        WHERE c.id IN (SELECT r.conversion_id FROM refunds r WHERE r.organization_id = :org
                       AND r.refunded_at >= :start AND r.refunded_at < :end)
          AND c.organization_id = :org
          AND NOT (c.occurred_at >= :start AND c.occurred_at < :end){live}
    )"""  # noqa: S608 - module constants only; every value is a bound parameter


#: Conditions on an earlier touch ``s`` of the click scan ``k``: same organization,
#: before the click scan (ties on time broken by id), within the lookback, human.
_EARLIER = """
        s.organization_id = :org
        AND (s.scanned_at, s.id) < (k.scanned_at, k.scan_id)
        AND s.scanned_at >= k.occurred_at - make_interval(days => :lookback)
        AND NOT s.is_bot
        AND NOT s.internal
        AND coalesce(s.nfc_verification, 'valid') = 'valid'"""


def _journey_ctes(conversions: str | None = None) -> str:
    """The CTEs ``s_all``, ``conv``, ``click`` and ``journey`` (one row per touch of every
    conversion of ``conv`` with a journey, any campaign), shared by both crediting paths
    and by the stored credits (:mod:`campaigns.services.credits`, whose ``conversions``
    replaces the ``conv`` CTE: same columns, one conversion per row)."""
    return f"""
    WITH {_scans_cte()},
    {conversions or _conversions_cte()},
    click AS (
        SELECT conv.id AS conversion_id, conv.occurred_at, s.id AS scan_id, s.campaign_id,
               s.tag_id, s.scanned_at, coalesce(s.cookie_id, vc.cookie_id) AS cookie_id,
               s.visitor_id
        FROM conv
        JOIN s_all s ON s.click_id = conv.click_id AND s.organization_id = :org
        LEFT JOIN visitor_cookie_consents vc ON vc.click_id = s.click_id
        WHERE s.nfc_verification IS DISTINCT FROM 'invalid' AND NOT s.internal
    ),
    journey AS (
        SELECT k.conversion_id, s.id AS scan_id, s.campaign_id, s.tag_id, s.scanned_at
        FROM click k JOIN s_all s ON s.cookie_id = k.cookie_id
        WHERE k.cookie_id IS NOT NULL AND {_EARLIER}
        UNION ALL
        SELECT k.conversion_id, s.id, s.campaign_id, s.tag_id, s.scanned_at
        FROM click k
        JOIN visitor_cookie_consents vc ON vc.cookie_id = k.cookie_id
        JOIN s_all s ON s.click_id = vc.click_id
        WHERE k.cookie_id IS NOT NULL AND {_EARLIER}
        UNION ALL
        SELECT k.conversion_id, s.id, s.campaign_id, s.tag_id, s.scanned_at
        FROM click k JOIN s_all s ON s.visitor_id = k.visitor_id
            AND s.scanned_at >= date_trunc('day', k.scanned_at, 'UTC')
            AND s.scanned_at < date_trunc('day', k.scanned_at, 'UTC') + interval '1 day'
        WHERE k.cookie_id IS NULL AND k.visitor_id IS NOT NULL AND {_EARLIER}
        UNION ALL
        SELECT conversion_id, scan_id, campaign_id, tag_id, scanned_at FROM click
    )"""  # noqa: S608 - module constants only; every value is a bound parameter


def _journeys_sql() -> str:
    location, join = ("t.location_id", "LEFT JOIN tags t ON t.id = j.tag_id")
    return f"""
    {_journey_ctes()}
    SELECT j.conversion_id, j.scan_id, j.campaign_id, j.tag_id, j.scanned_at,
           {location} AS location_id, conv.occurred_at, conv.value_amount_minor,
           conv.value_currency, conv.counted
    FROM journey j
    JOIN conv ON conv.id = j.conversion_id
    {join}
    WHERE j.conversion_id IN (SELECT conversion_id FROM journey WHERE campaign_id = :campaign)
    ORDER BY j.conversion_id, j.scanned_at, j.scan_id
    """  # noqa: S608 - module constants only; every value is a bound parameter


#: Each touch's weight ``w`` and its conversion's weight sum ``total`` (integers), so the
#: touch's credit is exactly ``w / total``: :func:`campaigns.attribution.credits` in
#: integers. ``idx`` is the touch's rank in its journey (1 = oldest), ``n`` its length.
_WEIGHTS: dict[Model, tuple[str, str]] = {
    "last_touch": ("(idx = n)::int", "1"),
    "first_touch": ("(idx = 1)::int", "1"),
    "linear": ("1", "n"),
    "position_based": (
        "CASE WHEN n <= 2 THEN 1 WHEN idx = 1 OR idx = n THEN 2 * (n - 2) ELSE 1 END",
        "CASE WHEN n <= 2 THEN n ELSE 5 * (n - 2) END",
    ),
}

#: Time decay in integers, as :func:`campaigns.attribution._time_decay` does it: ages in
#: microseconds (never negative), ``x = (age - youngest) / half-life`` in double
#: precision (both operands are exact in a double below 2^53 µs, and IEEE division is
#: correctly rounded, as Python's int / int), the weight ``2 ^ -x`` by the same C
#: ``pow()`` (0 from ``x >= 1075`` on, where the double underflows; PostgreSQL would
#: raise), then each double's exact value ``m * 2^q`` from its IEEE 754 bits, scaled to
#: integers ``m * 2^(q - qmin)`` over the conversion (``qmin`` over non-zero weights), and
#: :data:`~campaigns.attribution.TIME_DECAY_DENOMINATOR` units apportioned among them by
#: largest remainder, ties to the earlier touch.
_TIME_DECAY_CTES = """
    decay_age AS (
        SELECT t.*, greatest(0, (extract(epoch FROM t.occurred_at)
                                 - extract(epoch FROM t.scanned_at)) * 1000000)::bigint AS age
        FROM touch t
    ),
    decay_bits AS (
        SELECT d.*, CASE WHEN d.x >= 1075 THEN 0 ELSE
                    ('x' || encode(float8send(2::float8 ^ (-d.x)), 'hex'))::bit(64)::bigint
                    END AS bits
        FROM (SELECT a.*, (a.age - min(a.age) OVER (PARTITION BY a.conversion_id))::float8
                          / CAST(:half_life_us AS bigint)::float8 AS x
              FROM decay_age a) d
    ),
    decay_int AS (
        SELECT b.*, CASE WHEN b.m = 0 THEN 0::numeric
                    ELSE b.m * 2::numeric ^ (b.q - min(b.q) FILTER (WHERE b.m > 0)
                                                   OVER (PARTITION BY b.conversion_id))
                    END AS big
        FROM (SELECT d.*, CASE WHEN d.bits >> 52 = 0 THEN d.bits
                          ELSE (d.bits & 4503599627370495) | 4503599627370496 END AS m,
                     greatest(d.bits >> 52, 1) - 1075 AS q
              FROM decay_bits d) b
    ),
    decay_floor AS (
        SELECT i.*, div(:decay_units * i.big, sum(i.big) OVER c) AS fl,
               mod(:decay_units * i.big, sum(i.big) OVER c) AS rem
        FROM decay_int i WINDOW c AS (PARTITION BY i.conversion_id)
    ),
    weight AS MATERIALIZED (
        SELECT conversion_id, idx, campaign_id, key, counted,
               fl + CASE WHEN row_number() OVER (PARTITION BY conversion_id
                                                 ORDER BY rem DESC, idx)
                              <= :decay_units - sum(fl) OVER (PARTITION BY conversion_id)
                         THEN 1 ELSE 0 END AS w,
               :decay_units AS total
        FROM decay_floor
    )"""

#: Group keys of the touches (``t`` is the touch's tag). Days are grouped by UTC quarter
#: hour in SQL and turned into local dates in Python with :mod:`zoneinfo` (the report's
#: zone data, not PostgreSQL's), see :func:`_sql_groups`.
_KEYS: dict[GroupBy, str] = {
    "tag": "j.tag_id",
    "location": "t.location_id",
    "day": "date_bin('15 minutes', j.scanned_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
}
_QUARTER = dt.timedelta(minutes=15)


def split_sql(amount: str, w: str, total: str, partition: str, idx: str) -> str:
    """SQL for one touch's part of ``amount`` (an integer expression, minor units) split
    by the weights ``w`` over ``total`` among the rows of ``partition`` (one money event):
    the quotient plus one unit for the largest remainders, ties to the earlier touch
    (``idx``); a negative amount (a refund) split as its absolute value, then negated.
    The SQL twin of :func:`campaigns.attribution.apportion`, used by the report and by
    the stored credits (:mod:`campaigns.services.credits`)."""
    return f"""CAST(sign({amount}) AS int) * (
        div(abs({amount}) * {w}, {total})
        + CASE WHEN row_number() OVER (PARTITION BY {partition}
                                       ORDER BY mod(abs({amount}) * {w}, {total}) DESC, {idx})
                    <= abs({amount}) - sum(div(abs({amount}) * {w}, {total}))
                                       OVER (PARTITION BY {partition})
               THEN 1 ELSE 0 END)"""


def _credits_sql(model: Model, group_by: GroupBy, live_only: bool = False) -> str:
    """Credits and revenue of the campaign's touches per group, computed in PostgreSQL
    with exactly the arithmetic of :mod:`campaigns.attribution` (integers and numeric,
    never floating sums): rows ``(key, denominator, currency, amount)``, either a credit
    row (``currency`` NULL: the counted touches' weights sum ``amount`` over their
    conversions' weight sum ``denominator``, so the credit is ``amount / denominator``)
    or a revenue row (``denominator`` NULL: minor units of ``currency``). ``live_only``:
    only the conversions without stored credits (:func:`_conversions_cte`)."""
    if model == "time_decay":
        weight = _TIME_DECAY_CTES
    else:
        w, total = _WEIGHTS[model]
        weight = f"""
    weight AS MATERIALIZED (
        SELECT conversion_id, idx, campaign_id, key, counted,
               CAST({w} AS numeric) AS w, CAST({total} AS numeric) AS total
        FROM touch
    )"""  # noqa: S608 - module constants only
    return f"""
    {_journey_ctes(_conversions_cte(live_only))},
    touch AS MATERIALIZED (
        SELECT j.conversion_id, j.campaign_id, j.scanned_at, {_KEYS[group_by]} AS key,
               conv.occurred_at, conv.counted,
               row_number() OVER (PARTITION BY j.conversion_id
                                  ORDER BY j.scanned_at, j.scan_id) AS idx,
               count(*) OVER (PARTITION BY j.conversion_id) AS n
        FROM journey j
        JOIN conv ON conv.id = j.conversion_id
        LEFT JOIN tags t ON t.id = j.tag_id
        WHERE j.conversion_id IN (SELECT conversion_id FROM journey WHERE campaign_id = :campaign)
    ),
    {weight},
    money AS (
        -- The conversion's value when counted, then each refund dated in the window: each
        -- amount is split on its own (a refund as its absolute value, then negated).
        SELECT conv.id AS conversion_id, 0::bigint AS event, conv.value_amount_minor AS amount,
               conv.value_currency AS currency
        FROM conv WHERE conv.counted AND conv.value_amount_minor <> 0
        UNION ALL
        SELECT r.conversion_id, r.id, -r.amount_minor, conv.value_currency
        FROM refunds r JOIN conv ON conv.id = r.conversion_id
        WHERE r.organization_id = :org AND r.refunded_at >= :start AND r.refunded_at < :end
    ),
    split AS (
        SELECT w.key, w.campaign_id, m.currency,
               {split_sql("m.amount", "w.w", "w.total", "m.conversion_id, m.event", "w.idx")}
                   AS part
        FROM money m JOIN weight w ON w.conversion_id = m.conversion_id
    )
    SELECT key, total AS denominator, NULL AS currency, sum(w) AS amount
    FROM weight WHERE campaign_id = :campaign AND counted
    GROUP BY key, total
    UNION ALL
    SELECT key, NULL, currency, sum(part)
    FROM split WHERE campaign_id = :campaign
    GROUP BY key, currency
    """  # noqa: S608 - module constants only; every value is a bound parameter


_REFUNDS_SQL = """
    SELECT conversion_id, amount_minor FROM refunds
    WHERE organization_id = :org AND conversion_id = ANY(:ids)
      AND refunded_at >= :start AND refunded_at < :end
    ORDER BY conversion_id, refunded_at, id
"""


def _unattributed_sql(stored: bool = False) -> str:
    """Unattributed conversions per currency (count, value less refunds in the window).
    ``stored``: a conversion with stored credits has a journey if and only if
    ``credits_n > 0`` (no click-id probe); the others are probed."""
    known = "conv.credits_n IS NOT NULL AND " if stored else "false AND "
    probe = "conv.credits_n IS NULL AND " if stored else ""
    return f"""
    WITH {_scans_cte()},
    {_conversions_cte()}
    SELECT conv.value_currency,
           count(*) FILTER (WHERE conv.counted) AS conversions,
           coalesce(sum(conv.value_amount_minor) FILTER (WHERE conv.counted), 0)
             - coalesce(sum(refunded.amount), 0) AS amount
    FROM conv
    LEFT JOIN LATERAL (
        SELECT sum(r.amount_minor) AS amount FROM refunds r
        WHERE r.conversion_id = conv.id AND r.refunded_at >= :start AND r.refunded_at < :end
    ) AS refunded ON true
    WHERE ({known}conv.credits_n = 0) OR ({probe}NOT EXISTS (
        SELECT 1 FROM s_all s
        WHERE s.click_id = conv.click_id AND s.organization_id = :org
          AND s.nfc_verification IS DISTINCT FROM 'invalid' AND NOT s.internal
    ))
    GROUP BY conv.value_currency
    """  # noqa: S608 - module constants only; every value is a bound parameter


@dataclass
class _Group:
    credit: Fraction = Fraction(0)
    revenue: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _revenue(amounts: dict[str, int]) -> list[RevenueRead]:
    """Non-zero amounts per currency, sorted by ISO 4217 code."""
    return [RevenueRead(currency=c, amount_minor=amounts[c]) for c in sorted(amounts) if amounts[c]]


def _check_parameters(model: str, group_by: str, lookback_days: int, half_life_days: float) -> None:
    problems = []
    if model not in MODELS:
        problems.append(("model", f"must be one of {', '.join(MODELS)}"))
    if group_by not in GROUP_BYS:
        problems.append(("group_by", f"must be one of {', '.join(GROUP_BYS)}"))
    if not MIN_LOOKBACK_DAYS <= lookback_days <= MAX_LOOKBACK_DAYS:
        problems.append(("lookback_days", f"must be {MIN_LOOKBACK_DAYS} to {MAX_LOOKBACK_DAYS}"))
    if not MIN_HALF_LIFE_DAYS <= half_life_days <= MAX_HALF_LIFE_DAYS:  # also refuses NaN
        problems.append(
            (
                "half_life_days",
                f"must be one second (1/86400 day) to {MAX_HALF_LIFE_DAYS:g} days",
            )
        )
    if problems:
        raise InvalidInput(
            "; ".join(f"{name}: {msg}" for name, msg in problems),
            errors=[{"loc": ["query", n], "msg": m, "type": "value_error"} for n, m in problems],
        )


async def attribution_report(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    model: Model = "last_touch",
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    group_by: GroupBy = "tag",
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    crediting: Crediting = "sql",
) -> AttributionReport:
    """The campaign's credited conversions and revenue over ``[start, end)`` (see the
    module docstring). ``half_life_days`` is only read by ``time_decay``. ``crediting``
    chooses where credits are computed (:data:`Crediting`; the same report either way):
    with ``sql`` at the default lookback (and half-life, for time decay), settled
    conversions' stored credits are summed (:mod:`campaigns.services.credits`) and only
    the others are credited live.

    Raises :class:`NotFound` (``campaign_not_found``: another organization's or deleted),
    :class:`InvalidInput`: ``validation_error`` (unknown model or group, lookback outside
    1..90 days, half-life outside (0, 365] days, naive bound), ``invalid_window``.
    """
    _check_parameters(model, group_by, lookback_days, half_life_days)
    check_window(start, end)
    campaign = await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    params: dict[str, Any] = {
        "org": organization_id,
        "campaign": campaign_id,
        "lookback": lookback_days,
        "start": start or dt.datetime.min.replace(tzinfo=dt.UTC),
        "end": end or dt.datetime.max.replace(tzinfo=dt.UTC),
    }
    half_life = dt.timedelta(days=half_life_days)
    # Hashes and sorts over a campaign's journeys (millions of touches) stay in memory
    # instead of spilling to temporary files; for this transaction only.
    await session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
    groups = None
    # Stored credits are those of the default lookback and half-life (the half-life only
    # matters to time decay); other parameters rebuild every journey.
    stored = (
        crediting == "sql"
        and lookback_days == DEFAULT_LOOKBACK_DAYS
        and (model != "time_decay" or half_life_days == DEFAULT_HALF_LIFE_DAYS)
    )
    if stored:
        # Imported here: campaigns.services.credits builds on this module's SQL.
        from campaigns.services.credits import stored_credits_sql

        # A sum over stored rows: JIT compilation (~0.3 s per statement at a campaign's
        # row estimates) would cost more than it saves.
        await session.execute(text("SET LOCAL jit = off"))
        statements = [stored_credits_sql(model, group_by), _credits_sql(model, group_by, True)]
        groups = await _sql_groups(
            session, params, statements, group_by, campaign.timezone, half_life
        )
    elif crediting in ("sql", "live"):
        statements = [_credits_sql(model, group_by)]
        groups = await _sql_groups(
            session, params, statements, group_by, campaign.timezone, half_life
        )
    if groups is None:
        groups = await _python_groups(
            session, params, model, group_by, campaign.timezone, half_life, campaign_id
        )

    unattributed = await session.execute(text(_unattributed_sql(stored)), params)
    lost_count, lost_revenue = 0, {}
    for row in unattributed:
        lost_count += row.conversions
        if row.value_currency is not None:
            lost_revenue[row.value_currency] = int(row.amount)

    # A group whose touches earned nothing (a first touch's later scans) is no row.
    ordered = sorted(
        (
            (key, group)
            for key, group in groups.items()
            if group.credit or any(group.revenue.values())
        ),
        key=lambda item: (item[0] is None, item[0] or 0),
    )
    rows_out: Any = [_row(group_by, key, group) for key, group in ordered]
    total_revenue: dict[str, int] = defaultdict(int)
    for _, group in ordered:
        for currency, amount in group.revenue.items():
            total_revenue[currency] += amount
    return AttributionReport(
        campaign_id=campaign_id,
        model=model,
        group_by=group_by,
        lookback_days=lookback_days,
        half_life_days=half_life_days,
        timezone=campaign.timezone,
        from_=start,
        to=end,
        rows=rows_out,
        totals=AttributionTotals(
            conversions=float(sum((g.credit for _, g in ordered), Fraction(0))),
            revenue=_revenue(total_revenue),
        ),
        unattributed=Unattributed(conversions=lost_count, revenue=_revenue(lost_revenue)),
        data_since=await data_since(session, organization_id=organization_id),
    )


async def _python_groups(
    session: AsyncSession,
    params: dict[str, Any],
    model: Model,
    group_by: GroupBy,
    timezone: str,
    half_life: dt.timedelta,
    campaign_id: int,
) -> dict[Any, _Group]:
    """The report's groups by the reference path: every touch read into Python and
    credited by :func:`campaigns.attribution.credits` and :func:`_split` (exact
    fractions), one conversion at a time."""
    touches = (await session.execute(text(_journeys_sql()), params)).all()
    conversion_ids = sorted({t.conversion_id for t in touches})
    refunds: dict[int, list[int]] = defaultdict(list)
    for row in await session.execute(text(_REFUNDS_SQL), {**params, "ids": conversion_ids}):
        refunds[row.conversion_id].append(row.amount_minor)

    zone = zoneinfo.ZoneInfo(timezone)
    groups: dict[Any, _Group] = defaultdict(_Group)
    for conversion_id, rows in groupby(touches, key=lambda t: t.conversion_id):
        journey = list(rows)
        first = journey[0]
        credits = attribution.credits(
            model, [t.scanned_at for t in journey], first.occurred_at, half_life=half_life
        )
        # Money events of this conversion in the window: its value (when counted), then
        # each refund dated in the window, negated. Each is split on its own.
        amounts = [first.value_amount_minor] if first.counted and first.value_amount_minor else []
        amounts += [-r for r in refunds.get(conversion_id, [])]
        splits = [_split(amount, credits) for amount in amounts]
        for i, touch in enumerate(journey):
            if touch.campaign_id != campaign_id:
                continue  # credit earned by another campaign's scan: its own report
            group = groups[_key(group_by, touch, zone)]
            if first.counted:
                group.credit += credits[i]
            for split in splits:
                group.revenue[first.value_currency] += split[i]
    return groups


async def _sql_groups(
    session: AsyncSession,
    params: dict[str, Any],
    statements: list[str],
    group_by: GroupBy,
    timezone: str,
    half_life: dt.timedelta,
) -> dict[Any, _Group] | None:
    """The report's groups by ``statements`` (:func:`_credits_sql`, and
    :func:`campaigns.services.credits.stored_credits_sql` for the stored credits; each
    over its own conversions, same rows): PostgreSQL credits every touch and
    sums per group; Python only adds the few ``amount / denominator`` credit rows as
    exact fractions (a few distinct denominators: journey lengths, or 10^15). Days come
    back per UTC quarter hour and are mapped to local dates here; None when a quarter
    hour straddles a local midnight (only zones' historical local mean times, whose
    offsets are not whole quarter hours): the caller then credits in Python."""
    sql_params = {
        **params,
        "half_life_us": half_life // dt.timedelta(microseconds=1),
        "decay_units": attribution.TIME_DECAY_DENOMINATOR,
    }
    zone = zoneinfo.ZoneInfo(timezone)
    groups: dict[Any, _Group] = defaultdict(_Group)
    rows = [row for sql in statements for row in await session.execute(text(sql), sql_params)]
    for row in rows:
        if group_by == "day":
            key = row.key.astimezone(zone).date()
            last = row.key + _QUARTER - dt.timedelta(microseconds=1)
            if last.astimezone(zone).date() != key:
                return None
        else:
            key = None if row.key is None else int(row.key)
        group = groups[key]
        if row.currency is None:
            group.credit += Fraction(int(row.amount), int(row.denominator))
        else:
            group.revenue[row.currency] += int(row.amount)
    return groups


def _split(amount: int, credits: list[Fraction]) -> list[int]:
    """``amount`` (negative for a refund) split by :func:`attribution.apportion`; a
    negative amount is split as its absolute value, so a refund mirrors a value."""
    parts = attribution.apportion(abs(amount), credits)
    return parts if amount >= 0 else [-part for part in parts]


def _key(group_by: GroupBy, touch: Any, zone: zoneinfo.ZoneInfo) -> int | dt.date | None:
    """The touch's group: its tag, its tag's location (None: none) or its local date."""
    if group_by == "tag":
        return int(touch.tag_id)
    if group_by == "location":
        return None if touch.location_id is None else int(touch.location_id)
    return touch.scanned_at.astimezone(zone).date()  # type: ignore[no-any-return]


def _row(
    group_by: GroupBy, key: Any, group: _Group
) -> TagAttribution | LocationAttribution | DayAttribution:
    figures = {"conversions": float(group.credit), "revenue": _revenue(group.revenue)}
    if group_by == "tag":
        return TagAttribution(tag_id=key, **figures)
    if group_by == "location":
        return LocationAttribution(location_id=key, **figures)
    return DayAttribution(day=key, **figures)
