"""The group-commit scan writer against the real database: batching, the spool, replay
idempotency, torn spool lines, and rows the database refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.scanning.links import new_click_id
from campaigns.scanning.record import COLUMNS, ScanRecord
from campaigns.scanning.writer import FailureLog, ScanWriter, WriterOverloaded
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.scanning import NOWHERE, record


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
    sizes = writer.stats.batch_sizes
    assert sum(sizes) == 300 and len(sizes) == writer.stats.batches
    assert all(1 <= size <= 100 for size in sizes)  # never above batch_size
    assert max(sizes) > 1  # concurrent submits were grouped


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
    writer = ScanWriter(NOWHERE, tmp_path, connect_timeout_s=1)
    await writer.start()
    records = [record() for _ in range(20)]
    await asyncio.wait_for(asyncio.gather(*(writer.submit(r) for r in records)), 5)
    assert not writer.database_ok
    assert writer.stats.spooled == 20
    assert writer.spool_depth() == 20
    await writer.stop()
    lines = "".join(p.read_text() for p in tmp_path.glob("scans-*.jsonl")).splitlines()
    # Two lanes spool their batches side by side: every record once, in any order.
    by_click = {r.click_id: r for r in records}
    stored = [ScanRecord.from_json(line) for line in lines]
    assert sorted(r.click_id for r in stored) == sorted(by_click)
    assert all(r == by_click[r.click_id] for r in stored)


async def test_replayed_scans_credit_conversions_that_arrived_first(
    client: httpx.AsyncClient, org: Org, other_org: Org, conninfo: str, tmp_path: Path
) -> None:
    """During an outage the scan waits in the spool while the shop already reports the
    order: the conversion is stored unattributed, then credited when the scan lands
    (only its own organization's: another tenant reporting the same click id gets
    nothing)."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    scan = record(organization_id=org.id, campaign_id=campaign["id"], tag_id=tag["id"])
    body = {"click_id": scan.click_id, "event": "purchase", "external_id": "order-late"}
    posted = await client.post("/v1/conversions", json=body, headers=org.headers)
    assert posted.status_code == 201 and posted.json()["attributed"] is False
    foreign = {**body, "external_id": "order-foreign"}
    posted = await client.post("/v1/conversions", json=foreign, headers=other_org.headers)
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
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cur = await conn.execute(
            "SELECT scan_id, campaign_id, tag_id FROM conversions "
            "WHERE external_id = 'order-foreign'"
        )
        assert await cur.fetchone() == (None, None, None)


# -- the spool format across versions ---------------------------------------------------

FIXTURE_V0 = Path(__file__).parent.parent / "fixtures" / "spool" / "scans-v0.jsonl"
#: Geolocation and rule columns, newer than both spool fixtures: null when those replay.
GEO_COLUMNS = (
    "country",
    "region",
    "city",
    "ip_lat",
    "ip_lon",
    "ip_accuracy_m",
    "position_lat",
    "position_lon",
    "geo_source",
    "accuracy_m",
    "location_id",
    "far_from_placement",
    "rule_id",
    "variant",
)
ALL_COLUMNS = ", ".join(
    "host(ip_truncated)" if c.name == "ip_truncated" else c.name for c in COLUMNS
)


async def rows_by_click_id(conninfo: str) -> dict[str, tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        rows = await (await conn.execute(f"SELECT {ALL_COLUMNS} FROM scans")).fetchall()  # noqa: S608
    return {row[0]: tuple(row) for row in rows}


async def test_a_version_0_spool_from_older_code_replays_with_the_right_values(
    conninfo: str, tmp_path: Path
) -> None:
    shutil.copy(FIXTURE_V0, tmp_path / "scans-424242-000001.jsonl")
    assert await ScanWriter(conninfo, tmp_path).replay_spools() == 4

    # Decoded here from the version 0 layout itself, not by the code under test.
    expected = {}
    for line in FIXTURE_V0.read_text(encoding="utf-8").splitlines():
        values = json.loads(line)
        values[4] = dt.datetime.fromisoformat(values[4])
        values[15] = bytes.fromhex(values[15]) if values[15] is not None else None
        # bot_reason, burst, nfc_counter, nfc_verification, cookie_id, the geolocation
        # columns and internal: their defaults
        geo = (None,) * len(GEO_COLUMNS)
        expected[values[0]] = (*values, None, False, None, None, None, *geo, False)
    assert await rows_by_click_id(conninfo) == expected
    assert not list(tmp_path.iterdir())


async def test_a_version_1_spool_fixture_replays_with_the_right_values(
    conninfo: str, tmp_path: Path
) -> None:
    fixture = FIXTURE_V0.with_name("scans-v1.jsonl")  # written by the version 1 writer
    shutil.copy(fixture, tmp_path / "scans-424246-000001.jsonl")
    assert await ScanWriter(conninfo, tmp_path).replay_spools() == 4

    expected = {}
    for line in fixture.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        assert doc.pop("v") == 1
        doc["scanned_at"] = dt.datetime.fromisoformat(doc["scanned_at"])
        if doc["visitor_id"] is not None:
            doc["visitor_id"] = bytes.fromhex(doc["visitor_id"])
        # Columns added after version 1 was written (NFC, cookie, geolocation, internal)
        # take their default: null, false for internal (issue 11: no version bump).
        newer = {"nfc_counter", "nfc_verification", "cookie_id", *GEO_COLUMNS}
        defaults = dict.fromkeys(newer) | {"internal": False}
        assert defaults.keys().isdisjoint(doc)
        expected[doc["click_id"]] = tuple(
            defaults[c.name] if c.name in defaults else doc[c.name] for c in COLUMNS
        )
    rows = await rows_by_click_id(conninfo)
    assert rows == expected
    assert {(row[16], row[17]) for row in rows.values()} == {
        (None, False),
        ("head", False),
        (None, True),
    }


async def test_the_current_version_replays_every_column(conninfo: str, tmp_path: Path) -> None:
    full = record(
        bot_reason="prefetch", burst=True, is_bot=True, ip_truncated="2001:db8:7::", internal=True
    )
    bare = record(user_agent=None, device_type=None, os=None, browser=None, visitor_id=None)
    lines = "".join(r.to_json() + "\n" for r in (full, bare))
    (tmp_path / "scans-424243-000001.jsonl").write_text(lines, encoding="utf-8")
    assert await ScanWriter(conninfo, tmp_path).replay_spools() == 2
    rows = await rows_by_click_id(conninfo)
    for r in (full, bare):
        assert rows[r.click_id] == tuple(getattr(r, c.name) for c in COLUMNS)


async def test_live_scans_commit_every_column(conninfo: str, tmp_path: Path) -> None:
    writer = ScanWriter(conninfo, tmp_path)
    await writer.start()
    scans = [record(bot_reason="no_user_agent", user_agent=None, burst=True), record()]
    await asyncio.gather(*(writer.submit(r) for r in scans))
    await writer.stop()
    rows = await rows_by_click_id(conninfo)
    for r in scans:
        assert rows[r.click_id] == tuple(getattr(r, c.name) for c in COLUMNS)


async def test_lines_of_a_newer_version_or_unreadable_are_dead_lettered_not_dropped(
    conninfo: str, tmp_path: Path
) -> None:
    good = [record(), record()]
    newer = json.dumps({"v": 2, "click_id": new_click_id(), "shape": "new"})
    unknown_column = json.dumps({**json.loads(record().to_json()), "referrer_host": "x.example"})
    garbage = "not json at all"
    refused = record(bot_reason="gremlin")  # the CHECK constraint refuses it
    not_utf8 = b'{"v": 1, "click_id": "\xff\xfe"}'
    dead_lines = [newer.encode(), garbage.encode(), unknown_column.encode(), not_utf8]
    dead_lines.append(refused.to_json().encode())
    raw = [good[0].to_json().encode(), *dead_lines, good[1].to_json().encode()]
    spool = tmp_path / "scans-424244-000001.jsonl"
    spool.write_bytes(b"".join(line + b"\n" for line in raw))

    assert await ScanWriter(conninfo, tmp_path).replay_spools() == 2
    assert set(await rows_by_click_id(conninfo)) == {r.click_id for r in good}
    (dead,) = tmp_path.glob("rejected-*.jsonl")
    assert sorted(dead.read_bytes().splitlines()) == sorted(dead_lines)  # kept byte for byte
    assert not spool.exists()


# -- the writer when the database or the disk misbehaves ---------------------------------


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` until true; fail after 30 s (a hang guard, not a speed
    requirement)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_replay_on_a_locked_table_never_stalls_live_scans(
    conninfo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    leftover = [record() for _ in range(3)]  # a dead process's spool: replayed at start
    (tmp_path / "scans-999997-000001.jsonl").write_text(
        "".join(r.to_json() + "\n" for r in leftover), encoding="utf-8"
    )
    live = [record() for _ in range(20)]
    writer = ScanWriter(
        conninfo, tmp_path, commit_timeout_s=0.5, replay_timeout_s=0.3, retry_interval_s=0.1
    )
    async with await psycopg.AsyncConnection.connect(conninfo) as locker:
        await locker.execute("LOCK TABLE scans IN ACCESS EXCLUSIVE MODE")  # held until commit
        await writer.start()
        # Every scan is answered while the lock is still held: a replay waiting on the
        # lock would keep them waiting (here: forever).
        for start in range(0, 20, 5):
            await asyncio.wait_for(
                asyncio.gather(*(writer.submit(r) for r in live[start : start + 5])), 30
            )
        assert (writer.stats.spooled, writer.stats.committed) == (20, 0)
        assert not writer.database_ok

        async def replay_gave_up() -> bool:
            return any("spool replay failed" in r.getMessage() for r in caplog.records)

        await wait_until(replay_gave_up)
        await locker.commit()

    async def all_stored() -> bool:
        return set(await stored(conninfo)) == {r.click_id for r in [*leftover, *live]}

    await wait_until(all_stored)

    async def back() -> bool:
        return writer.database_ok

    await wait_until(back)
    after = record()
    await writer.submit(after)
    await writer.stop()
    assert writer.stats.committed == 1 and writer.stats.replayed == 23
    assert not list(tmp_path.glob("scans-*.jsonl"))
    # Repeated replay failures were logged once, and their end once.
    messages = [r.getMessage() for r in caplog.records if r.name == "campaigns.scanning.writer"]
    assert sum("spool replay failed" in m for m in messages) == 1
    assert sum("spool replay works again" in m for m in messages) == 1


async def test_stop_during_a_long_lock_is_bounded_and_spools_every_waiting_scan(
    conninfo: str, tmp_path: Path
) -> None:
    writer = ScanWriter(
        conninfo,
        tmp_path,
        batch_size=4,
        commit_timeout_s=60,
        replay_timeout_s=60,
        stop_timeout_s=0.5,
    )
    await writer.start()
    scans = [record() for _ in range(10)]
    async with await psycopg.AsyncConnection.connect(conninfo) as locker:
        await locker.execute("LOCK TABLE scans IN ACCESS EXCLUSIVE MODE")
        waiting = [asyncio.create_task(writer.submit(r)) for r in scans]
        await asyncio.sleep(0.2)  # the first batch is now in its COPY, behind the lock
        await asyncio.wait_for(writer.stop(), 30)
        assert all(task.done() for task in waiting)
        assert [task.result() for task in waiting] == scans  # spooled as submitted
        await locker.commit()
    assert writer.stats.spooled == 10
    lines = "".join(p.read_text() for p in tmp_path.glob("scans-*.jsonl")).splitlines()
    assert sorted(ScanRecord.from_json(line).click_id for line in lines) == sorted(
        r.click_id for r in scans
    )


async def test_a_connection_killed_while_idle_is_retried_once_not_spooled(
    conninfo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="campaigns.scanning.writer")
    writer = ScanWriter(conninfo, tmp_path, connections=1)
    await writer.start()
    await writer.submit(record())
    conn = writer._lanes[0].conn
    assert conn is not None
    # The server bounds the writer's statements too (commit_timeout_s, 1 s by default).
    cur = await conn.execute("SHOW statement_timeout")
    assert await cur.fetchone() == ("1s",)
    pid = conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        async def gone() -> bool:
            cur = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 0

        await wait_until(gone)
    after = record()
    await writer.submit(after)
    assert writer.database_ok
    assert (writer.stats.committed, writer.stats.spooled) == (2, 0)
    assert sum("connection was dead" in r.getMessage() for r in caplog.records) == 1
    await writer.stop()
    assert after.click_id in await stored(conninfo)


async def test_writers_replaying_one_spool_directory_do_not_race(
    conninfo: str, tmp_path: Path
) -> None:
    scans = [record() for _ in range(400)]
    for n in range(20):
        chunk = scans[n * 20 : (n + 1) * 20]
        (tmp_path / f"scans-99{n:04d}-000001.jsonl").write_text(
            "".join(r.to_json() + "\n" for r in chunk), encoding="utf-8"
        )
    writers = [ScanWriter(conninfo, tmp_path) for _ in range(3)]
    counts = await asyncio.gather(*(w.replay_spools() for w in writers))
    assert sum(counts) == 400  # each file replayed once, none failed
    assert set(await stored(conninfo)) == {r.click_id for r in scans}
    assert not list(tmp_path.iterdir())
    for w in writers:
        await w.stop()


async def test_a_file_replayed_by_another_process_after_our_open_is_skipped(
    conninfo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between this writer's open and its lock, another process replays the file,
    removes it, and a new spool file takes the name: the open handle is a removed file,
    which must be neither replayed again nor confused with the new one."""
    path = tmp_path / "scans-424245-000001.jsonl"
    path.write_text(record().to_json() + "\n", encoding="utf-8")
    newcomer = record()
    real_flock = fcntl.flock

    def flock_after_the_other_process(fd: object, operation: int) -> None:
        path.unlink()
        path.write_text(newcomer.to_json() + "\n", encoding="utf-8")
        monkeypatch.setattr(fcntl, "flock", real_flock)
        real_flock(fd, operation)  # type: ignore[arg-type]

    monkeypatch.setattr(fcntl, "flock", flock_after_the_other_process)
    writer = ScanWriter(conninfo, tmp_path)
    assert await writer.replay_spools() == 0
    assert path.exists()  # the new file was left alone
    assert await writer.replay_spools() == 1
    assert set(await stored(conninfo)) == {newcomer.click_id}
    await writer.stop()


async def test_a_full_queue_sheds_load(conninfo: str, tmp_path: Path) -> None:
    writer = ScanWriter(conninfo, tmp_path, queue_max=5)
    await writer.start()
    # The submits all run before the writer's loop takes the first one from the queue.
    records = [record() for _ in range(8)]
    results = await asyncio.gather(*(writer.submit(r) for r in records), return_exceptions=True)
    await writer.stop()
    assert results[:5] == records[:5]  # committed as submitted
    assert all(isinstance(r, WriterOverloaded) and r.retry_after_s == 1 for r in results[5:])
    assert (writer.stats.committed, writer.stats.shed) == (5, 3)


async def test_a_full_spool_sheds_load_while_the_database_is_away(tmp_path: Path) -> None:
    writer = ScanWriter(NOWHERE, tmp_path, spool_max_bytes=1, connect_timeout_s=1)
    await writer.start()
    await writer.submit(record())  # the spool was empty: it takes this one
    assert writer.stats.spooled == 1
    assert not writer.can_accept() and not writer.storable
    with pytest.raises(WriterOverloaded) as refused:
        await writer.submit(record())
    assert refused.value.retry_after_s == 10
    await writer.stop()


async def test_storable_is_false_while_neither_database_nor_spool_works(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.write_text("a file where the spool directory should be")
    writer = ScanWriter(NOWHERE, spool_dir, connect_timeout_s=1, retry_interval_s=0.05)
    await writer.start()
    with pytest.raises(OSError):
        await writer.submit(record())
    assert not writer.database_ok and not writer.storable
    spool_dir.unlink()

    async def storable() -> bool:
        return writer.storable

    await wait_until(storable)  # the replayer's probe noticed the spool works again
    await writer.submit(record())
    assert writer.stats.spooled == 1
    await writer.stop()


def test_repeated_failures_are_logged_once_until_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = FailureLog(logging.getLogger("test.failures"))
    with caplog.at_level(logging.WARNING, logger="test.failures"):
        for n in range(5):
            failures.failed("database", "commit failed: %s", n)
        failures.failed("spool", "spool failed")
        failures.recovered("database", "database back")
        failures.recovered("database", "database back")  # not failing: nothing
        failures.failed("database", "commit failed: %s", "again")
    assert [r.getMessage() for r in caplog.records] == [
        "commit failed: 0",
        "spool failed",
        "database back (4 repeated failures not logged)",
        "commit failed: again",
    ]


async def test_two_lanes_keep_two_group_commits_in_flight(conninfo: str, tmp_path: Path) -> None:
    """While one batch waits for PostgreSQL, the next is sent on the other lane's
    connection (with one lane the second batch would wait in the queue)."""
    writer = ScanWriter(conninfo, tmp_path, connections=2, commit_timeout_s=30)
    await writer.start()
    first, second = record(), record()

    async def blocked_writers(admin: psycopg.AsyncConnection[tuple[int]]) -> int:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
            "'passerelle-scan-writer-%' AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async with (
        await psycopg.AsyncConnection.connect(conninfo) as locker,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin,
    ):
        await locker.execute("LOCK TABLE scans IN SHARE MODE")
        one = asyncio.create_task(writer.submit(first))
        await wait_until(lambda: _at_least(blocked_writers(admin), 1))
        two = asyncio.create_task(writer.submit(second))
        await wait_until(lambda: _at_least(blocked_writers(admin), 2))
        assert not one.done() and not two.done()
        await locker.rollback()
    stored_first, stored_second = await asyncio.wait_for(asyncio.gather(one, two), 10)
    await writer.stop()
    assert writer.stats.committed == 2 and writer.stats.spooled == 0
    assert {stored_first.click_id, stored_second.click_id} == {first.click_id, second.click_id}
    async with await psycopg.AsyncConnection.connect(conninfo) as check:
        cur = await check.execute(
            "SELECT count(*) FROM scans WHERE click_id = ANY(%s)",
            ([first.click_id, second.click_id],),
        )
        assert await cur.fetchone() == (2,)


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


def test_a_writer_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="connections"):
        ScanWriter(NOWHERE, Path("unused"), connections=0)
