"""CSV layouts of the reports (``stats.csv``, ``attribution.csv``): the figures of the JSON
answers, one documented column layout each, produced line by line (RFC 4180, ``\\r\\n``
line ends, UTF-8) so routes can stream them.

Text cells (codes, labels, keys) go through
:func:`campaigns.payloads.exports.csv_cell` against formula injection; numbers are
written as numbers (a negative revenue stays a number). Money columns are
``revenue_minor_<ISO 4217>``, one per currency in the report, in minor units; an empty
cell is no revenue in that currency.

**stats.csv** with ``interval``: one row per series bucket, ``start, scans,
unique_visitors, conversions, revenue_minor_<CUR>...`` (``start`` ISO 8601 with the
offset of the report's time zone). Without ``interval``: one row per tag then a total
row, ``row, tag_id, code, label, scans, bot_scans, burst_scans, replayed_taps,
invalid_taps, unique_visitors, conversions, conversion_rate, revenue_minor_<CUR>...,
cost_minor, cost_currency, roas, internal_scans`` (``row`` is ``tag`` or ``total``; the
cost and ROAS only on the total row; columns added after the first release come last;
the money columns vary with the window's currencies, so readers go by the header).
Scans of phones signed into the dashboard (staff) count only in ``internal_scans``, as
in the JSON.

**attribution.csv**: one row per group key, ``<tag_id|location_id|day>, conversions,
revenue_minor_<CUR>...``, then a ``total`` row (the report's ``totals``) and an
``unattributed`` row (its conversions and revenue) in the key column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from campaigns.payloads.exports import csv_cell
from campaigns.schemas import AttributionReport, CampaignStats, RevenueRead, SeriesPoint

MEDIA_TYPE = "text/csv; charset=utf-8"
SERIES_COLUMNS = ("start", "scans", "unique_visitors", "conversions")
TAG_COLUMNS = (
    "row",
    "tag_id",
    "code",
    "label",
    "scans",
    "bot_scans",
    "burst_scans",
    "replayed_taps",
    "invalid_taps",
    "unique_visitors",
    "conversions",
    "conversion_rate",
)
COST_COLUMNS = ("cost_minor", "cost_currency", "roas")
#: Columns added after the first release go last (readers go by the header: the money
#: columns vary with the window's currencies).
LATER_COLUMNS = ("internal_scans",)


def _line(cells: Iterable[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(["" if c is None else c for c in cells])
    return out.getvalue().encode()


def _money_columns(currencies: Iterable[str]) -> list[str]:
    return [f"revenue_minor_{currency}" for currency in currencies]


def _money(revenue: list[RevenueRead], currencies: Iterable[str]) -> list[int | None]:
    amounts = {r.currency: r.amount_minor for r in revenue}
    return [amounts.get(currency) for currency in currencies]


async def series_csv(
    points: AsyncIterator[SeriesPoint], currencies: tuple[str, ...]
) -> AsyncIterator[bytes]:
    """stats.csv with ``interval``: the header, then one line per point as it arrives."""
    yield _line([*SERIES_COLUMNS, *_money_columns(currencies)])
    async for point in points:
        yield _line(
            [
                point.start.isoformat(),
                point.scans,
                point.unique_visitors,
                point.conversions,
                *_money(point.revenue, currencies),
            ]
        )


def stats_csv(stats: CampaignStats) -> Iterator[bytes]:
    """stats.csv without ``interval``: the header, a line per tag, the total line."""
    currencies = sorted(
        {r.currency for r in stats.revenue} | {r.currency for t in stats.by_tag for r in t.revenue}
    )
    yield _line([*TAG_COLUMNS, *_money_columns(currencies), *COST_COLUMNS, *LATER_COLUMNS])
    for tag in stats.by_tag:
        yield _line(
            [
                "tag",
                tag.tag_id,
                csv_cell(tag.code),
                csv_cell(tag.label or ""),
                tag.scans,
                tag.bot_scans,
                tag.burst_scans,
                tag.replayed_taps,
                tag.invalid_taps,
                tag.unique_visitors,
                tag.conversions,
                tag.conversion_rate,
                *_money(tag.revenue, currencies),
                None,
                None,
                None,
                tag.internal_scans,
            ]
        )
    yield _line(
        [
            "total",
            None,
            None,
            None,
            stats.scans,
            stats.bot_scans,
            stats.burst_scans,
            stats.replayed_taps,
            stats.invalid_taps,
            stats.unique_visitors,
            stats.conversions,
            stats.conversion_rate,
            *_money(stats.revenue, currencies),
            stats.cost.amount_minor if stats.cost else None,
            stats.cost.currency if stats.cost else None,
            stats.roas,
            stats.internal_scans,
        ]
    )


def attribution_csv(report: AttributionReport) -> Iterator[bytes]:
    """attribution.csv: the header, a line per row, the ``total`` and ``unattributed``
    lines."""
    key_column = {"tag": "tag_id", "location": "location_id", "day": "day"}[report.group_by]
    currencies = sorted(
        {r.currency for row in report.rows for r in row.revenue}
        | {r.currency for r in report.totals.revenue}
        | {r.currency for r in report.unattributed.revenue}
    )
    yield _line([key_column, "conversions", *_money_columns(currencies)])
    for row in report.rows:
        key = getattr(row, key_column)
        yield _line([key, row.conversions, *_money(row.revenue, currencies)])
    yield _line(["total", report.totals.conversions, *_money(report.totals.revenue, currencies)])
    lost = report.unattributed
    yield _line(["unattributed", lost.conversions, *_money(lost.revenue, currencies)])
