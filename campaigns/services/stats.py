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
- ``conversion_rate`` is ``conversions / scans`` (human scans), ``0.0`` when there are
  no scans. A conversion is counted in the window of its ``occurred_at``, which may hold
  its scan or not, and one click can bring several conversions, so the rate may exceed 1.

Each figure comes from aggregate SQL (``GROUP BY ROLLUP`` / ``GROUPING SETS`` give the
per-tag and campaign totals in one pass) on the ``(campaign_id, scanned_at)`` and
``(campaign_id, occurred_at)`` indexes; Python only reshapes the few aggregate rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput
from campaigns.models import Conversion, Scan, Tag
from campaigns.scanning.record import BOT_REASONS
from campaigns.schemas import CampaignStats, RevenueRead, TagStats
from campaigns.services.campaigns import get_campaign


def _rate(conversions: int, scans: int) -> float:
    return conversions / scans if scans else 0.0


def _check_window(start: dt.datetime | None, end: dt.datetime | None) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.utcoffset() is None:
            raise InvalidInput(
                f"{name!r} must carry a timezone",
                code="validation_error",
                errors=[{"loc": ["query", name], "msg": "timezone required", "type": "tz"}],
            )
    if start is not None and end is not None and end <= start:
        raise InvalidInput(
            "'to' must be after 'from'",
            code="invalid_window",
            errors=[
                {"loc": ["query", "to"], "msg": "must be after 'from'", "type": "invalid_window"}
            ],
        )


def _revenue(amounts: dict[str, int]) -> list[RevenueRead]:
    return [RevenueRead(currency=c, amount_minor=amounts[c]) for c in sorted(amounts)]


async def campaign_stats(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> CampaignStats:
    """Figures of one campaign over ``[start, end)`` (see the module docstring).

    Raises :class:`NotFound` (``campaign_not_found``) for a campaign of another
    organization or a deleted one, :class:`InvalidInput` (``invalid_window``) when
    ``end <= start`` or (``validation_error``) when a bound has no timezone.
    """
    _check_window(start, end)
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)

    scan_where: list[ColumnElement[bool]] = [
        Scan.organization_id == organization_id,
        Scan.campaign_id == campaign_id,
    ]
    conversion_where: list[ColumnElement[bool]] = [
        Conversion.organization_id == organization_id,
        Conversion.campaign_id == campaign_id,
    ]
    if start is not None:
        scan_where.append(Scan.scanned_at >= start)
        conversion_where.append(Conversion.occurred_at >= start)
    if end is not None:
        scan_where.append(Scan.scanned_at < end)
        conversion_where.append(Conversion.occurred_at < end)

    tags = (
        await session.execute(
            select(Tag.id, Tag.code, Tag.label)
            .where(Tag.organization_id == organization_id, Tag.campaign_id == campaign_id)
            .order_by(Tag.id)
        )
    ).all()

    # One row per tag plus the campaign total (grouping(tag_id) = 1). The total is computed
    # by SQL, not summed: unique visitors do not add up across tags.
    # A scan counts unless it is an NFC tap that failed or was replayed.
    counted = func.coalesce(Scan.nfc_verification, "valid") == "valid"
    human = and_(Scan.is_bot.is_(False), counted)
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

    # Counts and sums per (tag, currency) and per currency (all tags, including
    # conversions whose tag was since removed); currency NULL = conversions without value.
    conversion_rows = (
        await session.execute(
            select(
                func.grouping(Conversion.tag_id).label("all_tags"),
                Conversion.tag_id,
                Conversion.value_currency,
                func.count().label("conversions"),
                func.coalesce(func.sum(Conversion.value_amount_minor), 0).label("amount"),
            )
            .where(*conversion_where)
            .group_by(
                func.grouping_sets(
                    tuple_(Conversion.tag_id, Conversion.value_currency),
                    tuple_(Conversion.value_currency),
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
        amount = int(row.amount)
        if row.all_tags:
            total_conversions += row.conversions
            if row.value_currency is not None:
                total_revenue[row.value_currency] = amount
        elif row.tag_id is not None:
            tag_conversions[row.tag_id] += row.conversions
            if row.value_currency is not None:
                tag_revenue[row.tag_id][row.value_currency] = amount

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
    )
