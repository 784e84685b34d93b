"""Campaign statistics over a time window: scans, visitors, conversions, revenue, by tag.

Definitions (the public contract of ``GET /v1/campaigns/{id}/stats``):

- The window is ``[start, end)``: ``start`` inclusive, ``end`` exclusive, either open.
  Scans are placed by ``scanned_at``, conversions by ``occurred_at``.
- ``scans`` counts human scans (``is_bot`` false); ``bot_scans`` the others (crawlers,
  link previewers and checkers, prefetches, ``HEAD`` requests), split by their stored
  ``bot_reason`` in ``bot_scans_by_reason`` (every reason of
  :data:`~campaigns.scanning.record.BOT_REASONS`, zeros included; scans stored before
  reasons existed count in ``bot_scans`` only). ``burst_scans`` counts the human scans
  flagged ``burst`` (from an address past the per-address rate: carrier NAT, venue
  Wi-Fi, or a flood): they are part of ``scans``. Every outcome counts (redirect and
  fallback).
- NFC taps of NTAG 424 DNA tags (``nfc_sun``) carry the verdict of their SUN message
  (``scans.nfc_verification``): only ``valid`` taps count in ``scans``, ``bot_scans``,
  ``burst_scans`` and ``unique_visitors``; ``replayed_taps`` counts the authentic
  messages already used (a reload, a copied URL), ``invalid_taps`` the ones that failed
  verification (forged, another tag's, missing or malformed parameters), bots or not,
  and neither counts anywhere else. Other scans have no verdict and count as before.
- ``unique_visitors`` counts distinct ``visitor_id`` among human scans. A visitor id is
  a MAC of (organization, IPv4 address or IPv6 /64, user agent) under a salt that
  changes every UTC day and is then forgotten (campaigns.scanning.visitors), so the same
  person is one visitor within a day and a new one the next: over a window of several
  days the figure is the **sum of daily uniques**, an upper bound of distinct people.
  Per tag, a person who scanned two tags the same day counts once for each tag but once
  for the campaign.
- ``conversions`` counts conversions attributed to the campaign (their click id is the
  click id of one of its scans, last touch); ``revenue`` sums their values per currency
  (never converted between currencies); conversions without a value count but add no
  revenue.
- Refunds lower ``revenue`` from their own time on: a refund dated (``refunded_at``) in
  the window is subtracted from the revenue of its conversion's tag and currency, whether
  the conversion is in the window or earlier (so revenue can be negative), as in the
  attribution report; reports over adjacent windows add up.
- ``conversion_rate`` is ``conversions / scans`` (human scans), ``0.0`` when there are
  no scans. A conversion is counted in the window of its ``occurred_at``, which may hold
  its scan or not, and one click can bring several conversions, so the rate may exceed 1.

- ``series`` (with ``interval`` ``hour``, ``day`` or ``week``): one point per bucket of
  the time zone ``tz`` (default the campaign's), buckets starting at local hours, local
  midnights or Mondays 00:00 (ISO weeks), so a day is 23 or 25 hours long on a daylight
  saving change. Each point has ``scans``, ``unique_visitors``, ``conversions`` and
  ``revenue`` of that bucket with the definitions above (a visitor scanning across two
  buckets counts in both). Buckets run from the one holding ``start`` (else the first
  scan, conversion or refund of the campaign) to the one holding ``end`` (else now),
  empty ones included; the first and last may be partly outside the window, only the
  window's events count. More than :data:`MAX_BUCKETS` buckets is refused.
- ``cost`` is the campaign's cost; ``roas`` is the revenue credited to the campaign by
  the attribution ``model`` (the ``totals`` of
  :func:`campaigns.services.attribution.attribution_report` for the same window, default
  lookback) in the cost's currency divided by the cost (other currencies are ignored,
  never converted); null without a cost or with a zero cost.
- ``breakdowns``: for each of ``channel``, ``device_type``, ``os`` and ``country`` (null
  for scans not geolocated), the human scans per value and the window's conversions whose
  click scan (last touch) has that value.

Each figure comes from aggregate SQL (``GROUP BY ROLLUP`` / ``GROUPING SETS`` give the
per-tag and campaign totals in one pass) on the ``(campaign_id, scanned_at)`` and
``(campaign_id, occurred_at)`` indexes; Python only reshapes the few aggregate rows.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, distinct, func, literal, select, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.attribution import Model
from campaigns.errors import InvalidInput
from campaigns.models import Campaign, Conversion, Refund, Scan, Tag
from campaigns.scanning.record import BOT_REASONS
from campaigns.schemas import (
    BreakdownRow,
    Breakdowns,
    CampaignStats,
    Interval,
    Money,
    RevenueRead,
    SeriesPoint,
    TagStats,
)
from campaigns.services.attribution import attribution_report
from campaigns.services.campaigns import check_window, get_campaign

#: Most buckets one series may hold (about 14 months of hours, 27 years of days).
MAX_BUCKETS: Final = 10_000
_STEP: Final[dict[str, dt.timedelta]] = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(weeks=1),
}
#: The scan attributes of ``breakdowns``.
BREAKDOWN_KEYS: Final = ("channel", "device_type", "os", "country")


def _rate(conversions: int, scans: int) -> float:
    return conversions / scans if scans else 0.0


def _revenue(amounts: dict[str, int]) -> list[RevenueRead]:
    return [RevenueRead(currency=c, amount_minor=amounts[c]) for c in sorted(amounts)]


def _window_where(
    column: Any, start: dt.datetime | None, end: dt.datetime | None
) -> list[ColumnElement[bool]]:
    where = []
    if start is not None:
        where.append(column >= start)
    if end is not None:
        where.append(column < end)
    return where


def _counted() -> ColumnElement[bool]:
    """A scan counts unless it is an NFC tap that failed or was replayed."""
    return func.coalesce(Scan.nfc_verification, "valid") == "valid"


def _human() -> ColumnElement[bool]:
    return and_(Scan.is_bot.is_(False), _counted())


async def campaign_stats(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    interval: Interval | None = None,
    tz: str | None = None,
    model: Model = "last_touch",
) -> CampaignStats:
    """Figures of one campaign over ``[start, end)`` (see the module docstring), with a
    ``series`` of ``interval`` buckets in the IANA time zone ``tz`` (default the
    campaign's; the caller validates the name, e.g. with ``schemas.Timezone``) when
    ``interval`` is given, and ``roas`` under the attribution ``model``.

    Raises :class:`NotFound` (``campaign_not_found``) for a campaign of another
    organization or a deleted one, :class:`InvalidInput` (``invalid_window``) when
    ``end <= start``, (``validation_error``) when a bound has no timezone or the model is
    unknown, (``too_many_buckets``) past :data:`MAX_BUCKETS`.
    """
    check_window(start, end)
    campaign = await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    zone = tz or campaign.timezone
    series: list[SeriesPoint] | None = None
    if interval is not None:
        plan = await plan_series(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            start=start,
            end=end,
            interval=interval,
            tz=tz,
        )
        series = [point async for point in series_points(session, plan)]

    scan_where = [
        Scan.organization_id == organization_id,
        Scan.campaign_id == campaign_id,
        *_window_where(Scan.scanned_at, start, end),
    ]
    tags = (
        await session.execute(
            select(Tag.id, Tag.code, Tag.label)
            .where(Tag.organization_id == organization_id, Tag.campaign_id == campaign_id)
            .order_by(Tag.id)
        )
    ).all()

    # One row per tag plus the campaign total (grouping(tag_id) = 1). The total is computed
    # by SQL, not summed: unique visitors do not add up across tags.
    counted, human = _counted(), _human()
    scan_rows = (
        await session.execute(
            select(
                func.grouping(Scan.tag_id).label("is_total"),
                Scan.tag_id,
                func.count().filter(human).label("scans"),
                func.count().filter(Scan.is_bot.is_(True), counted).label("bot_scans"),
                func.count().filter(human, Scan.burst.is_(True)).label("burst_scans"),
                func.count().filter(Scan.nfc_verification == "replayed").label("replayed"),
                func.count().filter(Scan.nfc_verification == "invalid").label("invalid"),
                *(
                    func.count().filter(Scan.bot_reason == reason, counted).label(f"bot_{reason}")
                    for reason in BOT_REASONS
                ),
                func.count(distinct(Scan.visitor_id)).filter(human).label("visitors"),
            )
            .where(*scan_where)
            .group_by(func.rollup(Scan.tag_id))
        )
    ).all()

    # Money events of the window: each conversion (counted once, with its value) and each
    # refund dated in the window (negative, counted as no conversion), per (tag, currency)
    # and per currency (all tags, including conversions whose tag was since removed);
    # currency NULL = conversions without value.
    events = union_all(
        select(
            Conversion.tag_id,
            Conversion.value_currency.label("currency"),
            literal(1).label("n"),
            Conversion.value_amount_minor.label("amount"),
        ).where(
            Conversion.organization_id == organization_id,
            Conversion.campaign_id == campaign_id,
            *_window_where(Conversion.occurred_at, start, end),
        ),
        select(
            Conversion.tag_id,
            Conversion.value_currency.label("currency"),
            literal(0).label("n"),
            (-Refund.amount_minor).label("amount"),
        )
        .join(Refund, Refund.conversion_id == Conversion.id)
        .where(
            Conversion.organization_id == organization_id,
            Conversion.campaign_id == campaign_id,
            *_window_where(Refund.refunded_at, start, end),
        ),
    ).subquery()
    conversion_rows = (
        await session.execute(
            select(
                func.grouping(events.c.tag_id).label("all_tags"),
                events.c.tag_id,
                events.c.currency,
                func.sum(events.c.n).label("conversions"),
                func.coalesce(func.sum(events.c.amount), 0).label("amount"),
            ).group_by(
                func.grouping_sets(
                    tuple_(events.c.tag_id, events.c.currency), tuple_(events.c.currency)
                )
            )
        )
    ).all()

    empty: dict[str, Any] = {
        "scans": 0,
        "bot_scans": 0,
        "burst_scans": 0,
        "replayed": 0,
        "invalid": 0,
        "by_reason": dict.fromkeys(BOT_REASONS, 0),
        "visitors": 0,
    }
    total_scans = empty
    tag_scans: dict[int, dict[str, Any]] = {}
    for row in scan_rows:
        figures = {
            "scans": row.scans,
            "bot_scans": row.bot_scans,
            "burst_scans": row.burst_scans,
            "replayed": row.replayed,
            "invalid": row.invalid,
            "by_reason": {reason: row._mapping[f"bot_{reason}"] for reason in BOT_REASONS},
            "visitors": row.visitors,
        }
        if row.is_total:
            total_scans = figures
        else:
            tag_scans[row.tag_id] = figures

    total_conversions = 0
    total_revenue: dict[str, int] = {}
    tag_conversions: dict[int, int] = defaultdict(int)
    tag_revenue: dict[int, dict[str, int]] = defaultdict(dict)
    for row in conversion_rows:
        amount, count = int(row.amount), int(row.conversions)
        if row.all_tags:
            total_conversions += count
            if row.currency is not None:
                total_revenue[row.currency] = amount
        elif row.tag_id is not None:
            tag_conversions[row.tag_id] += count
            if row.currency is not None:
                tag_revenue[row.tag_id][row.currency] = amount

    by_tag = []
    for tag in tags:
        figures = tag_scans.get(tag.id, empty)
        by_tag.append(
            TagStats(
                tag_id=tag.id,
                code=tag.code,
                label=tag.label,
                scans=figures["scans"],
                bot_scans=figures["bot_scans"],
                bot_scans_by_reason=figures["by_reason"],
                burst_scans=figures["burst_scans"],
                replayed_taps=figures["replayed"],
                invalid_taps=figures["invalid"],
                unique_visitors=figures["visitors"],
                conversions=tag_conversions[tag.id],
                revenue=_revenue(tag_revenue[tag.id]),
                conversion_rate=_rate(tag_conversions[tag.id], figures["scans"]),
            )
        )

    cost, roas = await _cost_and_roas(
        session,
        campaign,
        organization_id=organization_id,
        model=model,
        start=start,
        end=end,
    )
    return CampaignStats(
        campaign_id=campaign_id,
        from_=start,
        to=end,
        scans=total_scans["scans"],
        bot_scans=total_scans["bot_scans"],
        bot_scans_by_reason=total_scans["by_reason"],
        burst_scans=total_scans["burst_scans"],
        replayed_taps=total_scans["replayed"],
        invalid_taps=total_scans["invalid"],
        unique_visitors=total_scans["visitors"],
        conversions=total_conversions,
        revenue=_revenue(total_revenue),
        conversion_rate=_rate(total_conversions, total_scans["scans"]),
        by_tag=by_tag,
        timezone=zone,
        interval=interval,
        series=series,
        cost=cost,
        roas=roas,
        breakdowns=await _breakdowns(
            session, organization_id=organization_id, campaign_id=campaign_id, start=start, end=end
        ),
    )


async def _cost_and_roas(
    session: AsyncSession,
    campaign: Campaign,
    *,
    organization_id: int,
    model: Model,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> tuple[Money | None, float | None]:
    """The campaign's cost and its return: credited revenue in the cost's currency / cost.
    The attribution report is only computed when there is a cost to divide by."""
    if campaign.cost_amount_minor is None or campaign.cost_currency is None:
        return None, None
    cost = Money(amount_minor=campaign.cost_amount_minor, currency=campaign.cost_currency)
    if cost.amount_minor == 0:
        return cost, None
    report = await attribution_report(
        session,
        organization_id=organization_id,
        campaign_id=campaign.id,
        model=model,
        start=start,
        end=end,
    )
    credited = sum(r.amount_minor for r in report.totals.revenue if r.currency == cost.currency)
    return cost, credited / cost.amount_minor


async def _breakdowns(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> Breakdowns:
    """Human scans per attribute value and conversions of the window credited to a scan
    with that value (its click scan, ``conversions.scan_id``), in two grouping-sets
    queries."""
    columns = {key: getattr(Scan, key) for key in BREAKDOWN_KEYS}
    scope = [Scan.organization_id == organization_id, Scan.campaign_id == campaign_id]
    scans = select(
        *(func.grouping(c).label(f"g_{k}") for k, c in columns.items()),
        *(c.label(k) for k, c in columns.items()),
        func.count().label("n"),
    ).where(*scope, _human(), *_window_where(Scan.scanned_at, start, end))
    conversions = (
        select(
            *(func.grouping(c).label(f"g_{k}") for k, c in columns.items()),
            *(c.label(k) for k, c in columns.items()),
            func.count().label("n"),
        )
        .select_from(Conversion)
        .join(Scan, Scan.id == Conversion.scan_id)
        .where(
            *scope,
            Conversion.organization_id == organization_id,
            Conversion.campaign_id == campaign_id,
            *_window_where(Conversion.occurred_at, start, end),
        )
    )
    sets = func.grouping_sets(*(tuple_(c) for c in columns.values()))
    figures: dict[str, dict[str | None, list[int]]] = {k: {} for k in columns}
    for index, query in enumerate((scans, conversions)):
        for row in await session.execute(query.group_by(sets)):
            # grouping(c) = 0 for the one column this row is grouped by.
            key = next(k for k in columns if row._mapping[f"g_{k}"] == 0)
            counts = figures[key].setdefault(row._mapping[key], [0, 0])
            counts[index] = int(row.n)
    lists = {
        key: [
            BreakdownRow(key=value, scans=counts[0], conversions=counts[1])
            for value, counts in sorted(
                figures.get(key, {}).items(), key=lambda item: (-item[1][0], item[0] or "")
            )
        ]
        for key in BREAKDOWN_KEYS
    }
    return Breakdowns(**lists)


@dataclass(frozen=True)
class SeriesPlan:
    """A checked series query: bucket ``interval`` in time zone ``tz`` from the bucket
    holding ``first`` to the one holding ``last`` (both aware; ``first`` None: no data,
    no buckets), counting events in ``[start, end)``; ``currencies`` are the ISO 4217
    codes its revenue can carry (sorted), for column layouts known before streaming."""

    organization_id: int
    campaign_id: int
    interval: Interval
    tz: str
    start: dt.datetime | None
    end: dt.datetime | None
    first: dt.datetime | None
    last: dt.datetime
    currencies: tuple[str, ...]


_FIRST_EVENT_SQL = """
    SELECT least(
        (SELECT min(scanned_at) FROM scans
         WHERE organization_id = :org AND campaign_id = :campaign),
        (SELECT min(occurred_at) FROM conversions
         WHERE organization_id = :org AND campaign_id = :campaign),
        (SELECT min(r.refunded_at) FROM refunds r JOIN conversions c ON c.id = r.conversion_id
         WHERE c.organization_id = :org AND c.campaign_id = :campaign)
    )
"""

_CURRENCIES_SQL = """
    SELECT DISTINCT c.value_currency FROM conversions c
    WHERE c.organization_id = :org AND c.campaign_id = :campaign
      AND c.value_currency IS NOT NULL
      AND ((c.occurred_at >= :start AND c.occurred_at < :end)
           OR EXISTS (SELECT 1 FROM refunds r WHERE r.conversion_id = c.id
                      AND r.refunded_at >= :start AND r.refunded_at < :end))
    ORDER BY 1
"""


def _bucket_count(interval: Interval, first: dt.datetime, last: dt.datetime, tz: str) -> int:
    """How many buckets hold ``[first, last]``."""
    zone = zoneinfo.ZoneInfo(tz)
    if interval == "hour":
        # Via UTC: subtracting two times of the same zone would ignore the DST fold.
        floor = first.astimezone(zone).replace(minute=0, second=0, microsecond=0)
        return (last - floor.astimezone(dt.UTC)) // _STEP["hour"] + 1
    first_day, last_day = first.astimezone(zone).date(), last.astimezone(zone).date()
    if interval == "week":
        first_day -= dt.timedelta(days=first_day.weekday())
        last_day -= dt.timedelta(days=last_day.weekday())
    return (last_day - first_day).days // _STEP[interval].days + 1


async def plan_series(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    interval: Interval,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    tz: str | None = None,
) -> SeriesPlan:
    """Check a series request and fix its span (see the module docstring), so errors are
    raised before any point is produced (a streamed answer cannot change its status).

    Raises :class:`NotFound` (``campaign_not_found``), :class:`InvalidInput`
    (``invalid_window``, ``validation_error`` for a naive bound, ``too_many_buckets``).
    """
    check_window(start, end)
    campaign = await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    params = {"org": organization_id, "campaign": campaign_id}
    first = start or await session.scalar(text(_FIRST_EVENT_SQL), params)
    now = dt.datetime.now(dt.UTC)
    # The bucket holding the last instant of the window (``end`` is exclusive).
    last = end - dt.timedelta(microseconds=1) if end is not None else max(now, first or now)
    zone = tz or campaign.timezone
    if first is not None and _bucket_count(interval, first, last, zone) > MAX_BUCKETS:
        raise InvalidInput(
            f"The series would have more than {MAX_BUCKETS} {interval} buckets; "
            "narrow 'from'/'to' or use a longer interval",
            code="too_many_buckets",
            errors=[
                {
                    "loc": ["query", "interval"],
                    "msg": f"more than {MAX_BUCKETS} buckets",
                    "type": "too_many_buckets",
                }
            ],
        )
    currencies = await session.scalars(text(_CURRENCIES_SQL), {**params, **_bounds(start, end)})
    return SeriesPlan(
        organization_id=organization_id,
        campaign_id=campaign_id,
        interval=interval,
        tz=zone,
        start=start,
        end=end,
        first=first,
        last=last,
        currencies=tuple(currencies),
    )


def _bounds(start: dt.datetime | None, end: dt.datetime | None) -> dict[str, dt.datetime]:
    return {
        "start": start or dt.datetime.min.replace(tzinfo=dt.UTC),
        "end": end or dt.datetime.max.replace(tzinfo=dt.UTC),
    }


#: Bucket starts: hours step in absolute time from the local hour holding ``first`` (an
#: hour is 3600 s whatever the zone); days and weeks step in local wall time from the
#: local midnight (or Monday) holding ``first`` and are converted back, so a daylight
#: saving day is one 23- or 25-hour bucket.
_HOUR_BUCKETS = """
    SELECT generate_series(date_trunc('hour', :first, :tz), :last, interval '1 hour') AS start
"""
_LOCAL_BUCKETS = """
    SELECT local AT TIME ZONE :tz AS start
    FROM generate_series(date_trunc(:unit, :first, :tz) AT TIME ZONE :tz,
                         :last AT TIME ZONE :tz, CAST(:step AS interval)) AS local
"""
_SERIES_SQL = """
    WITH buckets AS ({buckets}),
    s AS (
        SELECT date_trunc(:unit, scanned_at, :tz) AS start, count(*) AS scans,
               count(DISTINCT visitor_id) AS visitors
        FROM scans
        WHERE organization_id = :org AND campaign_id = :campaign
          AND scanned_at >= :start AND scanned_at < :end
          AND NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'
        GROUP BY 1
    ),
    money AS (
        SELECT occurred_at AS at, value_currency AS currency, value_amount_minor AS amount,
               1 AS n
        FROM conversions
        WHERE organization_id = :org AND campaign_id = :campaign
          AND occurred_at >= :start AND occurred_at < :end
        UNION ALL
        SELECT r.refunded_at, c.value_currency, -r.amount_minor, 0
        FROM refunds r JOIN conversions c ON c.id = r.conversion_id
        WHERE c.organization_id = :org AND c.campaign_id = :campaign
          AND r.refunded_at >= :start AND r.refunded_at < :end
    ),
    per_currency AS (
        SELECT date_trunc(:unit, at, :tz) AS start, currency, sum(n) AS conversions,
               sum(amount) AS amount
        FROM money GROUP BY 1, 2
    ),
    m AS (
        SELECT start, sum(conversions) AS conversions,
               json_object_agg(currency, amount) FILTER (WHERE currency IS NOT NULL)
                 AS revenue
        FROM per_currency GROUP BY start
    )
    SELECT b.start, coalesce(s.scans, 0) AS scans, coalesce(s.visitors, 0) AS visitors,
           coalesce(m.conversions, 0) AS conversions, m.revenue
    FROM buckets b LEFT JOIN s USING (start) LEFT JOIN m USING (start)
    ORDER BY b.start
"""


async def series_points(session: AsyncSession, plan: SeriesPlan) -> AsyncIterator[SeriesPoint]:
    """The points of ``plan`` in time order, read from a server-side cursor (one bucket
    in memory at a time). ``start`` carries the offset of ``plan.tz`` at that instant."""
    if plan.first is None:
        return
    buckets = _HOUR_BUCKETS if plan.interval == "hour" else _LOCAL_BUCKETS
    zone = zoneinfo.ZoneInfo(plan.tz)
    params = {
        "org": plan.organization_id,
        "campaign": plan.campaign_id,
        "tz": plan.tz,
        "unit": plan.interval,
        "step": f"1 {plan.interval}",
        "first": plan.first,
        "last": plan.last,
        **_bounds(plan.start, plan.end),
    }
    sql = _SERIES_SQL.format(buckets=buckets)
    result = await session.stream(text(sql), params)
    async for row in result:
        revenue = {currency: int(amount) for currency, amount in (row.revenue or {}).items()}
        yield SeriesPoint(
            start=row.start.astimezone(zone),
            scans=row.scans,
            unique_visitors=row.visitors,
            conversions=int(row.conversions),
            revenue=_revenue(revenue),
        )
