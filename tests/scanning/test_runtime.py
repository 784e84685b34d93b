"""Upkeep of the scan path's in-memory state across outages and disk failures: visitor
salts cached ahead, the snapshot written apart from the load, and the cache journal.

Several ScanService instances sharing one data directory stand for server processes;
a service whose database URL points at a closed port stands for a process started
while PostgreSQL is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app, served_app
from campaigns.db import libpq_url
from campaigns.models import utcnow
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.runtime import JOURNAL_DIR, SNAPSHOT_FILE
from campaigns.scanning.service import ScanService
from campaigns.scanning.visitors import SALT_FILE, VisitorIds
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

#: Nothing listens there: connections are refused at once.
DOWN = "postgresql://postgres@127.0.0.1:1/postgres"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def services(
    database_url: str, data_dir: Path, settings: Settings
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start(up=True)`` starts a ScanService on the shared data dir."""
    started: list[ScanService] = []

    async def start(*, up: bool = True) -> ScanService:
        service = ScanService(
            conninfo=libpq_url(database_url) if up else DOWN,
            data_dir=data_dir,
            secret_key=settings.secret_key,
        )
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


def scan_request(code: str, *, client_host: str = "198.51.100.7") -> ScanRequest:
    return ScanRequest.from_http(
        code=code,
        prefix="/s/",
        channel=None,
        method="GET",
        client_host=client_host,
        headers=[(b"user-agent", IPHONE_SAFARI.encode())],
        query_string=b"",
        received_at=utcnow(),
    )


async def record(service: ScanService, code: str) -> str:
    request = scan_request(code)
    resolution = service.resolve(request)
    assert resolution is not None, f"{code} unknown to this process"
    _, scan, _ = await service.record(request, resolution)
    return scan.click_id


async def visitor_ids(engine: AsyncEngine) -> dict[str, bytes]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT click_id, visitor_id FROM scans"))).all()
    return {click_id: bytes(visitor) for click_id, visitor in rows}


# -- visitor salts -----------------------------------------------------------------------


async def test_salts_exist_ahead_are_cached_private_and_end_with_their_day(
    client: httpx.AsyncClient, services: Any, data_dir: Path, engine: AsyncEngine
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO visitor_salts (day, salt) VALUES (:d, :s)"),
            {"d": yesterday, "s": b"\x02" * 32},
        )
    service = await services()
    assert service.visitors.days == [today, today + dt.timedelta(days=1)]
    async with engine.connect() as conn:
        days = (await conn.execute(text("SELECT day FROM visitor_salts ORDER BY day"))).scalars()
        assert list(days) == [today, today + dt.timedelta(days=1)]
    path = data_dir / SALT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cached = VisitorIds(path, secret_key="unused")
    assert cached.load_cached() == 2
    assert cached.days == service.visitors.days

    # The day after tomorrow, the cached copy of today's salt is forgotten, on disk too.
    later = VisitorIds(path, secret_key="unused")
    assert later.load_cached(today=today + dt.timedelta(days=1)) == 1
    assert VisitorIds(path, secret_key="unused").load_cached(today=yesterday) == 1


async def test_same_visitor_id_through_the_database_and_through_the_spool(
    client: httpx.AsyncClient, org: Org, services: Any, engine: AsyncEngine
) -> None:
    """A phone scanning twice the same day is one visitor, whether its scan went straight
    to the database or through a spool written during an outage."""
    campaign = await make_campaign(client, org)
    other = await make_campaign(client, org, name="Other")
    tag = await make_tag(client, org, campaign["id"])
    other_tag = await make_tag(client, org, other["id"])

    first = await services()  # salts created and cached; the snapshot holds both tags
    direct = await record(first, tag["code"])
    await first.stop()

    during_outage = await services(up=False)
    assert not during_outage.cache.loaded_from_db
    spooled = [
        await record(during_outage, tag["code"]),
        await record(during_outage, other_tag["code"]),
    ]
    assert not during_outage.writer.database_ok
    await during_outage.stop()
    assert spooled[0] not in await visitor_ids(engine)

    await services()  # replays the spool at start
    for _ in range(100):
        stored = await visitor_ids(engine)
        if len(stored) == 3:
            break
        await asyncio.sleep(0.05)
    assert stored[direct] == stored[spooled[0]] == stored[spooled[1]]


async def test_organizations_get_different_visitor_ids(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    services: Any,
    engine: AsyncEngine,
) -> None:
    tags = []
    for owner in (org, other_org):
        campaign = await make_campaign(client, owner)
        tags.append(await make_tag(client, owner, campaign["id"]))
    service = await services()
    ids = [await record(service, tag["code"]) for tag in tags]
    stored = await visitor_ids(engine)
    assert stored[ids[0]] != stored[ids[1]]


# -- the snapshot when the disk misbehaves -----------------------------------------------


async def test_a_snapshot_failure_keeps_the_database_copy_and_is_reported(
    client: httpx.AsyncClient, org: Org, settings: Settings, data_dir: Path
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    # A directory where the snapshot file goes: every write of it fails (chmod would not
    # stop root), as on a read-only or full volume.
    (data_dir / SNAPSHOT_FILE).mkdir(parents=True)
    app: FastAPI = create_app(settings.model_copy(update={"data_dir": data_dir}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=served_app(app), client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
            ready = await c.get("/health/ready")
            scan = await c.get(f"/s/{tag['code']}")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["cache_from_database"] is True
    assert body["snapshot"].startswith("failed: ")
    assert scan.status_code == 302


# -- the journal: recent changes survive into a cold start -------------------------------


async def test_a_process_started_during_an_outage_knows_recent_changes(
    client: httpx.AsyncClient, org: Org, services: Any, data_dir: Path
) -> None:
    campaign = await make_campaign(client, org)
    old = await make_tag(client, org, campaign["id"], label="old")
    running = await services()  # its snapshot holds "old" only
    assert running.runtime.snapshot_status == "ok"

    # Minutes before the outage (here: seconds): a tag is created, another disabled, the
    # campaign re-pointed. The running process hears it through NOTIFY and journals it.
    new = await make_tag(client, org, campaign["id"], label="new")
    await client.patch(f"/v1/tags/{old['id']}", json={"status": "disabled"}, headers=org.headers)
    await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"destination_url": "https://shop.example.com/autumn"},
        headers=org.headers,
    )
    journal = data_dir / JOURNAL_DIR
    for _ in range(100):  # flushed within FLUSH_INTERVAL_S
        text_ = "".join(p.read_text() for p in journal.glob("*.jsonl"))
        if "autumn" in text_ and "new" in text_:
            break
        await asyncio.sleep(0.05)

    cold = await services(up=False)
    assert cold.cache.loaded_from_snapshot and not cold.cache.loaded_from_db
    resolution = cold.resolve(scan_request(new["code"]))
    assert resolution is not None
    assert resolution.destination == "https://shop.example.com/autumn"
    assert cold.resolve(scan_request(old["code"])) is None
    assert running.resolve(scan_request(new["code"])) is not None


async def test_snapshot_compacts_journal_segments_it_covers(
    client: httpx.AsyncClient, org: Org, services: Any, data_dir: Path
) -> None:
    campaign = await make_campaign(client, org)
    running = await services()
    tag = await make_tag(client, org, campaign["id"])
    await running.reload(tag_ids=[tag["id"]])
    await asyncio.to_thread(running.runtime.journal.flush)
    journal = data_dir / JOURNAL_DIR
    segments = sorted(journal.glob("*.jsonl"))
    assert len(segments) == 1 and str(os.getpid()) in segments[0].name

    # Not yet covered: the snapshot's synced_at is not OVERLAP past the entries.
    await running.runtime.save_snapshot()
    assert sorted(journal.glob("*.jsonl")) == segments
    # Covered once the cache has synced past them (here: its sync time moved ahead).
    assert running.cache.synced_at is not None
    running.cache.synced_at += dt.timedelta(minutes=2)
    await running.runtime.save_snapshot()
    assert list(journal.glob("*.jsonl")) == []


def test_journal_replay_keeps_the_newest_version_and_gone_rows_win(tmp_path: Path) -> None:
    from campaigns.scanning.cache import Changes, TagCache
    from campaigns.scanning.journal import CacheJournal, replay

    t0 = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    campaign = (1, 1, "s", "https://a.example/", None, None, None, {}, False, False)
    first, second = CacheJournal(tmp_path), CacheJournal(tmp_path)
    tag_v1 = (5, "AAAAAAAA", 1, "qr", "v1", None, "active")
    tag_v2 = (5, "AAAAAAAA", 1, "qr", "v2", None, "active")
    # Process "second" flushed the newer version first; "first" flushes the older later.
    second.append(Changes([(*campaign, t0)], [(*tag_v2, t0 + dt.timedelta(seconds=2))], [], [], t0))
    second.flush()
    first.append(Changes([], [(*tag_v1, t0 + dt.timedelta(seconds=1))], [], [], t0))
    first.append(Changes([], [(6, "BBBBBBBB", 1, "qr", None, None, "active", t0)], [], [], t0))
    first.append(Changes([], [], [], [6], t0 + dt.timedelta(seconds=3)))
    first.flush()
    cache = TagCache()
    assert replay(tmp_path, cache, since=None) == 3
    hit = cache.lookup("AAAAAAAA")
    assert hit is not None and hit[0].label == "v2"
    assert cache.lookup("BBBBBBBB") is None
    # Entries older than the snapshot's sync (minus the overlap) are left to the snapshot.
    stale = TagCache()
    assert replay(tmp_path, stale, since=t0 + dt.timedelta(minutes=5)) == 0
    first.close()
    second.close()


async def test_journal_is_not_on_the_request_path(
    client: httpx.AsyncClient, org: Org, services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-reads queue journal lines in memory; only the background task writes them."""
    campaign = await make_campaign(client, org)
    running = await services()
    written: list[int] = []
    write = running.runtime.journal.write

    def counted(lines: list[str]) -> None:
        written.append(len(lines))
        write(lines)

    monkeypatch.setattr(running.runtime.journal, "write", counted)
    tag = await make_tag(client, org, campaign["id"])
    await running.reload(tag_ids=[tag["id"]])
    assert written == [] and running.runtime.journal.pending >= 1
    for _ in range(60):
        if written and running.runtime.journal.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert written and running.runtime.journal.pending == 0


async def test_a_cold_start_applies_redirect_rules_store_matching_and_cookie_settings(
    client: httpx.AsyncClient, org: Org, services: Any, data_dir: Path
) -> None:
    louvre = {"type": "Point", "coordinates": [2.3376, 48.8606]}
    store = await client.post(
        "/v1/locations",
        json={"name": "Louvre", "point": louvre, "radius_m": 500},
        headers=org.headers,
    )
    assert store.status_code == 201, store.text
    store_id = store.json()["id"]
    campaign = await make_campaign(client, org)
    rule = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules",
        json={
            "priority": 1,
            "when": {"location_ids": [store_id]},
            "destination_url": "https://shop.example.com/louvre",
        },
        headers=org.headers,
    )
    assert rule.status_code == 201, rule.text
    # Placed near the store, in no store: only the store's area matches it.
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        placement={"type": "Point", "coordinates": [2.3380, 48.8608]},
    )
    assert tag["location_id"] is None
    patched = await client.patch(
        "/v1/organization", json={"visitor_cookie": True}, headers=org.headers
    )
    assert patched.status_code == 200
    running = await services()  # writes the snapshot and the side snapshot
    assert running.runtime.side_snapshot_path.exists()

    cold = await services(up=False)
    assert cold.cache.loaded_from_snapshot and not cold.cache.loaded_from_db
    assert cold.runtime.side_loaded_from_snapshot
    request = scan_request(tag["code"])
    resolution = cold.resolve(request)
    assert resolution is not None
    draft = cold.build(request, resolution)
    assert (draft.location_id, draft.destination, draft.rule_id) == (
        store_id,
        "https://shop.example.com/louvre",
        rule.json()["id"],
    )
    assert draft.cookie_action == "set" and draft.cookie_id is not None


async def test_the_side_snapshot_follows_changes_within_a_flush(
    client: httpx.AsyncClient, org: Org, services: Any, data_dir: Path
) -> None:
    campaign = await make_campaign(client, org)
    running = await services()
    path = running.runtime.side_snapshot_path
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules",
        json={
            "priority": 5,
            "when": {"countries": ["FR"]},
            "destination_url": "https://fr.example/",
        },
        headers=org.headers,
    )
    assert response.status_code == 201
    for _ in range(100):  # the NOTIFY re-read, then the next journal flush
        if path.exists() and "https://fr.example/" in path.read_text():
            break
        await asyncio.sleep(0.05)
    cold = await services(up=False)
    (rule,) = cold.rules.rules_for(campaign["id"])
    assert (rule.id, rule.countries) == (response.json()["id"], frozenset({"FR"}))


def test_a_broken_side_snapshot_leaves_the_caches_empty(tmp_path: Path) -> None:
    from campaigns.scanning.locations import LocationCache
    from campaigns.scanning.organizations import CookieSettings
    from campaigns.scanning.rules import RuleCache
    from campaigns.scanning.side_snapshot import load_side_snapshot

    path = tmp_path / "side.snapshot.json"
    caches: dict[str, Any] = {
        "locations": LocationCache(),
        "redirect_rules": RuleCache(),
        "organizations": CookieSettings(),
    }
    assert load_side_snapshot(path, caches) == []  # none yet
    path.write_text(
        '{"format": "passerelle-side/1", "locations": [[1]], '
        '"redirect_rules": "x", "organizations": [[7, "ask"]]}'
    )
    assert load_side_snapshot(path, caches) == ["organizations"]
    assert len(caches["locations"]) == 0 and len(caches["redirect_rules"]) == 0
    assert caches["organizations"].consent_mode(7) == "ask"
    path.write_text("{torn")
    assert load_side_snapshot(path, caches) == []
