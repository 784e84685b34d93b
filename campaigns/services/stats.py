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
- Internal scans (``scans.internal``: from a phone signed into the organization's
  dashboard, store staff testing the posters they hang) count in ``internal_scans`` and
  in nothing else: not in ``scans``, ``bot_scans`` (nor its reasons), ``burst_scans``,
  ``replayed_taps``, ``invalid_taps``, ``unique_visitors``, the breakdowns or the
  series, whatever their other flags. A conversion whose click id is an internal scan is
  never credited to the campaign (:mod:`campaigns.crediting`), so it counts nowhere here.
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

import bisect
import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    and_,
    distinct,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.attribution import Model
from campaigns.errors import InvalidInput
from campaigns.models import (
    Campaign,
    Conversion,
    Refund,
    Scan,
    Tag,
    conversion_day_rollups,
    conversion_rollups,
)
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
from campaigns.services.rollups import ceil_day, ceil_hour, floor_day, floor_hour, folded_until

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
    column: Any, start: dt.date | None, end: dt.date | None
) -> list[ColumnElement[bool]]:
    where = []
    if start is not None:
        where.append(column >= start)
    if end is not None:
        where.append(column < end)
    return where


Range = tuple[dt.datetime | None, dt.datetime | None]


@dataclass(frozen=True)
class RollupSplit:
    """How a window ``[start, end)`` is read when rollups exist
    (:mod:`campaigns.services.rollups`): whole UTC hours ``[hours_from, hours_to)`` from
    the hourly rollups and ``raw`` ranges (the partial hours at the edges, the hours not
    folded yet) from the raw tables; unique visitors of whole folded UTC days
    ``[days_from, days_to)`` from the rollups and of ``raw_visitor_days`` from the raw
    scans (sum of daily distinct visitors, as defined). ``None`` bounds are open."""

    folded: dt.datetime
    hours_from: dt.datetime | None
    hours_to: dt.datetime
    raw: tuple[Range, ...]
    days_from: dt.datetime | None
    days_to: dt.datetime | None
    raw_visitor_days: tuple[Range, ...]
    #: ``(start, first whole hour, end of its UTC day)``: the window's partial first day,
    #: a suffix of a folded day.
    visitor_suffix: tuple[dt.datetime, dt.datetime, dt.datetime] | None = None
    #: ``(UTC midnight, end of the folded hours, end of the piece)``: the partial last
    #: day, a prefix of its day.
    visitor_prefix: tuple[dt.datetime, dt.datetime, dt.datetime] | None = None


def hour_ranges(split: RollupSplit) -> list[Range]:
    """The split's whole hours outside its whole days (read from hour rows; the days are
    read from day rows)."""
    if split.days_to is None:
        return [(split.hours_from, split.hours_to)]
    ranges: list[Range] = []
    if split.days_from is not None and (
        split.hours_from is None or split.hours_from < split.days_from
    ):
        ranges.append((split.hours_from, split.days_from))
    if split.days_to < split.hours_to:
        ranges.append((split.days_to, split.hours_to))
    return ranges


def split_window(
    start: dt.datetime | None, end: dt.datetime | None, folded: dt.datetime | None
) -> RollupSplit | None:
    """The split of ``[start, end)`` between rollups and raw rows, or None when no whole
    folded hour lies in the window (then everything is read raw: at most an hour or the
    unfolded tail)."""
    if folded is None:
        return None
    hours_from = None if start is None else ceil_hour(start)
    hours_to = folded if end is None else min(floor_hour(end), folded)
    if hours_from is not None and hours_from >= hours_to:
        return None
    raw: list[Range] = []
    if start is not None and start < hours_from:  # type: ignore[operator]
        raw.append((start, hours_from))
    if end is None or hours_to < end:
        raw.append((hours_to, end))
    days_from = None if start is None else ceil_day(start)
    days_to: dt.datetime | None = floor_day(folded if end is None else min(end, folded))
    visitor_raw: list[Range] = []
    suffix = prefix = None
    if days_from is not None and days_to is not None and days_from >= days_to:
        days_from = days_to = None
        visitor_raw.append((start, end))
    else:
        assert days_to is not None
        if start is not None and days_from is not None and start < days_from:
            suffix = (start, ceil_hour(start), days_from)
        next_day = days_to + dt.timedelta(days=1)
        if end is None or days_to < end:
            piece_end = next_day if end is None else min(end, next_day)
            prefix = (days_to, max(days_to, min(floor_hour(piece_end), folded)), piece_end)
            if end is None or end > next_day:
                visitor_raw.append((next_day, end))
    return RollupSplit(
        folded=folded,
        hours_from=hours_from,
        hours_to=hours_to,
        raw=tuple(raw),
        days_from=days_from,
        days_to=days_to,
        raw_visitor_days=tuple(visitor_raw),
        visitor_suffix=suffix,
        visitor_prefix=prefix,
    )


def _ranges_where(column: Any, ranges: tuple[Range, ...]) -> ColumnElement[bool]:
    """``column`` within any of ``ranges`` (``[a, b)``, None: open)."""
    if not ranges:
        return false()
    return or_(*(and_(true_if(column, a, b)) for a, b in ranges))


def true_if(column: Any, a: dt.datetime | None, b: dt.datetime | None) -> ColumnElement[bool]:
    """``a <= column < b`` with open bounds for None."""
    # true(), not a bound literal: a parameter in the condition would keep a prepared
    # statement's generic plan off the (campaign_id, time) index.
    return and_(true(), *_window_where(column, a, b))


def _split_where(
    column: Any, start: dt.datetime | None, end: dt.datetime | None, split: RollupSplit | None
) -> list[ColumnElement[bool]]:
    """The raw rows' condition: the window, or the split's raw ranges."""
    if split is None:
        return _window_where(column, start, end)
    return [_ranges_where(column, split.raw)]


#: A human scan in SQL text, for table alias ``{t}``.
_HUMAN_SQL = (
    "NOT {t}.internal AND NOT {t}.is_bot AND coalesce({t}.nfc_verification, 'valid') = 'valid'"
)


def _counted() -> ColumnElement[bool]:
    """A scan counts unless it is internal (staff's) or an NFC tap that failed or was
    replayed."""
    return and_(Scan.internal.is_(False), func.coalesce(Scan.nfc_verification, "valid") == "valid")


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

    split = split_window(start, end, await folded_until(session))
    scan_where = [
        Scan.organization_id == organization_id,
        Scan.campaign_id == campaign_id,
        *(
            _window_where(Scan.scanned_at, start, end)
            if split is None
            else [_ranges_where(Scan.scanned_at, split.raw)]
        ),
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
                func.count()
                .filter(Scan.nfc_verification == "replayed", Scan.internal.is_(False))
                .label("replayed"),
                func.count()
                .filter(Scan.nfc_verification == "invalid", Scan.internal.is_(False))
                .label("invalid"),
                func.count().filter(Scan.internal.is_(True)).label("internal_scans"),
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
            *(
                _window_where(Conversion.occurred_at, start, end)
                if split is None
                else [_ranges_where(Conversion.occurred_at, split.raw)]
            ),
        ),
        *_conversion_rollup_events(campaign_id, split),
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
        "internal_scans": 0,
        "by_reason": dict.fromkeys(BOT_REASONS, 0),
        "visitors": 0,
    }
    total_scans = {**empty, "by_reason": dict(empty["by_reason"])}
    tag_scans: dict[int, dict[str, Any]] = {}
    for row in scan_rows:
        figures = {
            "scans": row.scans,
            "bot_scans": row.bot_scans,
            "burst_scans": row.burst_scans,
            "replayed": row.replayed,
            "invalid": row.invalid,
            "internal_scans": row.internal_scans,
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

    if split is not None:
        await _add_rollups(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            split=split,
            total=total_scans,
            per_tag=tag_scans,
        )

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
                internal_scans=figures["internal_scans"],
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
        internal_scans=total_scans["internal_scans"],
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
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            start=start,
            end=end,
            split=split,
        ),
    )


_SCAN_FIGURES = (
    "scans",
    "bot_scans",
    "burst_scans",
    "replayed_taps",
    "invalid_taps",
    "internal_scans",
)
_FIGURE_KEYS = {"replayed_taps": "replayed", "invalid_taps": "invalid"}


def _conversion_rollup_events(campaign_id: int, split: RollupSplit | None) -> list[Any]:
    """The conversions of the split's whole folded hours, from the day rollups for whole
    days and the hour rollups for the rest, as money events (tag, currency, n, amount)
    like the raw rows."""
    if split is None:
        return []
    events = []
    if split.days_to is not None:
        d = conversion_day_rollups.c
        events.append(
            select(
                d.tag_id,
                d.currency.label("currency"),
                d.conversions.label("n"),
                d.amount_minor.label("amount"),
            ).where(
                d.campaign_id == campaign_id,
                *_window_where(
                    d.day,
                    None if split.days_from is None else split.days_from.date(),
                    split.days_to.date(),
                ),
            )
        )
    r = conversion_rollups.c
    events.append(
        select(
            r.tag_id,
            r.currency.label("currency"),
            r.conversions.label("n"),
            r.amount_minor.label("amount"),
        ).where(r.campaign_id == campaign_id, _ranges_where(r.hour, tuple(hour_ranges(split))))
    )
    return events


def _hour_params(split: RollupSplit) -> tuple[str, dict[str, Any]]:
    where = "hour < :hours_to"
    params: dict[str, Any] = {"hours_to": split.hours_to}
    if split.hours_from is not None:
        where += " AND hour >= :hours_from"
        params["hours_from"] = split.hours_from
    return where, params


async def _add_rollups(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    split: RollupSplit,
    total: dict[str, Any],
    per_tag: dict[int, dict[str, Any]],
) -> None:
    """Add the rollups' scan figures of the split's whole hours to the raw ones of its raw
    ranges (``total`` and ``per_tag`` updated in place), and set unique visitors: folded
    whole UTC days from the rollups plus the other days' pieces from the raw scans."""
    columns = [*_SCAN_FIGURES, *(f"bot_{r}" for r in BOT_REASONS)]
    listed = ", ".join(columns)
    params: dict[str, Any] = {"c": campaign_id}
    parts = []
    if split.days_to is not None:
        # Whole folded UTC days from the day rows, the other whole hours from hour rows.
        days = "day < :days_to_d" + ("" if split.days_from is None else " AND day >= :days_from_d")
        params["days_to_d"] = split.days_to.date()
        params["days_from_d"] = None if split.days_from is None else split.days_from.date()
        parts.append(
            f"SELECT tag_id, {listed} FROM scan_day_rollups WHERE campaign_id = :c AND {days}"  # noqa: S608 - constants and bound parameters only
        )
    hours = _ranges_sql("hour", tuple(hour_ranges(split)), params)
    parts.append(f"SELECT tag_id, {listed} FROM scan_rollups WHERE campaign_id = :c AND ({hours})")  # noqa: S608 - constants and bound parameters only
    sums = ", ".join(f"sum({f}) AS {f}" for f in columns)
    union = " UNION ALL ".join(parts)
    sql = f"SELECT grouping(tag_id) AS is_total, tag_id, {sums} FROM ({union}) AS r"  # noqa: S608
    rows = await session.execute(text(sql + " GROUP BY ROLLUP (tag_id)"), params)
    empty_reasons = dict.fromkeys(BOT_REASONS, 0)
    for row in rows:
        if row.is_total:
            figures = total
        else:
            figures = per_tag.setdefault(
                row.tag_id,
                {
                    **dict.fromkeys(("scans", "bot_scans", "burst_scans"), 0),
                    "replayed": 0,
                    "invalid": 0,
                    "internal_scans": 0,
                    "by_reason": dict(empty_reasons),
                    "visitors": 0,
                },
            )
        for name in _SCAN_FIGURES:
            figures[_FIGURE_KEYS.get(name, name)] += int(row._mapping[name] or 0)
        for reason in BOT_REASONS:
            figures["by_reason"][reason] += int(row._mapping[f"bot_{reason}"] or 0)

    visitors: dict[int | None, int] = defaultdict(int)
    if split.days_to is not None:
        day_params = {"c": campaign_id, "days_to": split.days_to, "days_from": split.days_from}
        for row in await session.execute(
            text(
                "SELECT tag_id, sum(visitors) AS n FROM scan_day_rollups "
                "WHERE campaign_id = :c AND day < :days_to_d"
                " AND (CAST(:days_from_d AS date) IS NULL OR day >= :days_from_d)"
                " GROUP BY tag_id"
            ),
            params,
        ):
            visitors[row.tag_id] += int(row.n)
        visitors[None] += int(
            await session.scalar(
                text(
                    "SELECT coalesce(sum(first_visitors), 0) FROM campaign_rollups "
                    "WHERE campaign_id = :c AND hour < :days_to"
                    " AND (CAST(:days_from AS timestamptz) IS NULL OR hour >= :days_from)"
                ),
                day_params,
            )
            or 0
        )
    if split.raw_visitor_days:
        # Distinct visitors per UTC day (and tag), summed: ids are salted per day.
        day = func.date_trunc("day", Scan.scanned_at, "UTC")
        raw = await session.execute(
            select(
                func.grouping(Scan.tag_id).label("is_total"),
                Scan.tag_id,
                func.count(distinct(Scan.visitor_id)).label("n"),
            )
            .where(
                Scan.organization_id == organization_id,
                Scan.campaign_id == campaign_id,
                _human(),
                _ranges_where(Scan.scanned_at, split.raw_visitor_days),
            )
            .group_by(func.grouping_sets(tuple_(day, Scan.tag_id), tuple_(day)))
        )
        for row in raw:
            visitors[None if row.is_total else row.tag_id] += int(row.n)
    for piece, column in ((split.visitor_suffix, "last"), (split.visitor_prefix, "first")):
        if piece is not None:
            await _piece_visitors(
                session,
                organization_id=organization_id,
                campaign_id=campaign_id,
                piece=piece,
                suffix=column == "last",
                into=visitors,
            )
    total["visitors"] = visitors.pop(None, 0)
    for tag_id, figures in per_tag.items():
        figures["visitors"] = visitors.get(tag_id, 0)
    for key, n in visitors.items():
        if key is not None and key not in per_tag and n:
            tag_id = key
            per_tag[tag_id] = {
                **dict.fromkeys(
                    ("scans", "bot_scans", "burst_scans", "replayed", "invalid", "internal_scans"),
                    0,
                ),
                "by_reason": dict(empty_reasons),
                "visitors": n,
            }


#: Distinct visitors of the human scans in ``[:e0, :e1)`` not seen in ``[:o0, :o1)`` of
#: the same UTC day: on the campaign (``n``, for the total row) and on the same tag
#: (``tag_n``, per tag), through the ``(visitor_id, scanned_at)`` index.
_EDGE_VISITORS = f"""
    SELECT grouping(tag_id) AS is_total, tag_id,
           count(DISTINCT visitor_id) FILTER (WHERE NOT seen) AS n,
           count(DISTINCT visitor_id) FILTER (WHERE NOT tag_seen) AS tag_n
    FROM (
        SELECT e.tag_id, e.visitor_id,
               EXISTS (SELECT 1 FROM scans o WHERE o.visitor_id = e.visitor_id
                       AND o.scanned_at >= :o0 AND o.scanned_at < :o1
                       AND o.campaign_id = :campaign AND o.organization_id = :org
                       AND {_HUMAN_SQL.format(t="o")}) AS seen,
               EXISTS (SELECT 1 FROM scans o WHERE o.visitor_id = e.visitor_id
                       AND o.scanned_at >= :o0 AND o.scanned_at < :o1
                       AND o.campaign_id = :campaign AND o.organization_id = :org
                       AND o.tag_id = e.tag_id AND {_HUMAN_SQL.format(t="o")}) AS tag_seen
        FROM scans e
        WHERE e.organization_id = :org AND e.campaign_id = :campaign
          AND e.scanned_at >= :e0 AND e.scanned_at < :e1 AND e.visitor_id IS NOT NULL
          AND {_HUMAN_SQL.format(t="e")}
    ) AS x
    GROUP BY ROLLUP (tag_id)
"""  # noqa: S608 - module constants only


async def _piece_visitors(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    piece: tuple[dt.datetime, dt.datetime, dt.datetime],
    suffix: bool,
    into: dict[int | None, int],
) -> None:
    """Add the distinct visitors of a partial UTC day to ``into`` (per tag; None: the
    campaign). A suffix ``(start, h, day end)``: ``last_visitors`` of the hours from
    ``h``, plus the visitors of ``[start, h)`` not seen from ``h`` on. A prefix ``(day
    start, h, end)``: ``first_visitors`` of the hours before ``h``, plus the visitors of
    ``[h, end)`` not seen before ``h``."""
    if suffix:
        edge, rolled = (piece[0], piece[1]), (piece[1], piece[2])
        column = "last_visitors"
    else:
        edge, rolled = (piece[1], piece[2]), (piece[0], piece[1])
        column = "first_visitors"
    params = {"c": campaign_id, "h0": rolled[0], "h1": rolled[1]}
    if rolled[0] < rolled[1]:
        for row in await session.execute(
            text(
                f"SELECT tag_id, sum({column}) AS n FROM scan_rollups "  # noqa: S608
                "WHERE campaign_id = :c AND hour >= :h0 AND hour < :h1 GROUP BY tag_id"
            ),
            params,
        ):
            into[row.tag_id] += int(row.n)
        into[None] += int(
            await session.scalar(
                text(
                    f"SELECT coalesce(sum({column}), 0) FROM campaign_rollups "  # noqa: S608
                    "WHERE campaign_id = :c AND hour >= :h0 AND hour < :h1"
                ),
                params,
            )
            or 0
        )
    if edge[0] < edge[1]:
        for row in await session.execute(
            text(_EDGE_VISITORS),
            {
                "org": organization_id,
                "campaign": campaign_id,
                "e0": edge[0],
                "e1": edge[1],
                "o0": rolled[0],
                "o1": rolled[1],
            },
        ):
            if row.is_total:
                into[None] += int(row.n)
            else:
                into[row.tag_id] += int(row.tag_n)


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
    split: RollupSplit | None = None,
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
    ).where(*scope, _human(), *_split_where(Scan.scanned_at, start, end, split))
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
            *_split_where(Conversion.occurred_at, start, end, split),
        )
    )
    sets = func.grouping_sets(*(tuple_(c) for c in columns.values()))
    figures: dict[str, dict[str | None, list[int]]] = {k: {} for k in columns}
    for index, query in enumerate((scans, conversions)):
        for row in await session.execute(query.group_by(sets)):
            # grouping(c) = 0 for the one column this row is grouped by.
            key = next(k for k in columns if row._mapping[f"g_{k}"] == 0)
            counts = figures[key].setdefault(row._mapping[key], [0, 0])
            counts[index] += int(row.n)
    if split is not None:
        hours, params = _hour_params(split)
        for index, (table, column) in enumerate(
            (("scan_breakdown_rollups", "scans"), ("conversion_breakdown_rollups", "conversions"))
        ):
            for row in await session.execute(
                text(
                    f"SELECT dimension, value, sum({column}) AS n FROM {table} "  # noqa: S608
                    f"WHERE campaign_id = :c AND {hours} GROUP BY dimension, value"
                ),
                {"c": campaign_id, **params},
            ):
                figures[row.dimension].setdefault(row.value, [0, 0])[index] += int(row.n)
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

#: The first hour of the campaign's scans in the rollups, when reports read them: scans
#: past the retention term are gone from ``scans`` but stay in the frozen rollups
#: (campaigns.services.rollups), so an open series still starts with them.
_FIRST_ROLLED_SQL = """
    SELECT min(hour) FROM scan_rollups
    WHERE campaign_id = :campaign AND EXISTS (SELECT 1 FROM rollup_state)
"""

#: Currencies of the window's conversions and refunds: two branches, each on an index
#: (one ``OR`` would read every conversion of the campaign); ``{conversions}`` is the
#: conversions' condition (the window, or the rollup split's raw ranges) and
#: ``{rollups}`` a branch reading ``conversion_rollups`` (or nothing).
_CURRENCIES_SQL = """
    SELECT c.value_currency FROM conversions c
    WHERE c.organization_id = :org AND c.campaign_id = :campaign
      AND c.value_currency IS NOT NULL AND ({conversions})
    UNION
    SELECT c.value_currency FROM refunds r JOIN conversions c ON c.id = r.conversion_id
    WHERE r.organization_id = :org AND c.campaign_id = :campaign
      AND c.value_currency IS NOT NULL
      AND r.refunded_at >= :start AND r.refunded_at < :end
    {rollups}
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
    first = start or await _first_event(session, params)
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
    split = split_window(start, end, await folded_until(session))
    currency_params: dict[str, Any] = {**params, **_bounds(start, end)}
    if split is None:
        sql = _CURRENCIES_SQL.format(
            conversions="c.occurred_at >= :start AND c.occurred_at < :end", rollups=""
        )
    else:
        hours, hour_params = _hour_params(split)
        currency_params.update(hour_params)
        sql = _CURRENCIES_SQL.format(
            conversions=_ranges_sql("c.occurred_at", split.raw, currency_params),
            rollups=_CURRENCY_ROLLUPS + hours,
        )
    currencies = await session.scalars(text(sql), currency_params)
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


async def _first_event(session: AsyncSession, params: dict[str, Any]) -> dt.datetime | None:
    """The first event of the campaign: its raw scans, conversions and refunds, or the
    first rolled-up hour when that is earlier than any raw scan's hour (purged scans)."""
    raw: dt.datetime | None = await session.scalar(text(_FIRST_EVENT_SQL), params)
    rolled: dt.datetime | None = await session.scalar(text(_FIRST_ROLLED_SQL), params)
    if rolled is not None and (raw is None or rolled < floor_hour(raw)):
        return rolled
    return raw


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
          AND NOT internal AND NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'
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
    from_rollups = await _rollup_series(session, plan)
    if from_rollups is not None:
        for point in from_rollups:
            yield point
        return
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


_RAW_BUCKET_SCANS = """
    SELECT date_trunc(:unit, scanned_at, :tz) AS start, count(*) AS n FROM scans
    WHERE organization_id = :org AND campaign_id = :campaign AND ({ranges})
      AND NOT internal AND NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'
    GROUP BY 1
"""
_RAW_BUCKET_MONEY = """
    SELECT date_trunc(:unit, occurred_at, :tz) AS start, value_currency AS currency,
           count(*) AS n, coalesce(sum(value_amount_minor), 0) AS amount
    FROM conversions
    WHERE organization_id = :org AND campaign_id = :campaign AND ({ranges})
    GROUP BY 1, 2
    UNION ALL
    SELECT date_trunc(:unit, r.refunded_at, :tz), c.value_currency, 0, -sum(r.amount_minor)
    FROM refunds r JOIN conversions c ON c.id = r.conversion_id
    WHERE c.organization_id = :org AND c.campaign_id = :campaign
      AND r.refunded_at >= :start AND r.refunded_at < :end
    GROUP BY 1, 2
"""
_RAW_PIECE_VISITORS = """
    SELECT p.i, (
        SELECT count(DISTINCT visitor_id) FROM scans
        WHERE organization_id = :org AND campaign_id = :campaign
          AND scanned_at >= p.a AND scanned_at < p.b
          AND NOT internal AND NOT is_bot AND coalesce(nfc_verification, 'valid') = 'valid'
    ) AS n
    FROM unnest(CAST(:a AS timestamptz[]), CAST(:b AS timestamptz[])) WITH ORDINALITY
        AS p(a, b, i)
"""


_CURRENCY_ROLLUPS = (
    "UNION SELECT DISTINCT currency FROM campaign_conversion_rollups "
    "WHERE campaign_id = :campaign AND currency IS NOT NULL AND "
)
_SERIES_HOURS = (
    "SELECT hour, scans, visitors, first_visitors, last_visitors FROM campaign_rollups "
    "WHERE campaign_id = :c AND "
)
_SERIES_MONEY_HOURS = (
    "SELECT hour, currency, sum(conversions) AS n, sum(amount_minor) AS amount "
    "FROM campaign_conversion_rollups WHERE campaign_id = :c AND "
)


_SERIES_QUARTERS = (
    "SELECT quarter, scans, first_visitors, last_visitors, hour_visitors "
    "FROM campaign_quarter_rollups "
    "WHERE campaign_id = :c AND quarter >= :q0 AND quarter < :q1"
)
_SERIES_MONEY_QUARTERS = (
    "SELECT quarter, currency, conversions, amount_minor "
    "FROM campaign_conversion_quarter_rollups "
    "WHERE campaign_id = :c AND quarter >= :q0 AND quarter < :q1"
)
_QUARTER: Final = dt.timedelta(minutes=15)


def _on_quarter(at: dt.datetime) -> bool:
    """Whether ``at`` is a UTC quarter hour (every zone's offset today is a multiple of
    15 minutes; historical local mean times are not)."""
    utc = at.astimezone(dt.UTC)
    return utc.minute % 15 == 0 and utc.second == 0 and utc.microsecond == 0


def _folded_hour(split: RollupSplit, hour: dt.datetime) -> bool:
    """Whether the whole UTC hour starting at ``hour`` is read from the rollups."""
    return (split.hours_from is None or hour >= split.hours_from) and (
        hour + dt.timedelta(hours=1) <= split.hours_to
    )


def _sum_quarters(
    quarters: dict[dt.datetime, Any], a: dt.datetime, b: dt.datetime, column: str
) -> int:
    """The sum of ``column`` over the quarter-hour rows in ``[a, b)``."""
    total, at = 0, a
    while at < b:
        if at in quarters:
            total += getattr(quarters[at], column)
        at += _QUARTER
    return total


def _sum_hours(hourly: dict[dt.datetime, Any], a: dt.datetime, b: dt.datetime, column: str) -> int:
    """The sum of ``column`` over the hour rows in ``[a, b)``."""
    total, at = 0, a
    while at < b:
        if at in hourly:
            total += getattr(hourly[at], column)
        at += dt.timedelta(hours=1)
    return total


def _ranges_sql(column: str, ranges: tuple[Range, ...], params: dict[str, Any]) -> str:
    """SQL text for ``column`` within any of ``ranges``; bounds go into ``params``."""
    clauses = []
    for index, (a, b) in enumerate(ranges):
        parts = ["true"]
        if a is not None:
            params[f"ra{index}"] = a
            parts.append(f"{column} >= :ra{index}")
        if b is not None:
            params[f"rb{index}"] = b
            parts.append(f"{column} < :rb{index}")
        clauses.append(" AND ".join(parts))
    return " OR ".join(f"({c})" for c in clauses) or "false"


async def _rollup_series(session: AsyncSession, plan: SeriesPlan) -> list[SeriesPoint] | None:
    """The series of ``plan`` from the rollups (whole folded UTC hours) and the raw rows
    (the rest), or None when it must be read raw: rollups not built, no whole folded
    hour in the window, buckets not starting on UTC quarter hours, or a day cut by a
    bucket boundary without its quarter-hour rows yet. In time zones with 30- or
    45-minute offsets (Asia/Kolkata, Asia/Kathmandu, America/St_Johns), the UTC hours
    cut by a bucket boundary are read from the quarter-hour rollups (scans, visitors,
    conversions).

    Unique visitors of a bucket are the sum over the UTC days it covers of that day's
    piece: a whole hour (hour buckets), a day's prefix (sum of ``first_visitors``), a
    folded day's suffix (sum of ``last_visitors``), else counted from the raw scans."""
    assert plan.first is not None
    split = split_window(plan.start, plan.end, await folded_until(session))
    if split is None:
        return None
    step = _STEP[plan.interval]
    params: dict[str, Any] = {
        "org": plan.organization_id,
        "campaign": plan.campaign_id,
        "tz": plan.tz,
        "unit": plan.interval,
        "step": f"1 {plan.interval}",
        "first": plan.first,
        # One bucket more than the series: the end of the last one.
        "last": plan.last + step + dt.timedelta(days=2 if plan.interval != "hour" else 0),
        **_bounds(plan.start, plan.end),
    }
    buckets = _HOUR_BUCKETS if plan.interval == "hour" else _LOCAL_BUCKETS
    starts = [row[0] for row in await session.execute(text(buckets), params)]
    count = next((i for i, b in enumerate(starts) if b > plan.last), len(starts))
    if count >= len(starts) or not all(_on_quarter(b) for b in starts):
        return None
    starts = starts[: count + 1]
    utc_starts = [b.astimezone(dt.UTC) for b in starts]
    # UTC hours cut by a bucket boundary (zones with 30- or 45-minute offsets): read from
    # the quarter-hour rollups instead of their hour rows.
    split_hours = sorted(
        {
            floor_hour(b)
            for b in utc_starts
            if b != floor_hour(b) and _folded_hour(split, floor_hour(b))
        }
    )
    quarters: dict[dt.datetime, Any] = {}
    if split_hours:
        for row in await session.execute(
            text(_SERIES_QUARTERS),
            {
                "c": plan.campaign_id,
                "q0": floor_day(split_hours[0]),
                "q1": floor_day(split_hours[-1]) + dt.timedelta(days=1),
            },
        ):
            quarters[row.quarter] = row
    cut_hours = set(split_hours)

    def bucket(at: dt.datetime) -> int | None:
        i = bisect.bisect_right(utc_starts, at) - 1
        return i if 0 <= i < count else None

    scans = [0] * count
    conversions = [0] * count
    revenue: list[dict[str, int]] = [defaultdict(int) for _ in range(count)]
    hours_where, hour_params = _hour_params(split)
    hourly: dict[dt.datetime, Any] = {}
    for row in await session.execute(
        text(_SERIES_HOURS + hours_where),
        {"c": plan.campaign_id, **hour_params},
    ):
        hourly[row.hour] = row
        if row.hour not in cut_hours and (i := bucket(row.hour)) is not None:
            scans[i] += row.scans
    if split_hours:
        # A day rolled up before the quarter-hour rollups existed has hour rows and no
        # quarter rows until it is recomputed: read the series raw meanwhile.
        quarter_days = {floor_day(q) for q in quarters}
        if any(floor_day(h) not in quarter_days for h in hourly if h in cut_hours):
            return None
        for quarter, row in quarters.items():
            if floor_hour(quarter) in cut_hours and (i := bucket(quarter)) is not None:
                scans[i] += row.scans
    money_hours: set[dt.datetime] = set()
    for row in await session.execute(
        text(_SERIES_MONEY_HOURS + hours_where + " GROUP BY hour, currency"),
        {"c": plan.campaign_id, **hour_params},
    ):
        money_hours.add(row.hour)
        if row.hour not in cut_hours and (i := bucket(row.hour)) is not None:
            conversions[i] += int(row.n)
            if row.currency is not None:
                revenue[i][row.currency] += int(row.amount)
    if split_hours:
        money_quarters = (
            await session.execute(
                text(_SERIES_MONEY_QUARTERS),
                {
                    "c": plan.campaign_id,
                    "q0": floor_day(split_hours[0]),
                    "q1": floor_day(split_hours[-1]) + dt.timedelta(days=1),
                },
            )
        ).all()
        money_days = {floor_day(row.quarter) for row in money_quarters}
        if any(floor_day(h) not in money_days for h in money_hours if h in cut_hours):
            return None  # not recomputed since the quarter-hour rollups came
        for row in money_quarters:
            if floor_hour(row.quarter) in cut_hours and (i := bucket(row.quarter)) is not None:
                conversions[i] += int(row.conversions)
                if row.currency is not None:
                    revenue[i][row.currency] += int(row.amount_minor)
    raw_params = dict(params)
    scans_sql = _RAW_BUCKET_SCANS.format(ranges=_ranges_sql("scanned_at", split.raw, raw_params))
    for row in await session.execute(text(scans_sql), raw_params):
        if (i := bucket(row.start)) is not None:
            scans[i] += int(row.n)
    money_sql = _RAW_BUCKET_MONEY.format(ranges=_ranges_sql("occurred_at", split.raw, raw_params))
    for row in await session.execute(text(money_sql), raw_params):
        if (i := bucket(row.start)) is not None:
            conversions[i] += int(row.n)
            if row.currency is not None:
                revenue[i][row.currency] += int(row.amount)

    visitors = [0] * count
    raw_pieces: list[tuple[int, dt.datetime, dt.datetime]] = []
    edges: list[tuple[int, tuple[dt.datetime, dt.datetime], tuple[dt.datetime, dt.datetime]]] = []
    low = plan.start or utc_starts[0]
    high = plan.end or utc_starts[count]
    for i in range(count):
        a, b = max(utc_starts[i], low), min(utc_starts[i + 1], high)
        while a < b:
            day_start = floor_day(a)
            day_end = day_start + dt.timedelta(days=1)
            p0, p1 = a, min(b, day_end)
            a = p1
            inside = (split.hours_from is None or p0 >= split.hours_from) and p1 <= split.hours_to
            whole_hour = inside and plan.interval == "hour" and p1 - p0 == _STEP["hour"]
            if whole_hour and p0 == floor_hour(p0):
                visitors[i] += hourly[p0].visitors if p0 in hourly else 0
            elif whole_hour and floor_hour(p0) in cut_hours:
                # An hour bucket starting at a quarter hour, within one UTC day.
                visitors[i] += quarters[p0].hour_visitors if p0 in quarters else 0
            elif p0 == day_start and (split.hours_from is None or p0 >= split.hours_from):
                # A prefix of the day: first visitors of its folded hours, then the new
                # visitors of the rest (the unfolded tail, a partial last hour: from
                # its quarters when rolled up, else raw).
                cut = max(p0, min(floor_hour(p1), split.hours_to))
                visitors[i] += _sum_hours(hourly, p0, cut, "first_visitors")
                if cut < p1 and floor_hour(p1) in cut_hours and _on_quarter(p1):
                    visitors[i] += _sum_quarters(quarters, cut, p1, "first_visitors")
                elif cut < p1:
                    edges.append((i, (cut, p1), (p0, cut)))
            elif p1 == day_end and day_end <= split.folded and p1 <= split.hours_to:
                # A suffix of a folded day: last visitors of its whole hours, then the
                # visitors of a partial first hour not seen later that day.
                cut = ceil_hour(p0)
                visitors[i] += _sum_hours(hourly, cut, p1, "last_visitors")
                if p0 < cut and floor_hour(p0) in cut_hours and _on_quarter(p0):
                    visitors[i] += _sum_quarters(quarters, p0, cut, "last_visitors")
                elif p0 < cut:
                    edges.append((i, (p0, cut), (cut, p1)))
            else:
                raw_pieces.append((i, p0, p1))
    if raw_pieces:
        for row in await session.execute(
            text(_RAW_PIECE_VISITORS),
            {
                **params,
                "a": [p[1] for p in raw_pieces],
                "b": [p[2] for p in raw_pieces],
            },
        ):
            visitors[raw_pieces[row.i - 1][0]] += int(row.n)

    for i, (e0, e1), (o0, o1) in edges:
        for row in await session.execute(
            text(_EDGE_VISITORS),
            {**params, "e0": e0, "e1": e1, "o0": o0, "o1": o1},
        ):
            if row.is_total:
                visitors[i] += int(row.n)

    zone = zoneinfo.ZoneInfo(plan.tz)
    return [
        SeriesPoint(
            start=starts[i].astimezone(zone),
            scans=scans[i],
            unique_visitors=visitors[i],
            conversions=conversions[i],
            revenue=_revenue({c: a for c, a in revenue[i].items()}),
        )
        for i in range(count)
    ]
