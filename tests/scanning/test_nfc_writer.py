"""The replay verdict of NFC taps in the scan writer: decided in the group commit, and at
spool replay (database down) in counter order per tag."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.scanning.hooked import HookedOrganizations
from campaigns.scanning.nfc import stored_taps_statement
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.writer import ScanWriter
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.scanning import NOWHERE, record

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
async def sun_tag(client: httpx.AsyncClient, org: Org) -> dict[str, int]:
    """The ids of an ``nfc_sun`` tag: ``organization_id``, ``campaign_id``, ``tag_id``."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04112233445566"})
    return {"organization_id": org.id, "campaign_id": campaign["id"], "tag_id": tag["id"]}


def tap(ids: dict[str, int], counter: int, seconds: int = 0) -> ScanRecord:
    """An authentic tap whose replay verdict is to be decided (a counter to accept)."""
    return record(
        channel="nfc", nfc_counter=counter, scanned_at=T0 + dt.timedelta(seconds=seconds), **ids
    )


async def rows(database_url: str) -> dict[str, tuple[Any, ...]]:
    """click id -> (nfc_counter, nfc_verification) of every stored scan."""
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        cur = await conn.execute("SELECT click_id, nfc_counter, nfc_verification FROM scans")
        return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


async def last_counter(database_url: str, tag_id: int) -> int | None:
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        cur = await conn.execute(
            "SELECT last_counter FROM nfc_counters WHERE tag_id = %s", (tag_id,)
        )
        row = await cur.fetchone()
        return None if row is None else row[0]  # no row: no counter accepted yet


async def test_submit_returns_the_verdict_decided_in_the_commit(
    database_url: str, sun_tag: dict[str, int], tmp_path: Path
) -> None:
    writer = ScanWriter(libpq_url(database_url), tmp_path, max_delay_s=0.05)
    await writer.start()
    try:
        # One batch: 8 then 7 then 8 again (arrival order), and a QR scan.
        submitted = [tap(sun_tag, 8), tap(sun_tag, 7), tap(sun_tag, 8, 1), record(**sun_tag)]
        stored = await asyncio.gather(*(writer.submit(r) for r in submitted))
    finally:
        await writer.stop()
    # Judged in counter order: 7 valid, the first 8 valid, the second 8 a replay.
    assert [r.nfc_verification for r in stored] == ["valid", "valid", "replayed", None]
    assert [r.click_id for r in stored] == [r.click_id for r in submitted]
    assert [r.counter_to_accept for r in submitted] == [8, 7, 8, None]  # not changed in place
    assert await rows(database_url) == {
        r.click_id: (r.nfc_counter, r.nfc_verification) for r in stored
    }
    assert await last_counter(database_url, sun_tag["tag_id"]) == 8


@pytest.mark.parametrize("click_id", ["ok", "it's"], ids=["literal", "bound"])
async def test_replays_are_marked_in_the_commit_whatever_the_statement_form(
    database_url: str, sun_tag: dict[str, int], tmp_path: Path, click_id: str
) -> None:
    """The group commit copies its taps as ``valid`` and judges them with its COMMIT: the
    verdicts written in the query, or bound as parameters in a round trip of their own
    when a click id cannot be written in (a replayed spool line may carry any text).
    Either way the replayed taps' rows end ``replayed``, the others ``valid``, and the
    tag's last counter is the highest accepted."""
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as conn:
        await conn.execute(
            "INSERT INTO nfc_counters (tag_id, last_counter) VALUES (%s, 5)", (sun_tag["tag_id"],)
        )
    writer = ScanWriter(libpq_url(database_url), tmp_path, max_delay_s=0.05)
    await writer.start()
    try:
        odd = dataclasses.replace(tap(sun_tag, 9), click_id=f"{click_id}-0123456789")
        submitted = [tap(sun_tag, 4), odd, tap(sun_tag, 6), tap(sun_tag, 6, 1), tap(sun_tag, 5)]
        submitted.append(record(**sun_tag))
        # Under nfc_invalid_tap = block, a replayed tap's outcome is "blocked".
        submitted[3] = dataclasses.replace(submitted[3], block_if_replayed=True)
        submitted[2] = dataclasses.replace(submitted[2], block_if_replayed=True)
        stored = await asyncio.gather(*(writer.submit(r) for r in submitted))
    finally:
        await writer.stop()
    assert [r.nfc_verification for r in stored] == [
        "replayed",
        "valid",
        "valid",
        "replayed",
        "replayed",
        None,
    ]
    assert await rows(database_url) == {
        r.click_id: (r.nfc_counter, r.nfc_verification) for r in stored
    }
    outcomes = [r.outcome for r in stored]
    assert outcomes == ["redirect", "redirect", "redirect", "blocked", "redirect", "redirect"]
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        cur = await conn.execute("SELECT click_id, outcome FROM scans")
        assert dict(await cur.fetchall()) == {r.click_id: r.outcome for r in stored}
    assert await last_counter(database_url, sun_tag["tag_id"]) == 9
    assert writer.stats.spooled == 0


async def test_two_writers_given_the_same_counter_accept_exactly_one(
    database_url: str, sun_tag: dict[str, int], tmp_path: Path
) -> None:
    writers = [ScanWriter(libpq_url(database_url), tmp_path / str(n)) for n in (1, 2)]
    for writer in writers:
        await writer.start()
    try:
        for counter in (1, 2, 3):
            stored = await asyncio.gather(*(w.submit(tap(sun_tag, counter)) for w in writers))
            assert sorted(str(r.nfc_verification) for r in stored) == ["replayed", "valid"]
    finally:
        for writer in writers:
            await writer.stop()
    assert await last_counter(database_url, sun_tag["tag_id"]) == 3


async def test_taps_spooled_while_the_database_is_down_are_judged_at_replay_in_counter_order(
    database_url: str, sun_tag: dict[str, int], tmp_path: Path
) -> None:
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as conn:
        await conn.execute(
            "INSERT INTO nfc_counters (tag_id, last_counter) VALUES (%s, 3)", (sun_tag["tag_id"],)
        )
    down = ScanWriter(NOWHERE, tmp_path, connect_timeout_s=0.2, retry_interval_s=60)
    await down.start()
    # Arrival order: 9, 5, an invalid tap, 3 (already used), 5 again, 7, a QR scan.
    submitted = [
        tap(sun_tag, 9, 0),
        tap(sun_tag, 5, 1),
        record(channel="nfc", nfc_verification="invalid", **sun_tag),
        tap(sun_tag, 3, 2),
        tap(sun_tag, 5, 3),
        tap(sun_tag, 7, 4),
        record(**sun_tag),
    ]
    try:
        spooled = [await down.submit(r) for r in submitted]
    finally:
        await down.stop()
    assert down.stats.spooled == len(submitted)
    # No verdict yet: the taps were redirected whatever the policy, with their counters.
    assert [(r.nfc_counter, r.nfc_verification) for r in spooled] == [
        (9, None),
        (5, None),
        (None, "invalid"),
        (3, None),
        (5, None),
        (7, None),
        (None, None),
    ]
    assert await rows(database_url) == {}

    replayer = ScanWriter(libpq_url(database_url), tmp_path)
    assert await replayer.replay_spools() == len(submitted)
    await replayer.stop()
    stored = await rows(database_url)
    verdicts = [stored[r.click_id] for r in submitted]
    assert verdicts == [
        (9, "valid"),
        (5, "valid"),
        (None, "invalid"),
        (3, "replayed"),
        (5, "replayed"),  # the later tap of the same counter
        (7, "valid"),  # older than 9, yet valid: judged in counter order, not arrival
        (None, None),
    ]
    assert await last_counter(database_url, sun_tag["tag_id"]) == 9
    assert list(tmp_path.glob("scans-*.jsonl")) == []


def test_taps_are_written_into_the_commit_statement_only_with_url_safe_click_ids() -> None:
    # Anything but URL-safe base64 click ids goes through bound parameters.
    ids = {"organization_id": 1, "campaign_id": 2, "tag_id": 3}
    good = tap(ids, 7)
    statement = stored_taps_statement([good])
    assert (
        statement
        == (
            f"SELECT passerelle_judge_taps('{{{good.click_id}}}'::text[], '{{3}}'::bigint[], "
            "'{7}'::integer[], '{f}'::boolean[])"
        ).encode()
    )
    assert stored_taps_statement([]) is None
    for odd in ("a'b--cdef", "abc def12", "abcd,ef12", 'ab"cdef12', "ab{cd}ef1", "NULL", "é" * 16):
        assert stored_taps_statement([good, dataclasses.replace(good, click_id=odd)]) is None


def test_the_block_flag_is_not_spooled() -> None:
    # A spooled tap was redirected whatever its verdict: replayed from the spool, a
    # replayed tap keeps its outcome "redirect".
    ids = {"organization_id": 1, "campaign_id": 2, "tag_id": 3}
    flagged = dataclasses.replace(tap(ids, 7), block_if_replayed=True)
    assert "block_if_replayed" not in flagged.to_json()
    assert ScanRecord.from_json(flagged.to_json()) == dataclasses.replace(
        flagged, block_if_replayed=False
    )


async def test_the_webhook_outbox_reads_the_judged_verdicts(
    client: httpx.AsyncClient, org: Org, database_url: str, sun_tag: dict[str, int], tmp_path: Path
) -> None:
    """With a ``scan.created`` webhook the taps are judged before the outbox is written
    (in a round trip of their own): each delivery carries its tap's final verdict."""
    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/p", "events": ["scan.created"]},
        headers=org.headers,
    )
    assert created.status_code == 201
    hooked = HookedOrganizations()
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        await hooked.load_all(conn)
    writer = ScanWriter(libpq_url(database_url), tmp_path, max_delay_s=0.05, hooked=hooked)
    await writer.start()
    try:
        submitted = [tap(sun_tag, 5), tap(sun_tag, 5, 1), tap(sun_tag, 6)]
        stored = await asyncio.gather(*(writer.submit(r) for r in submitted))
    finally:
        await writer.stop()
    assert [r.nfc_verification for r in stored] == ["valid", "replayed", "valid"]
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        cur = await conn.execute(
            "SELECT payload -> 'data' ->> 'click_id', payload -> 'data' ->> 'nfc_verification'"
            " FROM webhook_deliveries"
        )
        delivered = dict(await cur.fetchall())
    assert delivered == {r.click_id: r.nfc_verification for r in stored}
