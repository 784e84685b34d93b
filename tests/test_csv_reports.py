"""CSV layouts of the reports: lines produced one point at a time, text cells guarded
against formulas, numbers (negative revenue included) left as numbers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator

from campaigns import csv_reports
from campaigns.schemas import CampaignStats, RevenueRead, SeriesPoint, TagStats


async def test_series_lines_are_produced_as_points_arrive() -> None:
    pulled: list[int] = []

    async def points() -> AsyncIterator[SeriesPoint]:
        for i in range(3):
            pulled.append(i)
            yield SeriesPoint(
                start=dt.datetime(2026, 3, 28 + i, tzinfo=dt.UTC),
                scans=i,
                unique_visitors=i,
                conversions=1,
                revenue=[RevenueRead(currency="EUR", amount_minor=-300 * i)],
            )

    lines = csv_reports.series_csv(points(), ("EUR", "USD"))
    header = await anext(lines)
    assert header == (
        b"start,scans,unique_visitors,conversions,revenue_minor_EUR,revenue_minor_USD\r\n"
    )
    assert pulled == []
    assert await anext(lines) == b"2026-03-28T00:00:00+00:00,0,0,1,0,\r\n"
    assert pulled == [0]  # one point read for one line written
    rest = [line async for line in lines]
    assert rest[-1] == b"2026-03-30T00:00:00+00:00,2,2,1,-600,\r\n"  # a number, no apostrophe


def test_text_cells_are_guarded() -> None:
    tag = TagStats(
        tag_id=1,
        code="7KQ2M9XD",
        label="-1+2",
        scans=0,
        bot_scans=0,
        bot_scans_by_reason={},
        burst_scans=0,
        replayed_taps=0,
        invalid_taps=0,
        internal_scans=0,
        unique_visitors=0,
        conversions=0,
        revenue=[],
        conversion_rate=0.0,
    )
    stats = CampaignStats.model_validate(
        {
            **tag.model_dump(exclude={"tag_id", "code", "label"}),
            "campaign_id": 1,
            "by_tag": [tag],
            "timezone": "UTC",
            "cost": None,
            "roas": None,
            "breakdowns": {"channel": [], "device_type": [], "os": [], "country": []},
        }
    )
    rows = list(csv.reader(io.StringIO(b"".join(csv_reports.stats_csv(stats)).decode())))
    assert rows[1][:4] == ["tag", "1", "7KQ2M9XD", "'-1+2"]
    assert rows[2][0] == "total"
