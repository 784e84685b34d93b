"""The in-memory tag cache against real PostgreSQL: full load, targeted reloads,
reconcile, snapshot, and how the running app learns about changes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from campaigns.db import libpq_url
from campaigns.payloads.keys import SunKeys
from campaigns.scanning.cache import CampaignEntry, TagCache
from campaigns.scanning.journal import CacheJournal, replay
from campaigns.scanning.service import ScanService
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag

UTC = dt.UTC


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    connection = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    async with connection:
        yield connection


def _entry(**overrides: Any) -> CampaignEntry:
    values: dict[str, Any] = {
        "id": 1,
        "organization_id": 1,
        "slug": "s",
        "destination_url": "https://shop.example.com/",
        "fallback_url": None,
        "starts_at": None,
        "ends_at": None,
        "utm": {},
        "archived": False,
    }
    values.update(overrides)
    return CampaignEntry(**values)


def test_campaign_schedule_is_start_inclusive_end_exclusive() -> None:
    now = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    second = dt.timedelta(seconds=1)
    assert _entry().is_live(now)
    assert _entry(starts_at=now).is_live(now)
    assert not _entry(starts_at=now + second).is_live(now)
    assert _entry(ends_at=now + second).is_live(now)
    assert not _entry(ends_at=now).is_live(now)
    assert not _entry(archived=True).is_live(now)


async def test_load_all_holds_active_tags_of_live_campaigns(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    campaign = await make_campaign(
        client, org, utm={"source": "flyer"}, fallback_url="https://shop.example.com/later"
    )
    active = await make_tag(client, org, campaign["id"], label="door")
    override = await make_tag(
        client, org, campaign["id"], label=None, destination_url="https://shop.example.com/o"
    )
    disabled = await make_tag(client, org, campaign["id"])
    response = await client.patch(
        f"/v1/tags/{disabled['id']}", json={"status": "disabled"}, headers=org.headers
    )
    assert response.status_code == 200
    deleted = await make_campaign(client, org, name="Gone")
    orphan = await make_tag(client, org, deleted["id"])
    assert (
        await client.delete(f"/v1/campaigns/{deleted['id']}", headers=org.headers)
    ).status_code == 204

    cache = TagCache()
    await cache.load_all(conn)

    assert cache.loaded_from_db and cache.synced_at is not None
    assert len(cache) == 3  # the orphan's tag row is active; its campaign is not
    hit = cache.lookup(active["code"])
    assert hit is not None
    tag, entry = hit
    assert (tag.id, tag.code, tag.campaign_id, tag.kind, tag.label, tag.destination_url) == (
        active["id"],
        active["code"],
        campaign["id"],
        "qr",
        "door",
        None,
    )
    assert entry.slug == campaign["slug"]
    assert entry.destination_url == "https://shop.example.com/summer"
    assert entry.fallback_url == "https://shop.example.com/later"
    assert entry.utm == {"source": "flyer"}
    assert entry.organization_id == org.id
    override_hit = cache.lookup(override["code"])
    assert override_hit is not None
    assert override_hit[0].destination_url == "https://shop.example.com/o"
    assert cache.lookup(disabled["code"]) is None
    assert cache.lookup(orphan["code"]) is None
    assert cache.lookup(active["code"].lower()) is None  # lookups take normalised codes


async def test_reload_applies_and_forgets_rows(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    campaign = await make_campaign(client, org)
    first = await make_tag(client, org, campaign["id"])
    second = await make_tag(client, org, campaign["id"])
    cache = TagCache()
    await cache.load_all(conn)

    await conn.execute("UPDATE tags SET status = 'disabled' WHERE id = %s", (first["id"],))
    await conn.execute(
        "UPDATE campaigns SET destination_url = 'https://shop.example.com/new' WHERE id = %s",
        (campaign["id"],),
    )
    await conn.execute("DELETE FROM tags WHERE id = %s", (second["id"],))
    await cache.reload(conn, tag_ids=[first["id"], second["id"]], campaign_ids=[campaign["id"]])

    assert cache.lookup(first["code"]) is None
    assert cache.lookup(second["code"]) is None
    assert len(cache) == 0

    await conn.execute("UPDATE tags SET status = 'active' WHERE id = %s", (first["id"],))
    await cache.reload(conn, tag_ids=[first["id"]])
    hit = cache.lookup(first["code"])
    assert hit is not None
    assert hit[1].destination_url == "https://shop.example.com/new"

    await conn.execute("DELETE FROM campaigns WHERE id = %s", (campaign["id"],))
    await cache.reload(conn, campaign_ids=[campaign["id"]])
    assert cache.lookup(first["code"]) is None


async def test_reconcile_applies_rows_changed_since_the_last_sync(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    cache = TagCache()
    await cache.reconcile(conn)  # never synced: a full load
    assert cache.lookup(tag["code"]) is not None
    synced = cache.synced_at

    await conn.execute(
        "UPDATE tags SET status = 'disabled', updated_at = clock_timestamp() WHERE id = %s",
        (tag["id"],),
    )
    await conn.execute(
        "UPDATE campaigns SET archived = true, updated_at = clock_timestamp() WHERE id = %s",
        (campaign["id"],),
    )
    later = await make_tag(client, org, campaign["id"])
    await cache.reconcile(conn)

    assert cache.synced_at is not None and synced is not None and cache.synced_at > synced
    assert cache.lookup(tag["code"]) is None
    hit = cache.lookup(later["code"])
    assert hit is not None
    assert hit[1].archived is True


async def test_prune_forgets_rows_deleted_behind_the_caches_back(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    campaign = await make_campaign(client, org)
    kept = await make_tag(client, org, campaign["id"])
    deleted = await make_tag(client, org, campaign["id"])
    disabled = await make_tag(client, org, campaign["id"])
    gone_campaign = await make_campaign(client, org, name="Gone")
    orphan = await make_tag(client, org, gone_campaign["id"])
    cache = TagCache()
    await cache.load_all(conn)
    assert len(cache) == 4
    # Changes whose NOTIFY this cache never saw; reconcile cannot see deleted rows (the
    # campaign's deletion cascades to its tag).
    await conn.execute("DELETE FROM tags WHERE id = %s", (deleted["id"],))
    await conn.execute("UPDATE tags SET status = 'disabled' WHERE id = %s", (disabled["id"],))
    await conn.execute("DELETE FROM campaigns WHERE id = %s", (gone_campaign["id"],))
    assert cache.lookup(deleted["code"]) is not None

    forgotten = await cache.prune(conn, chunk=2)

    assert forgotten == 3
    assert cache.lookup(kept["code"]) is not None
    for tag in (deleted, disabled, orphan):
        assert cache.lookup(tag["code"]) is None
    assert len(cache) == 1
    assert await cache.prune(conn) == 0


async def test_snapshot_round_trip(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any], tmp_path: Path
) -> None:
    starts = dt.datetime(2026, 1, 1, 8, tzinfo=UTC)
    campaign = await make_campaign(
        client,
        org,
        starts_at=starts.isoformat(),
        ends_at="2099-01-01T00:00:00+02:00",
        utm={"source": "flyer", "term": "t"},
        fallback_url="https://shop.example.com/fb",
    )
    tags = [await make_tag(client, org, campaign["id"], label=f"t{i}") for i in range(3)]
    cache = TagCache()
    await cache.load_all(conn)
    path = tmp_path / "snap" / "tags.snapshot.json"
    cache.save_snapshot(path)
    assert not list(path.parent.glob("*.tmp"))  # written atomically

    restored = TagCache()
    assert restored.load_snapshot(path) is True
    assert restored.loaded_from_db is False  # a snapshot is not the database
    assert len(restored) == len(cache) == 3
    for tag in tags:
        assert restored.lookup(tag["code"]) == cache.lookup(tag["code"])
    hit = restored.lookup(tags[0]["code"])
    assert hit is not None
    assert hit[1].starts_at == starts
    assert hit[1].ends_at == dt.datetime(2098, 12, 31, 22, tzinfo=UTC)


@pytest.mark.parametrize("content", [None, "", "{", "[]", '{"campaigns": [[1]], "tags": []}'])
def test_unreadable_snapshot_is_refused_and_keeps_the_cache(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "tags.snapshot.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    cache = TagCache()
    cache._campaigns[1] = _entry()
    assert cache.load_snapshot(path) is False
    assert 1 in cache._campaigns


async def test_app_cache_follows_api_writes_at_once(
    app: FastAPI, client: httpx.AsyncClient, org: Org
) -> None:
    scans: ScanService = app.state.scans
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert scans.cache.lookup(tag["code"]) is not None
    await client.patch(f"/v1/tags/{tag['id']}", json={"status": "disabled"}, headers=org.headers)
    assert scans.cache.lookup(tag["code"]) is None
    await client.patch(f"/v1/tags/{tag['id']}", json={"status": "active"}, headers=org.headers)
    await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"destination_url": "https://shop.example.com/autumn"},
        headers=org.headers,
    )
    hit = scans.cache.lookup(tag["code"])
    assert hit is not None
    assert hit[1].destination_url == "https://shop.example.com/autumn"
    await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    assert scans.cache.lookup(tag["code"]) is None


async def test_app_cache_follows_writes_of_other_processes_within_a_second(
    app: FastAPI, client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    scans: ScanService = app.state.scans
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert scans.cache.lookup(tag["code"]) is not None
    # Another server process (or an operator) disables the tag.
    await conn.execute(
        "UPDATE tags SET status = 'disabled', updated_at = now() WHERE id = %s", (tag["id"],)
    )
    for _ in range(20):
        if scans.cache.lookup(tag["code"]) is None:
            break
        await asyncio.sleep(0.05)
    assert scans.cache.lookup(tag["code"]) is None


async def _until(predicate: Any, seconds: float = 2.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_app_cache_follows_bulk_statements(
    app: FastAPI, client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    """One statement, one notification: a few rows are listed by id, a bulk import of
    more than 200 is announced as "tags:*" and caught up by reconcile."""
    scans: ScanService = app.state.scans
    campaign = await make_campaign(client, org)
    rows = [(org.id, campaign["id"], f"BX{i:06d}", "qr") for i in range(300)]
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO tags (organization_id, campaign_id, code, kind) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[])",
            [list(column) for column in zip(*rows, strict=True)],
        )
    assert await _until(lambda: scans.cache.lookup("BX000299") is not None)
    assert all(scans.cache.lookup(f"BX{i:06d}") is not None for i in range(300))
    assert (await client.get("/s/bx000150")).status_code == 302

    await conn.execute(
        "UPDATE tags SET status = 'disabled', updated_at = now() WHERE code = ANY(%s)",
        (["BX000001", "BX000002", "BX000003"],),
    )
    assert await _until(lambda: scans.cache.lookup("BX000003") is None)
    assert scans.cache.lookup("BX000001") is None
    assert scans.cache.lookup("BX000004") is not None

    await conn.execute("DELETE FROM tags WHERE campaign_id = %s", (campaign["id"],))
    assert await _until(lambda: scans.cache.lookup("BX000299") is None)


async def test_a_sync_in_flight_cannot_resurrect_an_older_row(
    client: httpx.AsyncClient, org: Org, conn: psycopg.AsyncConnection[Any]
) -> None:
    """A reconcile reads rows, a NOTIFY re-read applies a newer version meanwhile, then
    the reconcile applies the older row it had fetched: the sync re-reads at its end."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    cache = TagCache()
    await cache.load_all(conn)
    stale = (tag["id"], tag["code"], campaign["id"], "qr", tag["label"], None, "active")
    await conn.execute("UPDATE tags SET status = 'disabled' WHERE id = %s", (tag["id"],))
    async with cache._sync(conn):  # a reconcile in flight
        await cache.reload(conn, tag_ids=[tag["id"]])  # the NOTIFY's re-read
        assert cache.lookup(tag["code"]) is None
        cache._apply_tag(stale)  # the reconcile applies what it fetched earlier
        assert cache.lookup(tag["code"]) is not None
    assert cache.lookup(tag["code"]) is None


async def test_sun_tags_hold_keys_unsealed_in_memory_and_sealed_on_disk(
    client: httpx.AsyncClient,
    org: Org,
    conn: psycopg.AsyncConnection[Any],
    settings: Settings,
    tmp_path: Path,
) -> None:
    keys = SunKeys(meta_read=os.urandom(16), file_read=os.urandom(16))
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        nfc={
            "uid": "04A1B2C3D4E5F6",
            "sdm_meta_read_key": keys.meta_read.hex(),
            "sdm_file_read_key": keys.file_read.hex(),
        },
    )
    qr = await make_tag(client, org, campaign["id"])
    cache = TagCache(secret_key=settings.secret_key)
    await cache.load_all(conn)
    hit = cache.lookup(tag["code"])
    assert hit is not None
    entry, campaign_entry = hit
    assert campaign_entry.nfc_invalid_tap == "block"
    assert entry.sun is not None
    assert (entry.sun.uid, entry.sun.keys) == (bytes.fromhex("04A1B2C3D4E5F6"), keys)
    assert cache.lookup(qr["code"]) is not None
    assert cache.lookup(qr["code"])[0].sun is None  # type: ignore[index]

    def assert_no_clear_keys(data: bytes) -> None:
        for key in (keys.meta_read, keys.file_read):
            assert key not in data
            assert key.hex().encode() not in data.lower()

    # Snapshot: the sealed keys, opened again on load.
    path = tmp_path / "tags.snapshot.json"
    cache.save_snapshot(path)
    assert_no_clear_keys(path.read_bytes())
    restored = TagCache(secret_key=settings.secret_key)
    assert restored.load_snapshot(path) is True
    assert restored.lookup(tag["code"]) == hit

    # Journal: the rows re-read after a change, replayed into a cold cache.
    journal = CacheJournal(tmp_path / "journal")
    journal.append(await cache.reload(conn, tag_ids=[tag["id"]], campaign_ids=[campaign["id"]]))
    assert journal.flush() == 2
    assert_no_clear_keys(b"".join(p.read_bytes() for p in journal.directory.glob("*.jsonl")))
    cold = TagCache(secret_key=settings.secret_key)
    assert replay(journal.directory, cold, since=None) == 2
    assert cold.lookup(tag["code"]) == hit
    journal.close()

    # Keys that do not open (another secret key): cached without keys, taps invalid.
    wrong = TagCache(secret_key="another-secret-key-of-32-characters-or-more")
    await wrong.load_all(conn)
    other = wrong.lookup(tag["code"])
    assert other is not None and other[0].sun is not None
    assert (other[0].sun.uid, other[0].sun.keys) == (entry.sun.uid, None)
