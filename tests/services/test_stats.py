"""``campaign_stats`` on rows built through the services and the real scan writer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from campaigns.db import unit_of_work
from campaigns.errors import InvalidInput, NotFound
from campaigns.schemas import RevenueRead
from campaigns.services.stats import campaign_stats
from tests.fixtures.factories import (
    make_campaign,
    make_conversion,
    make_org,
    make_tag,
    scan_record,
    write_scans,
)

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
VISITOR_A, VISITOR_B = b"A" * 16, b"B" * 16


async def _scenario(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, spool: Path
) -> dict[str, int]:
    """Two tags. Window tag: visitor A twice, B once, one bot; door tag: visitor A once;
    one scan of window a day later. Conversions: EUR 10.00 and one without value on
    window scans, USD 5.00 on the door scan, one on an unknown click id."""
    async with unit_of_work(sessionmaker) as session:
        org = await make_org(session)
        other = await make_org(session, name="Globex")
        campaign = await make_campaign(session, organization_id=org.id)
        window = await make_tag(session, organization_id=org.id, campaign_id=campaign.id)
        door = await make_tag(
            session, organization_id=org.id, campaign_id=campaign.id, label="door"
        )
    scans = [
        scan_record(window, scanned_at=T0, visitor_id=VISITOR_A),
        scan_record(window, scanned_at=T0 + dt.timedelta(minutes=5), visitor_id=VISITOR_A),
        scan_record(window, scanned_at=T0 + dt.timedelta(minutes=9), visitor_id=VISITOR_B),
        scan_record(window, scanned_at=T0, is_bot=True, visitor_id=VISITOR_B),
        scan_record(door, scanned_at=T0 + dt.timedelta(hours=1), visitor_id=VISITOR_A),
        scan_record(window, scanned_at=T0 + dt.timedelta(days=1), visitor_id=VISITOR_B),
    ]
    await write_scans(database_url, spool, scans)
    async with unit_of_work(sessionmaker) as session:
        paid = {"amount_minor": 1000, "currency": "EUR"}
        await make_conversion(
            session,
            organization_id=org.id,
            click_id=scans[0].click_id,
            value=paid,
            occurred_at=T0 + dt.timedelta(minutes=30),
        )
        await make_conversion(
            session,
            organization_id=org.id,
            click_id=scans[2].click_id,
            occurred_at=T0 + dt.timedelta(minutes=31),
        )
        await make_conversion(
            session,
            organization_id=org.id,
            click_id=scans[4].click_id,
            value={"amount_minor": 500, "currency": "USD"},
            occurred_at=T0 + dt.timedelta(hours=2),
        )
        await make_conversion(session, organization_id=org.id, click_id="unknown-click")
    return {
        "org": org.id,
        "other": other.id,
        "campaign": campaign.id,
        "window": window.id,
        "door": door.id,
    }


async def test_figures_per_campaign_and_per_tag(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    ids = await _scenario(sessionmaker, database_url, tmp_path)
    async with sessionmaker() as session:
        stats = await campaign_stats(
            session, organization_id=ids["org"], campaign_id=ids["campaign"]
        )
    assert (stats.scans, stats.bot_scans, stats.unique_visitors) == (5, 1, 2)
    assert stats.conversions == 3
    assert stats.revenue == [
        RevenueRead(currency="EUR", amount_minor=1000),
        RevenueRead(currency="USD", amount_minor=500),
    ]
    assert stats.conversion_rate == pytest.approx(3 / 5)
    window, door = stats.by_tag
    assert (window.tag_id, door.tag_id) == (ids["window"], ids["door"])
    assert (window.scans, window.bot_scans, window.unique_visitors) == (4, 1, 2)
    assert (window.conversions, window.conversion_rate) == (2, pytest.approx(2 / 4))
    assert window.revenue == [RevenueRead(currency="EUR", amount_minor=1000)]
    assert (door.scans, door.bot_scans, door.unique_visitors, door.conversions) == (1, 0, 1, 1)
    assert door.revenue == [RevenueRead(currency="USD", amount_minor=500)]
    assert door.conversion_rate == 1.0


async def test_window_is_start_inclusive_end_exclusive(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    ids = await _scenario(sessionmaker, database_url, tmp_path)
    async with sessionmaker() as session:
        first_hour = await campaign_stats(
            session,
            organization_id=ids["org"],
            campaign_id=ids["campaign"],
            start=T0,
            end=T0 + dt.timedelta(hours=1),  # the door scan, at exactly +1 h, is out
        )
        next_day = await campaign_stats(
            session,
            organization_id=ids["org"],
            campaign_id=ids["campaign"],
            start=T0 + dt.timedelta(days=1),
        )
    assert (first_hour.scans, first_hour.bot_scans, first_hour.unique_visitors) == (3, 1, 2)
    assert first_hour.conversions == 2  # the USD one occurred at +2 h
    assert first_hour.revenue == [RevenueRead(currency="EUR", amount_minor=1000)]
    assert first_hour.from_ == T0 and first_hour.to == T0 + dt.timedelta(hours=1)
    assert (next_day.scans, next_day.unique_visitors, next_day.conversions) == (1, 1, 0)
    assert next_day.conversion_rate == 0.0
    assert [t.scans for t in next_day.by_tag] == [1, 0]


async def test_refusals(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    ids = await _scenario(sessionmaker, database_url, tmp_path)
    async with sessionmaker() as session:
        with pytest.raises(InvalidInput) as bad_window:
            await campaign_stats(
                session,
                organization_id=ids["org"],
                campaign_id=ids["campaign"],
                start=T0,
                end=T0,
            )
        with pytest.raises(NotFound) as foreign:
            await campaign_stats(session, organization_id=ids["other"], campaign_id=ids["campaign"])
    assert bad_window.value.code == "invalid_window"
    assert foreign.value.code == "campaign_not_found"
