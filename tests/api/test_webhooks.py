"""Webhooks: ``POST/GET/DELETE /v1/webhooks``, deliveries, retries, pings; signed
deliveries to a real HTTP receiver on 127.0.0.1, sent from the outbox written with the
scan (through ``GET /s/{code}``) or the conversion; retried across a restart; SSRF
refusals; tenant isolation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.crypto import unseal
from campaigns.db import libpq_url
from campaigns.settings import Settings
from campaigns.webhooks.delivery import WebhookDispatcher
from campaigns.webhooks.signing import SECRET_PURPOSE, secret_aad
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.user_agents import IPHONE_SAFARI
from tests.fixtures.webhook_receiver import Receiver, free_port

TOLERANCE_S = 300


def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    """The receiver's check, written from the README's description: the header is
    ``t=<unix>,v1=<hex>``; the hex is HMAC-SHA256(secret, "<t>.<raw body>")."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.partition("=")
        fields.setdefault(key.strip(), []).append(value.strip())
    timestamp = int(fields["t"][0])
    if abs(now - timestamp) > TOLERANCE_S:
        return False
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return any(hmac.compare_digest(mac.hexdigest(), v1) for v1 in fields.get("v1", []))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(free_port()) as running:
        yield running


@pytest.fixture
async def dispatchers(settings: Settings) -> AsyncIterator[Callable[..., WebhookDispatcher]]:
    """Makes dispatchers like a server process's (short backoff), stopped at the end."""
    made: list[WebhookDispatcher] = []

    def make(**overrides: Any) -> WebhookDispatcher:
        options: dict[str, Any] = {
            "conninfo": libpq_url(settings.database_url),
            "secret_key": settings.secret_key,
            "allow_private": True,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.1,
            "poll_interval_s": 0.05,
            **overrides,
        }
        dispatcher = WebhookDispatcher(**options)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.stop()


async def until(check: Callable[[], Awaitable[bool]], step: Callable[[], Awaitable[Any]]) -> None:
    """Run ``step`` until ``check`` holds (bounded, so a bug fails instead of hanging)."""
    for _ in range(400):
        if await check():
            return
        await step()
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def create_webhook(
    client: httpx.AsyncClient, org: Org, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks",
        json={"url": url, "events": events or ["scan.created", "conversion.created"]},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def scan(client: httpx.AsyncClient, code: str) -> str:
    response = await client.get(f"/s/{code}", headers={"user-agent": IPHONE_SAFARI})
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0]


async def scanned_tag(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    campaign = await make_campaign(client, org)
    return await make_tag(client, org, campaign["id"])


async def deliveries(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM webhook_deliveries ORDER BY id"))
        return [dict(row._mapping) for row in rows]


async def listed(client: httpx.AsyncClient, org: Org, webhook_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=org.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_secret_shown_once_and_sealed(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, settings: Settings
) -> None:
    created = await create_webhook(client, org, "https://hooks.example.com/p", ["scan.created"])
    secret = created.pop("secret")
    assert secret.startswith("whsec_") and len(secret) == 49
    assert created == {
        "id": created["id"],
        "url": "https://hooks.example.com/p",
        "events": ["scan.created"],
        "created_at": created["created_at"],
    }
    page = await client.get("/v1/webhooks", headers=org.headers)
    assert page.status_code == 200
    assert page.json() == {"items": [created], "next_cursor": None}
    assert secret not in page.text
    async with engine.connect() as conn:
        sealed = (await conn.execute(text("SELECT secret_encrypted FROM webhooks"))).scalar_one()
    assert secret.encode() not in sealed
    opened = unseal(
        settings.secret_key, SECRET_PURPOSE, sealed, aad=secret_aad(org.id, created["id"])
    )
    assert opened == secret.encode()
    ping = await client.post(f"/v1/webhooks/{created['id']}/ping", headers=org.headers)
    assert secret not in ping.text
    assert (
        secret
        not in (
            await client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=org.headers)
        ).text
    )


async def test_list_is_paginated(client: httpx.AsyncClient, org: Org) -> None:
    ids = [
        (await create_webhook(client, org, f"https://hooks.example.com/{i}"))["id"]
        for i in range(3)
    ]
    first = (await client.get("/v1/webhooks?limit=2", headers=org.headers)).json()
    assert [w["id"] for w in first["items"]] == [ids[2], ids[1]]
    second = (
        await client.get(f"/v1/webhooks?limit=2&cursor={first['next_cursor']}", headers=org.headers)
    ).json()
    assert [w["id"] for w in second["items"]] == [ids[0]] and second["next_cursor"] is None
    bad = await client.get("/v1/webhooks?cursor=nonsense", headers=org.headers)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://hooks.example.com/p", "events": []},
        {"url": "https://hooks.example.com/p", "events": ["scan.deleted"]},
        {"url": "https://user:pass@hooks.example.com/p", "events": ["scan.created"]},
        {"url": "ftp://hooks.example.com/p", "events": ["scan.created"]},
        {"url": "https://hooks.example.com/p"},
    ],
)
async def test_bad_bodies_store_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    before = await table_snapshot(engine, "webhooks")
    response = await client.post("/v1/webhooks", json=body, headers=org.headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert await table_snapshot(engine, "webhooks") == before


@pytest.fixture
def production(app: FastAPI, settings: Settings) -> Iterator[None]:
    """The app answers as in production (SSRF guard on) for the test's duration."""
    app.state.settings = settings.model_copy(update={"environment": "production"})
    try:
        yield
    finally:
        app.state.settings = settings


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://127.0.0.1/hook", "webhook_url_not_public"),
        ("https://10.1.2.3/hook", "webhook_url_not_public"),
        ("https://169.254.169.254/latest/meta-data/", "webhook_url_not_public"),
        ("https://[::1]:8443/hook", "webhook_url_not_public"),
        ("https://[::ffff:127.0.0.1]/hook", "webhook_url_not_public"),
        ("https://100.64.0.7/hook", "webhook_url_not_public"),
        ("https://224.0.0.1/hook", "webhook_url_not_public"),
        ("https://localhost/hook", "webhook_url_not_public"),  # resolves to loopback
        ("http://93.184.215.14/hook", "webhook_url_insecure"),
        ("https://no-such-host.invalid/hook", "webhook_url_unresolvable"),
    ],
)
@pytest.mark.usefixtures("production")
async def test_ssrf_refused_in_production(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, url: str, code: str
) -> None:
    before = await table_snapshot(engine, "webhooks", "webhook_deliveries")
    response = await client.post(
        "/v1/webhooks", json={"url": url, "events": ["scan.created"]}, headers=org.headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == code
    assert problem["errors"][0]["loc"] == ["body", "url"]
    assert await table_snapshot(engine, "webhooks", "webhook_deliveries") == before


async def test_scan_delivered_signed(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    webhook = await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    click_id = await scan(client, tag["code"])
    # Written with the scan's commit, before the redirect was answered.
    (row,) = await deliveries(engine)
    assert (row["event_id"], row["event_type"], row["status"], row["attempts"]) == (
        f"evt_scan_{click_id}",
        "scan.created",
        "pending",
        0,
    )
    dispatcher = dispatchers()
    assert await dispatcher.run_once() == 1
    (got,) = receiver.received
    assert got.path == "/hooks/passerelle"
    assert verify(webhook["secret"], got.headers["passerelle-signature"], got.body, time.time())
    assert not verify("whsec_wrong", got.headers["passerelle-signature"], got.body, time.time())
    assert not verify(
        webhook["secret"], got.headers["passerelle-signature"], got.body + b" ", time.time()
    )
    assert got.headers["passerelle-event-id"] == f"evt_scan_{click_id}"
    assert got.headers["passerelle-event-type"] == "scan.created"
    assert got.headers["passerelle-delivery-id"] == str(row["id"])
    assert got.headers["content-type"] == "application/json"
    event = json.loads(got.body)
    assert event["id"] == f"evt_scan_{click_id}" and event["type"] == "scan.created"
    data = event["data"]
    assert (data["click_id"], data["tag_id"], data["campaign_id"]) == (
        click_id,
        tag["id"],
        tag["campaign_id"],
    )
    assert (data["channel"], data["method"], data["is_bot"], data["os"]) == (
        "qr",
        "GET",
        False,
        "iOS",
    )
    assert "visitor_id" not in data and "ip_truncated" not in data and "user_agent" not in data
    (item,) = await listed(client, org, webhook["id"])
    assert {k: item[k] for k in ("id", "event_id", "event", "status", "attempts")} == {
        "id": row["id"],
        "event_id": f"evt_scan_{click_id}",
        "event": "scan.created",
        "status": "succeeded",
        "attempts": 1,
    }
    assert (item["response_code"], item["error"], item["next_attempt_at"]) == (200, None, None)
    assert [(a["response_code"], a["error"]) for a in item["recent_attempts"]] == [(200, None)]


async def test_no_webhook_no_outbox_row(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
) -> None:
    # Another organization's webhook, and one of this organization for conversions only.
    await create_webhook(client, other_org, receiver.url, ["scan.created"])
    await create_webhook(client, org, receiver.url, ["conversion.created"])
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    assert await deliveries(engine) == []


async def test_down_then_delivered_after_restart(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    receiver = Receiver(port)
    webhook = await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    click_id = await scan(client, tag["code"])

    first = dispatchers(backoff_base_s=0.2, backoff_cap_s=0.2)
    assert await first.run_once() == 1
    (failed,) = await listed(client, org, webhook["id"])
    assert (failed["status"], failed["attempts"], failed["response_code"], failed["error"]) == (
        "pending",
        1,
        None,
        "connect_failed",
    )
    assert failed["next_attempt_at"] is not None
    await first.stop()  # the process goes away

    with receiver:
        second = dispatchers()  # a new process: nothing in memory, only the outbox

        async def delivered() -> bool:
            return [d["status"] for d in await deliveries(engine)] == ["succeeded"]

        await until(delivered, second.run_once)
    (got,) = receiver.received
    assert got.headers["passerelle-event-id"] == f"evt_scan_{click_id}"
    assert verify(webhook["secret"], got.headers["passerelle-signature"], got.body, time.time())
    (item,) = await listed(client, org, webhook["id"])
    assert (item["status"], item["attempts"], item["response_code"]) == ("succeeded", 2, 200)
    assert [(a["response_code"], a["error"]) for a in item["recent_attempts"]] == [
        (None, "connect_failed"),
        (200, None),
    ]


async def test_claim_of_a_dead_process_expires(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    # A process claimed the row (lease of 0.3 s) and died before sending it.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE webhook_deliveries SET attempts = 1, lease_token = gen_random_uuid(), "
                "next_attempt_at = now() + interval '0.3 seconds'"
            )
        )
    other = dispatchers()
    assert await other.run_once() == 0  # still leased: not sent twice at once

    async def delivered() -> bool:
        return [d["status"] for d in await deliveries(engine)] == ["succeeded"]

    await until(delivered, other.run_once)
    assert len(receiver.received) == 1


async def test_concurrent_dispatchers_send_once(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    for _ in range(12):
        await scan(client, tag["code"])
    a, b = dispatchers(concurrency=4), dispatchers(concurrency=4)

    async def all_sent() -> bool:
        return {d["status"] for d in await deliveries(engine)} == {"succeeded"}

    async def both() -> None:
        await asyncio.gather(a.run_once(), b.run_once())

    await until(all_sent, both)
    ids = sorted(r.headers["passerelle-delivery-id"] for r in receiver.received)
    assert len(ids) == 12 and len(set(ids)) == 12


async def test_gives_up_then_manual_retry(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    receiver.statuses = [500, 503, 200]
    webhook = await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    dispatcher = dispatchers(max_attempts=2)

    async def failed() -> bool:
        return [d["status"] for d in await deliveries(engine)] == ["failed"]

    await until(failed, dispatcher.run_once)
    (item,) = await listed(client, org, webhook["id"])
    assert (item["status"], item["attempts"], item["response_code"], item["error"]) == (
        "failed",
        2,
        503,
        "http_503",
    )
    assert await dispatcher.run_once() == 0  # given up: not attempted again

    url = f"/v1/webhooks/{webhook['id']}/deliveries/{item['id']}/retry"
    retried = await client.post(url, headers=org.headers)
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)

    async def succeeded() -> bool:
        return [d["status"] for d in await deliveries(engine)] == ["succeeded"]

    await until(succeeded, dispatcher.run_once)
    assert [r.headers["passerelle-event-id"] for r in receiver.received] == [item["event_id"]] * 3
    (done,) = await listed(client, org, webhook["id"])
    assert [a["response_code"] for a in done["recent_attempts"]] == [500, 503, 200]

    missing = await client.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/{item['id'] + 1000}/retry", headers=org.headers
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "delivery_not_found")
    foreign = await client.post(url, headers=other_org.headers)
    assert (foreign.status_code, foreign.json()["code"]) == (404, "webhook_not_found")


async def test_ping_through_the_app_dispatcher(
    client: httpx.AsyncClient, org: Org, app: FastAPI, engine: AsyncEngine, receiver: Receiver
) -> None:
    webhook = await create_webhook(client, org, receiver.url, ["conversion.created"])
    dispatcher: WebhookDispatcher = app.state.webhooks
    await dispatcher.start()
    try:
        response = await client.post(f"/v1/webhooks/{webhook['id']}/ping", headers=org.headers)
        assert response.status_code == 202, response.text
        ping = response.json()
        assert (ping["event"], ping["status"], ping["attempts"]) == ("ping", "pending", 0)

        async def delivered() -> bool:
            return [d["status"] for d in await deliveries(engine)] == ["succeeded"]

        async def wait() -> None:
            await asyncio.sleep(0.02)

        await until(delivered, wait)
    finally:
        await dispatcher.stop()
    (got,) = receiver.received
    assert verify(webhook["secret"], got.headers["passerelle-signature"], got.body, time.time())
    event = json.loads(got.body)
    assert (event["id"], event["type"], event["data"]) == (
        ping["event_id"],
        "ping",
        {"webhook_id": webhook["id"]},
    )


async def test_conversion_outbox_row(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    webhook = await create_webhook(client, org, receiver.url, ["conversion.created"])
    tag = await scanned_tag(client, org)
    click_id = await scan(client, tag["code"])
    body = {
        "click_id": click_id,
        "event": "purchase",
        "value": {"amount_minor": 4990, "currency": "EUR"},
        "external_id": "order-1",
        "occurred_at": "2026-11-20T14:30:00+01:00",
    }
    created = await client.post("/v1/conversions", json=body, headers=org.headers)
    assert created.status_code == 201, created.text
    replay = await client.post("/v1/conversions", json=body, headers=org.headers)
    assert replay.status_code == 200
    conversion = created.json()
    (row,) = await deliveries(engine)  # one, not one per call
    assert (row["webhook_id"], row["event_id"], row["event_type"]) == (
        webhook["id"],
        f"evt_conversion_{conversion['id']}",
        "conversion.created",
    )
    assert row["payload"]["data"] == {
        "id": conversion["id"],
        "click_id": click_id,
        "event": "purchase",
        "value": {"amount_minor": 4990, "currency": "EUR"},
        "external_id": "order-1",
        "occurred_at": "2026-11-20T13:30:00.000000Z",
        "attributed": True,
        "scan_id": conversion["scan_id"],
        "campaign_id": tag["campaign_id"],
        "tag_id": tag["id"],
    }
    assert await dispatchers().run_once() == 1
    (got,) = receiver.received
    assert json.loads(got.body)["type"] == "conversion.created"


async def test_delete_stops_deliveries(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    webhook = await create_webhook(client, org, receiver.url, ["scan.created"])
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    assert len(await deliveries(engine)) == 1
    deleted = await client.delete(f"/v1/webhooks/{webhook['id']}", headers=org.headers)
    assert deleted.status_code == 204
    assert await deliveries(engine) == []
    await scan(client, tag["code"])  # after the delete: no row either
    assert await deliveries(engine) == []
    assert await dispatchers().run_once() == 0
    assert receiver.received == []
    again = await client.delete(f"/v1/webhooks/{webhook['id']}", headers=org.headers)
    assert (again.status_code, again.json()["code"]) == (404, "webhook_not_found")


async def test_tenant_isolation(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    webhook = await create_webhook(client, org, "https://hooks.example.com/p")
    theirs = (await client.get("/v1/webhooks", headers=other_org.headers)).json()
    assert theirs == {"items": [], "next_cursor": None}
    before = await table_snapshot(engine, "webhooks", "webhook_deliveries")
    base = f"/v1/webhooks/{webhook['id']}"
    for method, path in (
        ("DELETE", base),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/ping"),
        ("POST", f"{base}/deliveries/1/retry"),
    ):
        response = await client.request(method, path, headers=other_org.headers)
        assert (response.status_code, response.json()["code"]) == (404, "webhook_not_found")
    assert await table_snapshot(engine, "webhooks", "webhook_deliveries") == before


async def test_address_checked_again_at_delivery(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    """Stored while allowed (test environment), then a production dispatcher refuses to
    call the loopback address: no request reaches the receiver."""
    https_url = receiver.url.replace("http://", "https://")
    await create_webhook(client, org, https_url, ["scan.created"])
    await create_webhook(
        client, org, receiver.url.replace("127.0.0.1", "localhost"), ["scan.created"]
    )
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    assert await dispatchers(allow_private=False).run_once() == 2
    rows = await deliveries(engine)
    assert sorted((d["status"], d["error"]) for d in rows) == [
        ("pending", "webhook_url_insecure"),
        ("pending", "webhook_url_not_public"),
    ]
    assert receiver.received == []


async def test_a_name_is_sent_to_its_checked_address_with_its_host(
    client: httpx.AsyncClient,
    org: Org,
    receiver: Receiver,
    dispatchers: Callable[..., WebhookDispatcher],
) -> None:
    """The dispatcher resolves the name itself and connects to the address it checked;
    the name still reaches the receiver in ``Host``."""
    by_name = receiver.url.replace("127.0.0.1", "localhost")
    await create_webhook(client, org, by_name, ["scan.created"])
    tag = await scanned_tag(client, org)
    await scan(client, tag["code"])
    assert await dispatchers().run_once() == 1
    (got,) = receiver.received
    assert got.headers["host"] == f"localhost:{receiver.port}"


async def test_other_processes_learn_of_webhooks_through_notify(
    client: httpx.AsyncClient, org: Org, app: FastAPI, engine: AsyncEngine
) -> None:
    """A webhook written by another process (here: plain SQL, no API) reaches this
    process's in-memory index through the ``webhooks`` triggers' notifications; its
    deletion too."""
    hooked = app.state.scans.hooked
    assert org.id not in hooked.scans
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhooks (organization_id, url, events, secret_encrypted) "
                "VALUES (:org, 'https://hooks.example.com/p', '{scan.created}', '\\x00')"
            ),
            {"org": org.id},
        )

    async def known() -> bool:
        return org.id in hooked.scans and org.id not in hooked.conversions

    async def wait() -> None:
        await asyncio.sleep(0.02)

    await until(known, wait)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM webhooks"))

    async def forgotten() -> bool:
        return org.id not in hooked.scans

    await until(forgotten, wait)
