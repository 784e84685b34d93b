"""The SUN replay check: a counter is accepted once, strictly increasing, atomically."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest

from campaigns.db import libpq_url
from campaigns.scanning.nfc import accept_counter, accept_counters
from tests.conftest import Org, make_campaign, make_tag


@pytest.fixture
async def sun_tag_id(client: httpx.AsyncClient, org: Org) -> int:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04112233445566"})
    return int(tag["id"])


async def _connect(database_url: str) -> psycopg.AsyncConnection[Any]:
    """Autocommit, so each ``conn.transaction()`` is a real transaction, not a savepoint
    of an implicit one left open by an earlier query."""
    return await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)


async def _last_counter(conn: psycopg.AsyncConnection[Any], tag_id: int) -> int | None:
    cursor = await conn.execute(
        "SELECT last_counter FROM nfc_counters WHERE tag_id = %s", (tag_id,)
    )
    row = await cursor.fetchone()
    return None if row is None else row[0]  # no row: no counter accepted yet


async def test_counters_must_strictly_increase(database_url: str, sun_tag_id: int) -> None:
    conn = await _connect(database_url)
    try:
        async with conn.transaction():
            assert await _last_counter(conn, sun_tag_id) is None
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=0) is True
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=0) is False
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=5) is True
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=4) is False
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=5) is False
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=6) is True
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=0xFFFFFF) is True
            assert await accept_counter(conn, tag_id=sun_tag_id + 1000, counter=9) is False
        assert await _last_counter(conn, sun_tag_id) == 0xFFFFFF
    finally:
        await conn.close()


async def test_offers_of_one_call_are_judged_in_order(
    client: httpx.AsyncClient, org: Org, database_url: str, sun_tag_id: int
) -> None:
    # One call (one statement) judges a batch's offers as if one at a time, in order: a
    # later offer of a tag against the earlier ones accepted, whatever the order.
    campaign = await make_campaign(client, org)
    other = await make_tag(
        client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04AABBCCDDEEFF"}
    )
    tags = [sun_tag_id, int(other["id"]), sun_tag_id + 1000]  # the last one is unknown
    offers = [(tags[0], 5), (tags[1], 2), (tags[0], 3), (tags[0], 5), (tags[0], 9)]
    offers += [(tags[2], 1), (tags[1], 2), (tags[1], 7), (tags[0], 8)]
    last: dict[int, int] = {tags[0]: 4}  # stored before the call
    expected = []
    for tag_id, counter in offers:  # the sequential reference
        ok = tag_id in tags[:2] and counter > last.get(tag_id, -1)
        if ok:
            last[tag_id] = counter
        expected.append(ok)
    assert expected == [True, True, False, False, True, False, False, True, False]
    conn = await _connect(database_url)
    try:
        async with conn.transaction():
            assert await accept_counter(conn, tag_id=tags[0], counter=4) is True
        async with conn.transaction():
            assert await accept_counters(conn, offers) == expected
        assert await _last_counter(conn, tags[0]) == 9
        assert await _last_counter(conn, tags[1]) == 7
    finally:
        await conn.close()


async def test_a_rolled_back_acceptance_is_not_kept(database_url: str, sun_tag_id: int) -> None:
    conn = await _connect(database_url)
    try:
        async with conn.transaction(force_rollback=True):
            assert await accept_counter(conn, tag_id=sun_tag_id, counter=3) is True
        assert await _last_counter(conn, sun_tag_id) is None
    finally:
        await conn.close()


async def test_two_connections_offering_the_same_counter_accept_exactly_one(
    database_url: str, sun_tag_id: int
) -> None:
    """Both transactions are open before either updates; the second UPDATE waits for the
    first's row lock, then re-checks the condition against the committed value."""
    conns = [await _connect(database_url) for _ in range(2)]
    both_open = asyncio.Barrier(2)

    async def offer(conn: psycopg.AsyncConnection[Any], counter: int) -> bool:
        async with conn.transaction():
            await conn.execute("SELECT 1")
            await both_open.wait()
            return await accept_counter(conn, tag_id=sun_tag_id, counter=counter)

    try:
        for counter in (42, 43, 44):
            results = await asyncio.wait_for(
                asyncio.gather(*(offer(conn, counter) for conn in conns)), timeout=60
            )
            assert sorted(results) == [False, True]
            assert await _last_counter(conns[0], sun_tag_id) == counter
    finally:
        for conn in conns:
            await conn.close()


async def _notifications_until_marker(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    received = []
    async for notify in conn.notifies():
        if notify.payload == "marker":
            break
        received.append(notify.payload)
    return received


async def test_accepting_a_counter_does_not_notify_the_tag_caches(
    database_url: str, sun_tag_id: int
) -> None:
    """Every server process re-reads a tag on ``passerelle_cache``; a tap moving the
    counter must not cause that, while a real change of the tag still does."""
    listener = await _connect(database_url)
    writer = await _connect(database_url)
    try:
        await listener.execute("LISTEN passerelle_cache")
        async with writer.transaction():
            assert await accept_counter(writer, tag_id=sun_tag_id, counter=1)
        await writer.execute("UPDATE tags SET label = 'moved' WHERE id = %s", (sun_tag_id,))
        await writer.execute("SELECT pg_notify('passerelle_cache', 'marker')")
        received = await asyncio.wait_for(_notifications_until_marker(listener), timeout=30)
        assert received == [f"tags:{sun_tag_id}"]
    finally:
        await listener.close()
        await writer.close()
