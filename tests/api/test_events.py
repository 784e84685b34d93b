"""``GET /v1/campaigns/{id}/events``: the live feed as Server-Sent Events, in process.

The stream reads the hub of the app; scans go through ``/s/{code}`` and conversions
through ``POST /v1/conversions``. The delivery across processes is in
``tests/e2e/test_feed.py``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import served_app
from campaigns.feed.cursor import Position
from campaigns.feed.hub import FeedHub
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.sse import AsgiEventStream, Message
from tests.fixtures.user_agents import IPHONE_SAFARI

PHONE = {"User-Agent": IPHONE_SAFARI}


def events_path(campaign_id: int) -> str:
    return f"/v1/campaigns/{campaign_id}/events"


async def open_stream(app: FastAPI, org: Org, campaign_id: int, **headers: str) -> AsgiEventStream:
    return AsgiEventStream(served_app(app), events_path(campaign_id), {**org.headers, **headers})


async def first_id(stream: AsgiEventStream) -> str:
    """The cursor the stream starts from (its first block: ``retry`` and ``id``)."""
    message = await stream.next_message()
    assert message is not None and message.event is None and message.retry == 1000
    assert message.id is not None
    return message.id


async def scan(client: httpx.AsyncClient, code: str) -> str:
    response = await client.get(f"/s/{code}", headers=PHONE)
    assert response.status_code == 302
    return str(httpx.URL(response.headers["location"]).params["pcid"])


def data(message: Message) -> dict[str, Any]:
    assert message.data is not None
    return dict(json.loads(message.data))


async def test_scans_and_conversions_arrive_with_resumable_ids(
    client: httpx.AsyncClient, app: FastAPI, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    async with await open_stream(app, org, campaign["id"]) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        await first_id(stream)
        click_id = await scan(client, tag["code"])
        (message,) = await stream.events(1)
        async with engine.connect() as conn:
            query = text("SELECT id FROM scans WHERE click_id = :c")
            scan_id = (await conn.execute(query, {"c": click_id})).scalar_one()
        assert message.event == "scan"
        payload = data(message)
        scanned_at = payload.pop("scanned_at")
        assert scanned_at.endswith("Z")
        assert payload == {
            "id": scan_id,
            "click_id": click_id,
            "campaign_id": campaign["id"],
            "tag_id": tag["id"],
            "channel": "qr",
            "device_type": "mobile",
            "os": "iOS",
            "country": None,
            "city": None,
            "location_id": None,
            "is_bot": False,
            "bot_reason": None,
            "burst": False,
            "nfc_verification": None,
            "internal": False,
        }
        assert message.id is not None and message.id.endswith(f"|s{scan_id}")
        Position.parse(message.id)
        response = await client.post(
            "/v1/conversions",
            json={
                "click_id": click_id,
                "event": "purchase",
                "value": {"amount_minor": 4990, "currency": "EUR"},
                "occurred_at": "2026-12-06T15:09:40Z",
                "external_id": "order-1",
            },
            headers=org.headers,
        )
        assert response.status_code == 201
        conversion = response.json()
        (message,) = await stream.events(1)
        assert message.event == "conversion"
        assert data(message) == {
            "id": conversion["id"],
            "click_id": click_id,
            "campaign_id": campaign["id"],
            "tag_id": tag["id"],
            "scan_id": scan_id,
            "event": "purchase",
            "value": {"amount_minor": 4990, "currency": "EUR"},
            "occurred_at": "2026-12-06T15:09:40Z",
        }
        assert message.id is not None and message.id.endswith(f"|c{conversion['id']}")
    assert app.state.feed.listener_count == 0  # the disconnect ended the stream


async def test_another_campaigns_scans_are_not_in_the_stream(
    client: httpx.AsyncClient, app: FastAPI, org: Org
) -> None:
    watched = await make_campaign(client, org)
    other = await make_campaign(client, org, name="Other")
    watched_tag = await make_tag(client, org, watched["id"])
    other_tag = await make_tag(client, org, other["id"])
    async with await open_stream(app, org, watched["id"]) as stream:
        await first_id(stream)
        await scan(client, other_tag["code"])
        mine = await scan(client, watched_tag["code"])
        (message,) = await stream.events(1)
        assert data(message)["click_id"] == mine


async def test_resume_with_last_event_id_delivers_what_was_missed_once(
    client: httpx.AsyncClient, app: FastAPI, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    async with await open_stream(app, org, campaign["id"]) as stream:
        await first_id(stream)
        first = await scan(client, tag["code"])
        (message,) = await stream.events(1)
        assert data(message)["click_id"] == first
        last_id = message.id
    assert last_id is not None
    missed = [await scan(client, tag["code"]) for _ in range(3)]
    async with await open_stream(app, org, campaign["id"], **{"Last-Event-ID": last_id}) as stream:
        replayed = await stream.events(3)
        assert [data(m)["click_id"] for m in replayed] == missed
        later = await scan(client, tag["code"])
        (message,) = await stream.events(1)
        assert data(message)["click_id"] == later
    # Resuming from the middle of what was replayed repeats nothing before it.
    assert replayed[0].id is not None
    headers = {"Last-Event-ID": replayed[0].id}
    async with await open_stream(app, org, campaign["id"], **headers) as stream:
        again = await stream.events(3)
        assert [data(m)["click_id"] for m in again] == [*missed[1:], later]


async def test_resume_from_the_start_cursor_of_a_quiet_stream(
    client: httpx.AsyncClient, app: FastAPI, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    async with await open_stream(app, org, campaign["id"]) as stream:
        cursor = await first_id(stream)
    missed = await scan(client, tag["code"])
    async with await open_stream(app, org, campaign["id"], **{"Last-Event-ID": cursor}) as stream:
        (message,) = await stream.events(1)
        assert data(message)["click_id"] == missed


@pytest.mark.parametrize(
    "last_event_id",
    [
        "garbage",
        "5:3:",
        "1:9:4|x7",
        # Beyond PostgreSQL's pg_snapshot and bigint ranges: was "resume failed
        # (database unavailable); reconnect", so EventSource retried it forever.
        "9223372036854775808:9223372036854775808:",
        "10:10:|c9223372036854775808",
        # More than 19 digits: was silently cut to the first 19.
        "10:10:|s99999999999999999999999",
    ],
)
async def test_a_malformed_last_event_id_starts_from_now(
    client: httpx.AsyncClient, app: FastAPI, org: Org, last_event_id: str
) -> None:
    campaign = await make_campaign(client, org)
    headers = {"Last-Event-ID": last_event_id}
    async with await open_stream(app, org, campaign["id"], **headers) as stream:
        message = await stream.next_message()
        assert message is not None
        assert message.comments == ["Last-Event-ID not understood; starting from now"]
        await first_id(stream)


async def test_a_resume_point_older_than_the_retention_starts_from_now(
    client: httpx.AsyncClient, app: FastAPI, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    async with await open_stream(app, org, campaign["id"]) as stream:
        cursor = await first_id(stream)
    await scan(client, tag["code"])
    async with engine.begin() as conn:
        # As if the retention had deleted that batch.
        await conn.execute(
            text("UPDATE feed_horizon SET last_deleted = (SELECT max(xid) FROM feed_batches)")
        )
    try:
        headers = {"Last-Event-ID": cursor}
        async with await open_stream(app, org, campaign["id"], **headers) as stream:
            message = await stream.next_message()
            assert message is not None
            assert message.comments == ["Last-Event-ID older than the retention; starting from now"]
            await first_id(stream)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE feed_horizon SET last_deleted = '0'"))


async def test_an_idle_stream_sends_heartbeats_with_its_cursor(
    client: httpx.AsyncClient, app: FastAPI, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = app.state.settings.model_copy(update={"feed_heartbeat_s": 0.05})
    monkeypatch.setattr(app.state, "settings", settings)
    campaign = await make_campaign(client, org)
    async with await open_stream(app, org, campaign["id"]) as stream:
        await first_id(stream)
        message = await stream.next_message()
        assert message is not None and message.comments == ["heartbeat"]
        assert message.event is None and message.data is None
        assert message.id is not None
        Position.parse(message.id)


async def test_a_slow_client_is_dropped_and_scans_go_on(
    client: httpx.AsyncClient,
    app: FastAPI,
    org: Org,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub: FeedHub = app.state.feed
    monkeypatch.setattr(hub, "queue_max", 3)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    async with await open_stream(app, org, campaign["id"]) as stream:
        await first_id(stream)
        stream.stall()  # stops reading: its queue fills
        click_ids = [await scan(client, tag["code"]) for _ in range(12)]
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM scans"))).scalar_one()
        assert stored == 12
        # The hub drops it at its next poll (within a second); poll with a deadline.
        deadline = asyncio.get_running_loop().time() + 10
        while hub.listener_count and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert hub.listener_count == 0
        stream.resume()
        received: list[str] = []
        while (message := await stream.next_message()) is not None:
            if message.event == "scan":
                received.append(data(message)["click_id"])
            last = message
        assert last.comments == ["dropped: too slow; reconnect with Last-Event-ID"]
        assert received == click_ids[: len(received)]
        assert len(received) < len(click_ids)


async def test_another_organizations_campaign_is_404(
    client: httpx.AsyncClient, app: FastAPI, org: Org, other_org: Org
) -> None:
    campaign = await make_campaign(client, other_org)
    async with await open_stream(app, org, campaign["id"]) as stream:
        assert stream.status == 404
        assert stream.headers["content-type"] == "application/problem+json"
        assert json.loads(await stream.body())["code"] == "campaign_not_found"
    assert app.state.feed.listener_count == 0


async def test_a_deleted_or_unknown_campaign_is_404_and_a_key_is_needed(
    client: httpx.AsyncClient, app: FastAPI, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    assert (await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers)).is_success
    for campaign_id in (campaign["id"], 999_999):
        async with await open_stream(app, org, campaign_id) as stream:
            assert stream.status == 404
            assert json.loads(await stream.body())["code"] == "campaign_not_found"
    response = await client.get(events_path(campaign["id"]))
    assert response.status_code == 401
    assert response.json()["code"] == "missing_api_key"


async def test_closing_the_hub_ends_the_streams(
    client: httpx.AsyncClient, app: FastAPI, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    hub: FeedHub = app.state.feed
    async with await open_stream(app, org, campaign["id"]) as stream:
        await first_id(stream)
        listeners = [listener for group in hub._listeners.values() for listener in group]
        assert len(listeners) == 1
        listeners[0].close()  # what close_streams does to each, at shutdown
        assert await stream.next_message() is None
