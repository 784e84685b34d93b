"""The live feed's cursor: snapshots instead of "id > last", against real transactions.

Two writer transactions take scan ids in one order and commit in the other; a reader
following snapshots gets every scan once, and resuming from any event id delivered
continues with exactly the events after it."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.feed import store
from campaigns.feed.cursor import Position, Snapshot, advance
from campaigns.feed.hub import Encoded, FeedHub, Seen
from campaigns.scanning.links import new_click_id
from campaigns.scanning.record import INSERT_SQL, ScanRecord, column_lists

CAMPAIGN = 7


def record(campaign_id: int = CAMPAIGN) -> ScanRecord:
    return ScanRecord(
        click_id=new_click_id(),
        organization_id=1,
        campaign_id=campaign_id,
        tag_id=1,
        scanned_at=dt.datetime.now(dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://shop.example.com/?pcid=x",
        visitor_id=os.urandom(16),
    )


@pytest.fixture
async def conninfo(database_url: str) -> AsyncIterator[str]:
    info = libpq_url(database_url)
    yield info
    async with await psycopg.AsyncConnection.connect(info, autocommit=True) as conn:
        await conn.execute("TRUNCATE scans, feed_batches CASCADE")


async def connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


async def write_batch(conn: psycopg.AsyncConnection[Any], records: list[ScanRecord]) -> None:
    """What the writer does in a group commit, in an open transaction of ``conn``."""
    await conn.execute(INSERT_SQL, column_lists(records))
    await store.record_scans(conn, [r.click_id for r in records], [r.campaign_id for r in records])


async def current(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


def test_snapshot_text_round_trips_and_rejects_what_postgresql_would() -> None:
    assert str(Snapshot.parse("10:20:12,15")) == "10:20:12,15"
    assert Snapshot.parse("10:10:") == Snapshot(10, 10, ())
    top = 2**63 - 1  # pg_snapshot's input refuses 2^63
    assert Snapshot.parse(f"{top}:{top}:") == Snapshot(top, top, ())
    for bad in ("", "10:20", "20:10:", "10:20:9", "10:20:20", "10:20:15,12", "10:20:12,12", "a:b:"):
        with pytest.raises(ValueError):
            Snapshot.parse(bad)
    with pytest.raises(ValueError):
        Snapshot.parse(f"{top + 1}:{top + 1}:")
    assert Position.parse(f"10:10:|c{top}").id == top
    for bad in (f"10:10:|c{top + 1}", "10:10:|s" + "9" * 23, "10:10:|s", "10:10:|s-1"):
        with pytest.raises(ValueError):
            Position.parse(bad)
    snapshot = Snapshot.parse("10:20:12,15")
    assert [x for x in range(8, 22) if snapshot.visible(x)] == [
        8,
        9,
        10,
        11,
        13,
        14,
        16,
        17,
        18,
        19,
    ]


def test_advance_sees_prev_plus_cur_up_to_the_cutoff() -> None:
    prev = Snapshot(10, 20, (12, 15))
    cur = Snapshot(15, 30, (15, 22, 27))  # 12 committed, 15 still running; 20-29 started
    for cutoff in range(9, 31):
        made = advance(prev, cur, cutoff)
        for xid in range(1, 40):
            expected = prev.visible(xid) or (cur.visible(xid) and xid <= cutoff)
            assert made.visible(xid) == expected, (cutoff, xid, made)
        Snapshot.parse(str(made))  # valid text for PostgreSQL too
    assert advance(prev, cur, cur.xmax - 1) == cur
    assert advance(prev, cur, 0) == Snapshot(12, 20, (12, 15))


async def test_interleaved_writers_committing_out_of_id_order_lose_and_repeat_nothing(
    conninfo: str,
) -> None:
    reader, first, second = [await connect(conninfo) for _ in range(3)]
    try:
        cursor = await current(reader)
        seen: list[int] = []

        async def follow() -> list[store.Event]:
            nonlocal cursor
            cursor, events = await store.read_new(reader, cursor, [CAMPAIGN])
            seen.extend(e.id for e in events)
            return events

        early, late = [record(), record()], [record(), record(), record(99)]
        async with first.transaction():
            await write_batch(first, early)  # the lower scan ids
            async with second.transaction():
                await write_batch(second, late)  # the higher ones
            # second committed, first not yet: "id > last seen" would now skip early
            events = await follow()
            assert [e.data.count(r.click_id) for e, r in zip(events, late, strict=False)] == [1, 1]
            assert len(events) == 2  # campaign 99's scan is not watched
            assert await follow() == []
        events = await follow()
        assert sorted(e.kind for e in events) == ["scan", "scan"]
        assert all(any(r.click_id in e.data for r in early) for e in events)
        assert len(seen) == len(set(seen)) == 4
        assert min(seen[2:]) < min(seen[:2])  # delivered out of id order, each once
    finally:
        for conn in (reader, first, second):
            await conn.close()


async def test_resuming_from_any_event_id_continues_exactly_after_it(conninfo: str) -> None:
    writers = [await connect(conninfo) for _ in range(3)]
    hub = FeedHub(conninfo)
    try:
        start = await current(writers[0])
        batches = [[record(), record()], [record()], [record(), record(), record()]]
        # Three transactions open together, committed in reverse order of their ids.
        for conn, batch in zip(writers, batches, strict=True):
            await conn.execute("BEGIN")
            await write_batch(conn, batch)
        for conn in reversed(writers):
            await conn.execute("COMMIT")
        until = await current(writers[0])
        seen = await hub.seen_before(Position(start), CAMPAIGN)
        delivered = [chunk async for chunk in hub.replay(seen, CAMPAIGN, until)]
        blocks = b"".join(e.text for c in delivered for e in c).decode().split("\n\n")[:-1]
        ids = [
            line[4:] for block in blocks for line in block.split("\n") if line.startswith("id: ")
        ]
        clicks = [
            line for block in blocks for line in block.split("\n") if line.startswith("data: ")
        ]
        assert len(ids) == len(clicks) == 6
        assert all(Position.parse(i).snapshot.visible(0) for i in ids)
        for index, event_id in enumerate(ids):
            seen = await hub.seen_before(Position.parse(event_id), CAMPAIGN)
            rest = [chunk async for chunk in hub.replay(seen, CAMPAIGN, until)]
            text = b"".join(e.text for c in rest for e in c).decode()
            following = [line for line in text.split("\n") if line.startswith("data: ")]
            assert following == clicks[index + 1 :], index
        # From the end: nothing; and a batch committed later comes after.
        seen = await hub.seen_before(Position(until), CAMPAIGN)
        assert [chunk async for chunk in hub.replay(seen, CAMPAIGN, until)] == []
    finally:
        await hub.stop()
        for conn in writers:
            await conn.close()


async def test_retention_deletes_old_batches_and_moves_the_horizon(conninfo: str) -> None:
    conn = await connect(conninfo)
    try:
        before = await current(conn)
        async with conn.transaction():
            await write_batch(conn, [record()])
        await conn.execute("UPDATE feed_batches SET created_at = now() - interval '2 days'")
        async with conn.transaction():
            await write_batch(conn, [record()])
        assert await store.prune(conn, 86_400) == 1
        row = await (await conn.execute("SELECT count(*) FROM feed_batches")).fetchone()
        assert row == (1,)
        gone = await store.last_deleted(conn)
        assert gone >= before.xmin  # a cursor from before the deleted batch: expired
        assert gone < (await current(conn)).xmax
        assert await store.prune(conn, 86_400) == 0
        assert await store.last_deleted(conn) == gone
    finally:
        await conn.execute("UPDATE feed_horizon SET last_deleted = '0'")
        await conn.close()


def test_what_a_resumed_client_has_is_not_sent_again() -> None:
    # A Last-Event-ID from a process whose cursor was ahead: its live events are filtered.
    position = Position(Snapshot(10, 20, (12, 15)), "scan", 5)
    seen = Seen(position, partial_xid=12)
    text = b""
    assert seen(Encoded(11, "scan", 99, text))  # visible in the snapshot
    assert seen(Encoded(12, "scan", 5, text)) and seen(Encoded(12, "scan", 4, text))
    assert not seen(Encoded(12, "scan", 6, text))  # after the id, in its batch
    assert not seen(Encoded(15, "scan", 1, text)) and not seen(Encoded(20, "scan", 1, text))


async def test_batch_row_written_into_the_commit_statement_is_record_scans_row(
    conninfo: str,
) -> None:
    # The group commit sends the feed's batch row with its COMMIT, values written into
    # the statement: the row must be the one record_scans stores.
    click_ids = [new_click_id() for _ in range(3)]
    statement = store.scan_batch_statement(click_ids, [CAMPAIGN, 9, CAMPAIGN])
    assert statement is not None
    async with await connect(conninfo) as conn:
        await conn.execute(b"BEGIN")
        await conn.execute(statement + b"; COMMIT")
        async with conn.transaction():
            await store.record_scans(conn, click_ids, [CAMPAIGN, 9, CAMPAIGN])
        cur = await conn.execute(
            "SELECT kind, array(SELECT unnest(campaign_ids) ORDER BY 1), click_ids "
            "FROM feed_batches ORDER BY id"
        )
        literal, bound = await cur.fetchall()
    assert literal == bound == ("scan", [CAMPAIGN, 9], click_ids)


def test_batch_row_is_not_written_into_a_statement_for_other_click_ids() -> None:
    # Anything but URL-safe base64 click ids goes through record_scans' parameters.
    assert store.scan_batch_statement([], [1]) is None
    for odd in ("a'b--cdef", "abc def12", "abcd,ef12", 'ab"cdef12', "ab{cd}ef1", "NULL", "é" * 16):
        assert store.scan_batch_statement([new_click_id(), odd], [1]) is None
    assert store.scan_batch_statement([new_click_id()], [1]) is not None
