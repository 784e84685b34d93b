"""Protection of the public endpoints: per-client rate (a burst flag on scans, never a
refusal), body size limit, strict code parsing, and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app, served_app
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

PHONE = {"User-Agent": IPHONE_SAFARI}


@pytest.fixture
async def limited_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """A second app instance with a tight limit: 3 requests burst, 1 per second."""
    app = create_app(
        settings.model_copy(
            update={"rate_limit_enabled": True, "rate_limit_burst": 3, "rate_limit_per_s": 1.0}
        )
    )
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=served_app(app), client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="https://go.example.com")


async def test_scans_past_the_rate_are_redirected_and_stored_as_burst(
    client: httpx.AsyncClient, org: Org, limited_app: FastAPI, engine: AsyncEngine
) -> None:
    """Never 429 on /s/: a venue behind one address gets every redirect; the scans past
    the per-client rate are stored with burst = true and still count as people's."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    await limited_app.state.scans.reload(tag_ids=[tag["id"]], campaign_ids=[campaign["id"]])
    async with client_for(limited_app, "198.51.100.7") as phone:
        statuses = [
            (await phone.get(f"/s/{tag['code']}", headers=PHONE)).status_code for _ in range(6)
        ]
    assert statuses == [302] * 6
    # Another client is not affected, and an IPv6 client is rated per /64.
    async with client_for(limited_app, "198.51.100.8") as other:
        assert (await other.get(f"/s/{tag['code']}", headers=PHONE)).status_code == 302
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9", "2001:db8:1:2::77"):
        async with client_for(limited_app, host) as v6:
            assert (await v6.get(f"/s/{tag['code']}", headers=PHONE)).status_code == 302
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT host(ip_truncated), burst, is_bot FROM scans ORDER BY id")
            )
        ).all()
    assert [(ip, burst) for ip, burst, _ in rows] == [
        *[("198.51.100.0", False)] * 3,
        *[("198.51.100.0", True)] * 3,
        ("198.51.100.0", False),
        *[("2001:db8:1::", False)] * 3,
        ("2001:db8:1::", True),
    ]
    assert not any(is_bot for _, _, is_bot in rows)
    data = (await client.get(f"/v1/campaigns/{campaign['id']}/stats", headers=org.headers)).json()
    assert (data["scans"], data["burst_scans"], data["bot_scans"]) == (11, 4, 0)
    assert data["by_tag"][0]["burst_scans"] == 4


def test_bucket_refills_at_the_configured_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.check("192.0.2.1", now=0.0) == 0.0
    assert limiter.check("192.0.2.1", now=0.0) == 0.0
    assert limiter.check("192.0.2.1", now=0.0) == pytest.approx(0.5)
    assert limiter.check("192.0.2.1", now=0.5) == 0.0  # one token back after 1/rate s


def test_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=100)
    for i in range(1000):
        limiter.check(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(limiter) <= 100


async def test_oversized_bodies_are_413_and_store_nothing(
    client: httpx.AsyncClient, org: Org, settings: Settings
) -> None:
    big = "x" * (settings.max_body_bytes + 1)
    r = await client.post(
        "/v1/campaigns",
        content=f'{{"name": "{big}", "destination_url": "https://a.example"}}',
        headers={**org.headers, "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    r = await client.post(
        "/v1/campaigns",
        content=chunks(),
        headers={**org.headers, "content-type": "application/json"},
    )
    assert r.status_code == 413
    listing = await client.get("/v1/campaigns", headers=org.headers)
    assert listing.json()["items"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/s/ABC",
        "/s/ABCDEFGHJ",
        "/s/ABCDEFG%21",
        "/s/ABCDEFGU",
        "/s/%C3%A9BCDEFGH",
        "/s/" + "A" * 5000,
    ],
)
async def test_malformed_codes_are_404_pages(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")


async def test_metrics_count_scans_and_expose_the_writer(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await client.get("/metrics")
    await client.get(f"/s/{tag['code']}", headers={"user-agent": "Twitterbot/1.0"})
    await client.get("/s/ZZZZZZZZ")
    text = (await client.get("/metrics")).text
    assert before.status_code == 200
    assert 'passerelle_scans_total{bot="true",channel="qr",outcome="redirect"}' in text
    assert 'passerelle_public_responses_total{status="404"}' in text
    for name in (
        "passerelle_writer_batch_size_bucket",
        "passerelle_writer_commit_seconds_bucket",
        "passerelle_spool_depth",
        "passerelle_cache_tags",
        "passerelle_database_up 1.0",
    ):
        assert name in text
