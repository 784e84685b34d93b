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
``(visitor_id, scanned_at)`` indexes of ``scans``; credits are computed in Python with
exact fractions.
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
GROUP_BYS: tuple[GroupBy, ...] = ("tag", "location", "day")
DEFAULT_LOOKBACK_DAYS = 30
MIN_LOOKBACK_DAYS, MAX_LOOKBACK_DAYS = 1, 90
DEFAULT_HALF_LIFE_DAYS = 7.0
#: Half-lives above a year weigh every touch of a 90-day lookback almost equally (linear).
MAX_HALF_LIFE_DAYS = 365.0

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


#: The organization's conversions counted in the window, or with a refund dated in it.
#: Two branches, so the first is a range of ``(organization_id, occurred_at)`` (one
#: ``OR`` would read every conversion of the organization) and the row estimate stays
#: right for the journey joins.
_CONVERSIONS_CTE = """
    conv AS (
        SELECT c.id, c.click_id, c.occurred_at, c.value_amount_minor, c.value_currency,
               true AS counted
        FROM conversions c
        WHERE c.organization_id = :org AND c.occurred_at >= :start AND c.occurred_at < :end
        UNION
        SELECT c.id, c.click_id, c.occurred_at, c.value_amount_minor, c.value_currency,
               (c.occurred_at >= :start AND c.occurred_at < :end) AS counted
        FROM refunds r JOIN conversions c ON c.id = r.conversion_id
        WHERE r.organization_id = :org AND c.organization_id = :org
          AND r.refunded_at >= :start AND r.refunded_at < :end
    )"""

#: Conditions on an earlier touch ``s`` of the click scan ``k``: same organization,
#: before the click scan (ties on time broken by id), within the lookback, human.
_EARLIER = """
        s.organization_id = :org
        AND (s.scanned_at, s.id) < (k.scanned_at, k.scan_id)
        AND s.scanned_at >= k.occurred_at - make_interval(days => :lookback)
        AND NOT s.is_bot
        AND NOT s.internal
        AND coalesce(s.nfc_verification, 'valid') = 'valid'"""


def _journeys_sql() -> str:
    location, join = ("t.location_id", "LEFT JOIN tags t ON t.id = j.tag_id")
    return f"""
    WITH {_scans_cte()},
    {_CONVERSIONS_CTE},
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
    )
    SELECT j.conversion_id, j.scan_id, j.campaign_id, j.tag_id, j.scanned_at,
           {location} AS location_id, conv.occurred_at, conv.value_amount_minor,
           conv.value_currency, conv.counted
    FROM journey j
    JOIN conv ON conv.id = j.conversion_id
    {join}
    WHERE j.conversion_id IN (SELECT conversion_id FROM journey WHERE campaign_id = :campaign)
    ORDER BY j.conversion_id, j.scanned_at, j.scan_id
    """  # noqa: S608 - module constants only; every value is a bound parameter


_REFUNDS_SQL = """
    SELECT conversion_id, amount_minor FROM refunds
    WHERE organization_id = :org AND conversion_id = ANY(:ids)
      AND refunded_at >= :start AND refunded_at < :end
    ORDER BY conversion_id, refunded_at, id
"""


def _unattributed_sql() -> str:
    return f"""
    WITH {_scans_cte()},
    {_CONVERSIONS_CTE}
    SELECT conv.value_currency,
           count(*) FILTER (WHERE conv.counted) AS conversions,
           coalesce(sum(conv.value_amount_minor) FILTER (WHERE conv.counted), 0)
             - coalesce(sum(refunded.amount), 0) AS amount
    FROM conv
    LEFT JOIN LATERAL (
        SELECT sum(r.amount_minor) AS amount FROM refunds r
        WHERE r.conversion_id = conv.id AND r.refunded_at >= :start AND r.refunded_at < :end
    ) AS refunded ON true
    WHERE NOT EXISTS (
        SELECT 1 FROM s_all s
        WHERE s.click_id = conv.click_id AND s.organization_id = :org
          AND s.nfc_verification IS DISTINCT FROM 'invalid' AND NOT s.internal
    )
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
    if not 0 < half_life_days <= MAX_HALF_LIFE_DAYS:  # also refuses NaN
        problems.append(("half_life_days", f"must be > 0 and <= {MAX_HALF_LIFE_DAYS:g}"))
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
) -> AttributionReport:
    """The campaign's credited conversions and revenue over ``[start, end)`` (see the
    module docstring). ``half_life_days`` is only read by ``time_decay``.

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
    touches = (await session.execute(text(_journeys_sql()), params)).all()
    conversion_ids = sorted({t.conversion_id for t in touches})
    refunds: dict[int, list[int]] = defaultdict(list)
    for row in await session.execute(text(_REFUNDS_SQL), {**params, "ids": conversion_ids}):
        refunds[row.conversion_id].append(row.amount_minor)

    zone = zoneinfo.ZoneInfo(campaign.timezone)
    half_life = dt.timedelta(days=half_life_days)
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

    unattributed = await session.execute(text(_unattributed_sql()), params)
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
