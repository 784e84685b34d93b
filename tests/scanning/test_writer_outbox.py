"""The scan writer's webhook outbox: rows written in the group commit and in spool replay
(once per scan, however often it is replayed), and none for organizations without a
``scan.created`` webhook."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.scanning.hooked import HookedOrganizations
from campaigns.scanning.links import new_click_id
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.writer import ScanWriter
from campaigns.settings import Settings
from tests.conftest import Org


def record(organization_id: int) -> ScanRecord:
    return ScanRecord(
        click_id=new_click_id(),
        organization_id=organization_id,
        campaign_id=1,
        tag_id=1,
        scanned_at=dt.datetime.now(dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://shop.example.com/?pcid=x",
        is_bot=False,
        visitor_id=os.urandom(16),
    )


async def outbox(conninfo: str) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        rows = await (
            await conn.execute("SELECT event_id, event_type FROM webhook_deliveries ORDER BY id")
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


async def hooked_now(conninfo: str) -> HookedOrganizations:
    hooked = HookedOrganizations()
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await hooked.load_all(conn)
    return hooked


async def test_commit_and_replay_write_one_row_per_scan(
    client: httpx.AsyncClient, org: Org, other_org: Org, settings: Settings, tmp_path: Path
) -> None:
    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/p", "events": ["scan.created"]},
        headers=org.headers,
    )
    assert created.status_code == 201
    conninfo = libpq_url(settings.database_url)
    hooked = await hooked_now(conninfo)
    assert hooked.scans == {org.id} and hooked.conversions == frozenset()

    live, theirs = record(org.id), record(other_org.id)
    writer = ScanWriter(conninfo, tmp_path, hooked=hooked)
    await writer.start()
    await writer.submit(live)
    await writer.submit(theirs)
    await writer.stop()
    assert await outbox(conninfo) == [(f"evt_scan_{live.click_id}", "scan.created")]

    # A spool left by a killed process: the live scan again (its commit reported an
    # error after succeeding), two new scans of the organization, one of the other.
    spooled = [record(org.id), record(org.id)]
    spool = tmp_path / "scans-999999-000001.jsonl"
    spool.write_text(
        "".join(r.to_json() + "\n" for r in [live, *spooled, record(other_org.id)]),
        encoding="utf-8",
    )
    replayer = ScanWriter(conninfo, tmp_path, hooked=hooked)
    assert await replayer.replay_spools() == 3
    assert await outbox(conninfo) == [
        (f"evt_scan_{r.click_id}", "scan.created") for r in [live, *spooled]
    ]


async def test_no_webhook_no_statement(
    client: httpx.AsyncClient,
    org: Org,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a ``scan.created`` webhook for the batch's organizations the group commit
    runs no outbox statement at all; with one, one statement per batch."""
    executed: list[str] = []
    real_execute = psycopg.AsyncConnection.execute

    async def spy(self: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kw: Any) -> Any:
        executed.append(str(query))
        return await real_execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", spy)
    conninfo = libpq_url(settings.database_url)
    hooked = await hooked_now(conninfo)
    writer = ScanWriter(conninfo, tmp_path, hooked=hooked)
    await writer.start()
    await writer.submit(record(org.id))
    assert not [sql for sql in executed if "webhook_deliveries" in sql]

    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/p", "events": ["scan.created"]},
        headers=org.headers,
    )
    assert created.status_code == 201
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await hooked.load_all(conn)
    scan = record(org.id)
    await writer.submit(scan)
    await writer.stop()
    assert len([sql for sql in executed if "webhook_deliveries" in sql]) == 1
    assert await outbox(conninfo) == [(f"evt_scan_{scan.click_id}", "scan.created")]
