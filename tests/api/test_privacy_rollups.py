"""Retention and the report rollups: a purge leaves ``GET /v1/campaigns/{id}/stats``
(totals and the day series, read through the rollups) unchanged; days past the term
are frozen (no rebuild nor late conversion recomputes them); an erasure marks its days
dirty and the next pass takes the erased scan out of the figures."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.services import retention
from campaigns.services.rollups import floor_day, rebuild, rollup_pass
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.journeys import convert, eur, insert_scan
from tests.fixtures.privacy import column, set_retention

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
STATS = ("", "?interval=day", "?interval=day&tz=Europe/Paris", "?interval=hour")


def _visitor(n: int, at: dt.datetime) -> bytes:
    # Visitor ids are salted per UTC day: one id never spans two days.
    return f"{at.date().isoformat()}-{n:05d}".encode()


async def stats(client: httpx.AsyncClient, org: Org, campaign_id: int) -> list[dict[str, Any]]:
    """The campaign's stats: totals, the day series (UTC and Paris), the hour series."""
    bodies = []
    for query in STATS:
        response = await client.get(
            f"/v1/campaigns/{campaign_id}/stats{query}", headers=org.headers
        )
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    return bodies


async def rollup_state(engine: AsyncEngine) -> int:
    return int((await column(engine, "SELECT count(*) FROM rollup_state"))[0])


async def edge_journeys(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, now: dt.datetime
) -> tuple[int, str, str]:
    """Scans around the 30-day edge of ``org``: one second inside (kept), one second past
    (purged), older days, recent ones, bots, visitors, conversions. Returns the campaign
    id and the kept and purged click ids."""
    await set_retention(client, org, scans=30, precise=7)
    campaign = await make_campaign(client, org)
    tags = [await make_tag(client, org, campaign["id"], label=f"t{i}") for i in range(2)]
    horizon = now - 30 * DAY
    kept = await insert_scan(
        engine, org, tags[0], horizon + SECOND, visitor=_visitor(1, horizon + SECOND)
    )
    past = await insert_scan(
        engine, org, tags[0], horizon - SECOND, visitor=_visitor(1, horizon - SECOND)
    )
    for n, at in enumerate(
        (horizon - 3 * DAY, horizon - 3 * DAY + 2 * SECOND, horizon - 40 * DAY, now - 2 * DAY)
    ):
        await insert_scan(engine, org, tags[n % 2], at, visitor=_visitor(n % 3, at), os="iOS")
    await insert_scan(engine, org, tags[1], horizon - 2 * DAY, is_bot=True)
    # Conversions of scans about to be purged (recorded while they were retained).
    await convert(client, org, past, "order-1", horizon, eur(4990))
    old = await insert_scan(
        engine, org, tags[1], horizon - 5 * DAY, visitor=_visitor(7, horizon - 5 * DAY)
    )
    await convert(client, org, old, "order-2", horizon - 5 * DAY + SECOND, eur(100))
    return campaign["id"], kept, past


async def test_purge_at_the_edge_leaves_stats_unchanged(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    now = dt.datetime.now(dt.UTC)
    campaign_id, kept, past = await edge_journeys(client, org, engine, now)
    assert await rollup_state(engine) == 0
    before = await stats(client, org, campaign_id)  # from the raw rows (no rollups yet)
    assert before[0]["scans"] == 7 and before[0]["conversions"] == 2

    # The worker builds the retained days; the frozen ones (the day holding the
    # horizon and earlier) are left to the purge, which builds them before deleting.
    first = await rollup_pass(engine)
    assert first is not None and first.rebuilt
    report = await retention.purge(engine, now=now)
    assert report.as_dict()["counts"]["scans"] == 6
    # The days holding the horizon, and 2, 3, 5 and 40 days before it.
    assert report.sealed_days == 5
    remaining = await column(engine, "SELECT click_id FROM scans ORDER BY scanned_at")
    assert kept in remaining and past not in remaining
    assert len(remaining) == 2
    # Read through the rollups: the same totals and series.
    assert await rollup_state(engine) == 1
    assert await stats(client, org, campaign_id) == before
    # Later passes, and a purge again, change nothing.
    assert await rollup_pass(engine) is not None
    again = await retention.purge(engine, now=now + SECOND)
    assert (again.as_dict()["counts"]["scans"], again.sealed_days) == (0, 0)
    assert await stats(client, org, campaign_id) == before


async def test_a_rebuild_after_a_purge_keeps_the_purged_days(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    now = dt.datetime.now(dt.UTC)
    campaign_id, _, _ = await edge_journeys(client, org, engine, now)
    before = await stats(client, org, campaign_id)
    await retention.purge(engine, now=now)  # the worker never ran: the purge builds
    assert await rollup_pass(engine) is not None
    assert await stats(client, org, campaign_id) == before
    async with engine.connect() as conn:
        frozen = (
            await conn.execute(
                text("SELECT * FROM scan_rollups WHERE hour < :h ORDER BY 1, 2, 3"),
                {"h": floor_day(now - 30 * DAY) + DAY},
            )
        ).all()
    assert frozen
    # A full rebuild and a campaign's rebuild recompute only the retained days.
    assert await rebuild(engine) == 1  # the one retained day with scans
    assert await rebuild(engine, campaign_id=campaign_id) == 1
    assert await stats(client, org, campaign_id) == before
    async with engine.connect() as conn:
        after = (
            await conn.execute(
                text("SELECT * FROM scan_rollups WHERE hour < :h ORDER BY 1, 2, 3"),
                {"h": floor_day(now - 30 * DAY) + DAY},
            )
        ).all()
    assert after == frozen
    # Lengthening the retention later does not thaw the purged days.
    await set_retention(client, org, scans=395, precise=7)
    await rebuild(engine)
    assert await stats(client, org, campaign_id) == before


async def test_a_late_conversion_on_a_frozen_day_is_not_folded(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=30, precise=7)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC)
    day = floor_day(now - 30 * DAY) - 2 * DAY  # wholly past the term, not purged yet
    click = await insert_scan(
        engine, org, tag, day + dt.timedelta(hours=10), visitor=_visitor(1, day)
    )
    # Built while the day was retained (a pass 40 days ago).
    first = await rollup_pass(engine, now=now - 40 * DAY)
    assert first is not None and first.days == 1
    folded = await stats(client, org, campaign["id"])
    assert (folded[0]["scans"], folded[0]["conversions"]) == (1, 0)
    # The merchant reports an order of that click only now.
    conversion = await convert(client, org, click, "late", day + dt.timedelta(hours=11), eur(5))
    assert conversion["attributed"] is True
    async with engine.connect() as conn:
        snapshot = (await conn.execute(text("SELECT * FROM conversion_rollups"))).all()
    late = await rollup_pass(engine)
    assert late is not None and late.days == 0
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT * FROM conversion_rollups"))).all() == snapshot
    assert (await stats(client, org, campaign["id"]))[0]["conversions"] == 0
    # Neither does a rebuild.
    assert await rebuild(engine) == 0
    assert (await stats(client, org, campaign["id"]))[0]["conversions"] == 0


async def test_an_erasure_on_a_frozen_day_is_sealed_by_the_purge(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=30, precise=7)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC)
    day = floor_day(now - 30 * DAY) - 2 * DAY
    erased = await insert_scan(
        engine, org, tag, day + dt.timedelta(hours=9), visitor=_visitor(1, day)
    )
    await insert_scan(engine, org, tag, day + dt.timedelta(hours=10), visitor=_visitor(2, day))
    assert await rollup_pass(engine, now=now - 40 * DAY) is not None
    assert (await stats(client, org, campaign["id"]))[0]["scans"] == 2
    response = await client.delete(f"/v1/privacy/scans?click_id={erased}", headers=org.headers)
    assert response.status_code == 200, response.text
    # The worker does not recompute the frozen day but keeps its mark for the purge,
    # which recomputes it (its other scan still there) before deleting.
    assert await rollup_pass(engine) is not None
    assert await column(engine, "SELECT day FROM rollup_dirty") == [day.date()]
    report = await retention.purge(engine, now=now)
    assert (report.as_dict()["counts"]["scans"], report.sealed_days) == (1, 1)
    assert await column(engine, "SELECT count(*) FROM rollup_dirty") == [0]
    body = (await stats(client, org, campaign["id"]))[0]
    assert (body["scans"], body["unique_visitors"]) == (1, 1)


async def test_an_erasure_marks_its_days_dirty_and_a_pass_takes_it_out(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC)
    cookie = uuid.uuid4()
    erased = await insert_scan(
        engine, org, tag, now - 3 * DAY, visitor=_visitor(1, now), cookie=cookie
    )
    await insert_scan(engine, org, tag, now - 3 * DAY + SECOND, visitor=_visitor(2, now))
    await insert_scan(engine, org, tag, now - 2 * DAY, visitor=_visitor(3, now))
    await convert(client, org, erased, "order-1", now - DAY, eur(4990))
    assert await rollup_pass(engine) is not None
    before = await stats(client, org, campaign["id"])
    assert (before[0]["scans"], before[0]["unique_visitors"], before[0]["conversions"]) == (
        3,
        3,
        1,
    )
    response = await client.delete(f"/v1/privacy/scans?visitor={cookie}", headers=org.headers)
    assert response.status_code == 200, response.text
    # The scan's day and the unlinked conversion's day.
    marked = await column(engine, "SELECT day FROM rollup_dirty ORDER BY day")
    assert marked == sorted({(now - 3 * DAY).date(), (now - DAY).date()})
    second = await rollup_pass(engine)
    assert second is not None and second.days == 2
    assert await column(engine, "SELECT count(*) FROM rollup_dirty") == [0]
    after = await stats(client, org, campaign["id"])
    assert (after[0]["scans"], after[0]["unique_visitors"], after[0]["conversions"]) == (2, 2, 0)
    # The same figures as from the raw rows.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM rollup_state"))
    assert await stats(client, org, campaign["id"]) == after
