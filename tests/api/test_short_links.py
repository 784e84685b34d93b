"""The short-link fast path as the outermost ASGI application, its prefix table, and
load shedding."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from api.app import served_app
from api.middleware import ForwardedFor, HeadersAndClient
from api.scan_endpoint import SHORT_LINKS, ShortLinkRoute, ShortLinks
from api.security_headers import SecurityHeaders
from campaigns.scanning.writer import WriterOverloaded
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

PHONE = {"User-Agent": IPHONE_SAFARI}


async def test_scans_never_enter_the_fastapi_stack(
    app: FastAPI, client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    served = served_app(app)  # what `passerelle serve` runs
    # Outermost, in one pass over the headers: 431 on every path, then the client
    # address behind proxies.
    assert isinstance(served, HeadersAndClient)
    assert isinstance(served.forwarded, ForwardedFor)
    short_links = served.app
    assert isinstance(short_links, ShortLinks)  # then the short links
    headers = short_links.app
    assert isinstance(headers, SecurityHeaders)  # then the headers of every other response
    assert headers.app is app  # then FastAPI: its telemetry, middleware, router
    entered: list[str] = []

    async def fastapi_stand_in(scope: Scope, receive: Receive, send: Send) -> None:
        entered.append(scope["path"])
        raise AssertionError("FastAPI, its middleware and router are not for scans")

    short_links.app = fastapi_stand_in
    transport = httpx.ASGITransport(app=served, client=("198.51.100.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        for method in ("GET", "HEAD"):
            response = await c.request(method, f"/s/{tag['code']}", headers=PHONE)
            assert response.status_code == 302
        assert (await c.get("/S/ZZZZZZZZ")).status_code == 404
        assert entered == []
        # Other methods under a prefix go on (e.g. POST /s/{click_id}/location later).
        with pytest.raises(AssertionError):
            await c.post(f"/s/{tag['code']}/location")
    assert entered == [f"/s/{tag['code']}/location"]


async def test_a_prefix_is_one_table_entry(
    app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    routes = {**SHORT_LINKS, "/n/": ShortLinkRoute(channel="nfc")}
    short_links = ShortLinks(app.router, state=app.state, routes=routes)
    transport = httpx.ASGITransport(app=short_links, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        nfc = await c.get(f"/n/{tag['code'].lower()}", headers=PHONE)
        qr = await c.get(f"/s/{tag['code']}", headers=PHONE)
    assert nfc.status_code == qr.status_code == 302
    assert "utm_medium=nfc" in nfc.headers["location"]
    assert "utm_medium=qr" in qr.headers["location"]
    async with engine.connect() as conn:
        channels = (await conn.execute(text("SELECT channel FROM scans ORDER BY id"))).scalars()
        assert list(channels) == ["nfc", "qr"]


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        pytest.param(WriterOverloaded("queue full", 3), "3", id="overloaded"),
        pytest.param(OSError("disk full"), "1", id="nowhere-to-store"),
    ],
)
async def test_shedding_load_is_503_with_retry_after(
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    retry_after: str,
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])

    async def refuse(*args: Any) -> None:
        raise error

    monkeypatch.setattr(app.state.scans.writer, "submit", refuse)
    response = await client.get(f"/s/{tag['code']}", headers=PHONE)
    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM scans"))).scalar() == 0


async def test_a_bug_in_the_scan_path_is_a_500_problem(
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fast path sits outside Starlette's error middleware: it renders its own 500."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])

    def broken(*args: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(app.state.scans, "build", broken)
    response = await client.get(f"/s/{tag['code']}?e=00", headers=PHONE)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "internal_error" and "a bug" not in response.text
    # One log line with the traceback, naming the request (not its query) and the id.
    (logged,) = [r for r in caplog.records if r.name == "api.errors"]
    assert logged.getMessage() == (
        f"internal error {body['error_id']} answering GET '/s/{tag['code']}': ValueError"
    )
    assert logged.exc_info is not None
