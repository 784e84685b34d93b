"""The group-commit scan writer against the real database: batching, the spool, replay
idempotency, torn spool lines, and rows the database refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.scanning.links import new_click_id
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.writer import ScanWriter
from tests.conftest import Org, make_campaign, make_tag


def record(**overrides: object) -> ScanRecord:
    values: dict[str, object] = {
        "click_id": new_click_id(),
        "organization_id": 1,
        "campaign_id": 1,
        "tag_id": 1,
        "scanned_at": dt.datetime.now(dt.UTC),
        "channel": "qr",
        "method": "GET",
        "outcome": "redirect",
        "destination": "https://shop.example.com/?pcid=x",
        "user_agent": "Mozilla/5.0 (iPhone)",
        "device_type": "mobile",
        "os": "iOS",
        "browser": "Mobile Safari",
        "is_bot": False,
        "ip_truncated": "203.0.113.0",
        "visitor_id": os.urandom(16),
    }
    values.update(overrides)
    return ScanRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
async def conninfo(database_url: str) -> AsyncIterator[str]:
    info = libpq_url(database_url)
    yield info
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
        await conn.execute("TRUNCATE scans CASCADE")


async def stored(conninfo: str) -> dict[str, tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        rows = await (
            await conn.execute("SELECT click_id, user_agent, ip_truncated FROM scans")
        ).fetchall()
    return {row[0]: row for row in rows}


async def test_concurrent_scans_are_grouped_into_few_commits(conninfo: str, tmp_path: Path) -> None:
    writer = ScanWriter(conninfo, tmp_path, batch_size=100)
    await writer.start()
    records = [record() for _ in range(300)]
    await asyncio.gather(*(writer.submit(r) for r in records))
    await writer.stop()
    assert set(await stored(conninfo)) == {r.click_id for r in records}
    assert writer.stats.committed == 300
    assert 3 <= writer.stats.batches < 300  # grouped, and no batch above its size


async def test_replay_is_idempotent_and_skips_a_torn_last_line(
    conninfo: str, tmp_path: Path
) -> None:
    already = record()
    writer = ScanWriter(conninfo, tmp_path)
    await writer.start()
    await writer.submit(already)
    await writer.stop()

    fresh = [record() for _ in range(5)]
    torn = record()
    spool = tmp_path / "scans-999999-000001.jsonl"  # left by a killed process
    lines = [r.to_json() + "\n" for r in [already, *fresh]]
    spool.write_text("".join(lines) + torn.to_json()[:40], encoding="utf-8")

    replayer = ScanWriter(conninfo, tmp_path)
    inserted = await replayer.replay_spools()
    assert inserted == 5
    rows = await stored(conninfo)
    assert set(rows) == {already.click_id, *(r.click_id for r in fresh)}
    assert torn.click_id not in rows
    assert not spool.exists()


async def test_a_refused_row_is_dead_lettered_and_the_batch_still_commits(
    conninfo: str, tmp_path: Path
) -> None:
    writer = ScanWriter(conninfo, tmp_path, batch_size=50, max_delay_s=0.01)
    await writer.start()
    good = [record() for _ in range(10)]
    bad = record(user_agent="broken\x00agent")  # PostgreSQL text cannot hold NUL
    await asyncio.gather(*(writer.submit(r) for r in [*good[:5], bad, *good[5:]]))
    assert writer.database_ok  # a data error is not an outage
    await writer.stop()
    assert set(await stored(conninfo)) == {r.click_id for r in good}
    dead = list(tmp_path.glob("rejected-*.jsonl"))
    assert len(dead) == 1
    assert ScanRecord.from_json(dead[0].read_text().splitlines()[0]) == bad


async def test_unreachable_database_spools_and_answers(tmp_path: Path) -> None:
    writer = ScanWriter("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path, connect_timeout_s=1)
    await writer.start()
    records = [record() for _ in range(20)]
    await asyncio.wait_for(asyncio.gather(*(writer.submit(r) for r in records)), 5)
    assert not writer.database_ok
    assert writer.stats.spooled == 20
    assert writer.spool_depth() == 20
    await writer.stop()
    lines = "".join(p.read_text() for p in tmp_path.glob("scans-*.jsonl")).splitlines()
    assert [ScanRecord.from_json(line) for line in lines] == records


async def test_replayed_scans_credit_conversions_that_arrived_first(
    client: httpx.AsyncClient, org: Org, conninfo: str, tmp_path: Path
) -> None:
    """During an outage the scan waits in the spool while the shop already reports the
    order: the conversion is stored unattributed, then credited when the scan lands."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    scan = record(organization_id=org.id, campaign_id=campaign["id"], tag_id=tag["id"])
    body = {"click_id": scan.click_id, "event": "purchase", "external_id": "order-late"}
    posted = await client.post("/v1/conversions", json=body, headers=org.headers)
    assert posted.status_code == 201 and posted.json()["attributed"] is False

    (tmp_path / "scans-999998-000001.jsonl").write_text(scan.to_json() + "\n", encoding="utf-8")
    assert await ScanWriter(conninfo, tmp_path).replay_spools() == 1

    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        row = await (
            await conn.execute(
                "SELECT c.campaign_id, c.tag_id, c.scan_id = s.id FROM conversions c "
                "JOIN scans s ON s.click_id = c.click_id WHERE c.external_id = 'order-late'"
            )
        ).fetchone()
    assert row == (campaign["id"], tag["id"], True)
