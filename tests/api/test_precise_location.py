"""Consented precise location: the consent page of ``precise_location: ask`` campaigns
and the beacon ``POST /s/{click_id}/location``, against real PostGIS."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from html import unescape as html_unescape
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app, served_app
from api.pages import page_language
from campaigns.models import utcnow
from campaigns.scanning.links import new_click_id
from campaigns.scanning.recent import LOCATION_WINDOW, RecentClick, RecentClicks
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.user_agents import IPHONE_SAFARI

FIX = {"lat": 48.8606, "lon": 2.3376, "accuracy_m": 12.5}


async def ask_tag(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    campaign = await make_campaign(client, org, precise_location="ask")
    assert campaign["precise_location"] == "ask"
    return await make_tag(client, org, campaign["id"], placement=None)


async def consent_page(
    client: httpx.AsyncClient, code: str, language: str = "en-GB,en;q=0.9"
) -> httpx.Response:
    response = await client.get(
        f"/s/{code}", headers={"User-Agent": IPHONE_SAFARI, "Accept-Language": language}
    )
    assert response.status_code == 200, response.text
    return response


async def stored_click_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT click_id FROM scans ORDER BY id"))).scalars())


async def org_of_click(engine: AsyncEngine, click_id: str) -> int:
    async with engine.connect() as conn:
        org_id: int = (
            await conn.execute(
                text("SELECT organization_id FROM scans WHERE click_id = :c"), {"c": click_id}
            )
        ).scalar_one()
    return org_id


async def test_the_consent_page_is_self_contained_and_strict(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    tag = await ask_tag(client, org)
    response = await consent_page(client, tag["code"])
    (click_id,) = await stored_click_ids(engine)  # the scan is recorded first
    html = response.text
    headers = response.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", headers["content-security-policy"])
    assert nonce is not None
    assert headers["content-security-policy"] == (
        f"default-src 'none'; script-src 'nonce-{nonce[1]}'; style-src 'nonce-{nonce[1]}'; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    assert html.count(f'nonce="{nonce[1]}"') == 2  # the one style and the one script
    # No external assets: nothing loaded from anywhere (no src, no stylesheet, no url()).
    for asset in ("src=", "<link", "<img", "<iframe", "@import", "url("):
        assert asset not in html
    # The page carries the click id, posts to its beacon, and goes on to the destination
    # (also without JavaScript, by a meta refresh).
    link = re.search(r'<a href="([^"]+)">Continue</a>', html)
    assert link is not None
    destination = link[1]
    url = httpx.URL(html_unescape(destination))
    assert (url.host, url.path, url.params["pcid"]) == ("shop.example.com", "/summer", click_id)
    assert url.params["utm_medium"] == "qr"
    # The beacon carries the scan's signed click token (it vouches for a scan not stored
    # yet, e.g. in another process's spool).
    beacon = re.search(rf'"(/s/{click_id}/location\?t=([0-9]+\.[0-9]+\.[A-Za-z0-9_-]+))"', html)
    assert beacon is not None
    assert beacon[2].split(".")[0] == str(await org_of_click(engine, click_id))
    assert f'<noscript><meta http-equiv="refresh" content="0;url={destination}"></noscript>' in html
    assert "setTimeout(go, 4000)" in html
    assert "navigator.geolocation.getCurrentPosition" in html


async def test_the_consent_page_speaks_french_and_english(
    client: httpx.AsyncClient, org: Org
) -> None:
    tag = await ask_tag(client, org)
    french = await consent_page(client, tag["code"], "fr-FR,fr;q=0.9,en;q=0.8")
    assert '<html lang="fr">' in french.text
    assert "votre position" in french.text and ">Continuer</a>" in french.text
    assert french.headers["content-language"] == "fr"
    english = await consent_page(client, tag["code"], "en-US,fr;q=0.5")
    assert '<html lang="en">' in english.text and ">Continue</a>" in english.text
    assert "your position" in english.text


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("de-DE", "en"),
        ("fr", "fr"),
        ("de;q=1, fr-CA;q=0.7, en;q=0.6", "fr"),
        ("en;q=0.2, fr;q=0.3", "fr"),
        ("fr;q=0, en;q=0.1", "en"),
        ("en, fr", "en"),
        ("fr;q=abc, en;q=0.5", "en"),
    ],
)
def test_page_language(header: str | None, language: str) -> None:
    assert page_language(header) == language


async def test_bots_and_off_campaigns_get_the_plain_redirect(
    client: httpx.AsyncClient, org: Org
) -> None:
    tag = await ask_tag(client, org)
    head = await client.head(f"/s/{tag['code']}", headers={"User-Agent": IPHONE_SAFARI})
    assert head.status_code == 302
    bot = await client.get(f"/s/{tag['code']}", headers={"User-Agent": "Googlebot/2.1"})
    assert bot.status_code == 302
    campaign = await make_campaign(client, org, name="Plain", slug="plain")
    assert campaign["precise_location"] == "off"
    plain = await make_tag(client, org, campaign["id"])
    response = await client.get(f"/s/{plain['code']}", headers={"User-Agent": IPHONE_SAFARI})
    assert response.status_code == 302


async def positions(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT click_id, ST_X(position::geometry), ST_Y(position::geometry), "
                "geo_source, accuracy_m FROM scan_positions ORDER BY scan_id"
            )
        )
        return [tuple(row) for row in rows]


async def test_the_beacon_records_once_and_the_scan_reads_it_as_gps(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    tag = await ask_tag(client, org)
    await consent_page(client, tag["code"])
    (click_id,) = await stored_click_ids(engine)
    assert await positions(engine) == [(click_id, None, None, None, None)]

    response = await client.post(f"/s/{click_id}/location", json=FIX)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await positions(engine) == [(click_id, 2.3376, 48.8606, "gps", 12.5)]

    before = await table_snapshot(engine, "scan_locations")
    again = await client.post(f"/s/{click_id}/location", json={**FIX, "lat": 45.0})
    assert again.status_code == 409
    assert again.json()["code"] == "location_already_recorded"
    assert await table_snapshot(engine, "scan_locations") == before


async def test_a_placed_scan_is_read_with_the_gps_fix_instead(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, precise_location="ask")
    tag = await make_tag(
        client, org, campaign["id"], placement={"type": "Point", "coordinates": [2.35, 48.85]}
    )
    await consent_page(client, tag["code"])
    (click_id,) = await stored_click_ids(engine)
    assert await positions(engine) == [(click_id, 2.35, 48.85, "placement", None)]
    assert (await client.post(f"/s/{click_id}/location", json=FIX)).status_code == 204
    assert await positions(engine) == [(click_id, 2.3376, 48.8606, "gps", 12.5)]


@pytest.mark.parametrize(
    "body",
    [
        {**FIX, "lat": 90.5},
        {**FIX, "lon": -180.01},
        {**FIX, "accuracy_m": -1},
        {**FIX, "accuracy_m": 250_000},
        {**FIX, "lat": "48.86"},
        {**FIX, "lon": True},
        {**FIX, "lat": None},
        {**FIX, "lon": 10**400},  # a JSON integer no float holds
    ],
)
async def test_invalid_coordinates_are_refused(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    tag = await ask_tag(client, org)
    await consent_page(client, tag["code"])
    (click_id,) = await stored_click_ids(engine)
    response = await client.post(f"/s/{click_id}/location", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_coordinates"
    assert response.headers["content-type"] == "application/problem+json"
    assert await table_snapshot(engine, "scan_locations") == {"scan_locations": []}


async def test_unknown_click_ids_are_404(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    for click_id in (new_click_id(), "x" * 64):
        response = await client.post(f"/s/{click_id}/location", json=FIX)
        assert response.status_code == 404
        assert response.json()["code"] == "click_not_found"
    assert await table_snapshot(engine, "scan_locations") == {"scan_locations": []}


async def insert_scan(engine: AsyncEngine, org: Org, click_id: str, at: dt.datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO scans (click_id, organization_id, campaign_id, tag_id, scanned_at, "
                "channel, method, outcome, destination, is_bot) "
                "VALUES (:c, :o, 1, 1, :at, 'qr', 'GET', 'redirect', 'https://x.example/', false)"
            ),
            {"c": click_id, "o": org.id, "at": at},
        )


async def test_the_window_closes_ten_minutes_after_the_scan(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    # A scan of another process (found in the database), 10 min 1 s old: too late.
    late, in_time = new_click_id(), new_click_id()
    await insert_scan(engine, org, late, utcnow() - LOCATION_WINDOW - dt.timedelta(seconds=1))
    await insert_scan(engine, org, in_time, utcnow() - LOCATION_WINDOW + dt.timedelta(seconds=30))
    response = await client.post(f"/s/{late}/location", json=FIX)
    assert response.status_code == 410
    assert response.json()["code"] == "location_window_closed"
    assert await table_snapshot(engine, "scan_locations") == {"scan_locations": []}
    assert (await client.post(f"/s/{in_time}/location", json=FIX)).status_code == 204


async def test_a_click_id_this_process_issued_is_accepted_before_its_scan_is_stored(
    app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    # The scan is still in this process's spool (the database was away when it was
    # answered): the in-memory map of recent click ids vouches for it.
    spooled = new_click_id()
    app.state.scans.recent_clicks.add(spooled, RecentClick(org.id, utcnow()))
    response = await client.post(f"/s/{spooled}/location", json=FIX)
    assert response.status_code == 204, response.text
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT organization_id, accuracy_m FROM scan_locations WHERE click_id = :c"),
                {"c": spooled},
            )
        ).one()
    assert tuple(row) == (org.id, 12.5)
    # The map says when: an old one is refused like one from the database.
    old = new_click_id()
    app.state.scans.recent_clicks.add(old, RecentClick(org.id, utcnow() - dt.timedelta(hours=1)))
    assert (await client.post(f"/s/{old}/location", json=FIX)).status_code == 410


def test_recent_clicks_forget_past_the_window_and_the_bound() -> None:
    recent = RecentClicks(max_entries=2)
    t0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    recent.add("a", RecentClick(1, t0))
    recent.add("b", RecentClick(1, t0 + dt.timedelta(minutes=5)))
    assert (recent.get("a"), len(recent)) == (RecentClick(1, t0), 2)
    recent.add("c", RecentClick(1, t0 + LOCATION_WINDOW + dt.timedelta(seconds=1)))
    assert (recent.get("a"), len(recent)) == (None, 2)  # older than the window
    recent.add("d", RecentClick(1, t0 + dt.timedelta(minutes=11)))
    assert (recent.get("b"), recent.get("c") is not None, len(recent)) == (None, True, 2)


@pytest.fixture
async def limited_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """Beacon limit: 2 posts, then (almost) no refill."""
    app = create_app(
        settings.model_copy(
            update={
                "rate_limit_enabled": True,
                "location_rate_limit_burst": 2,
                "location_rate_limit_per_s": 0.001,
            }
        )
    )
    async with app.router.lifespan_context(app):
        yield app


async def test_the_beacon_is_limited_per_address(
    limited_app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    transport = httpx.ASGITransport(app=served_app(limited_app), client=("198.51.100.4", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        for _ in range(2):
            response = await c.post(f"/s/{new_click_id()}/location", json=FIX)
            assert response.status_code == 404
        response = await c.post(f"/s/{new_click_id()}/location", json=FIX)
        assert response.status_code == 429
        assert response.json()["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
    assert await table_snapshot(engine, "scan_locations") == {"scan_locations": []}


async def test_a_signed_click_id_of_a_scan_not_stored_yet_is_accepted_and_joined_later(
    app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    # The scan is in another process's spool: neither this process's memory nor the
    # database knows it, but the page's beacon URL carries its signed click token.
    pending = new_click_id()
    scanned_at = utcnow() - dt.timedelta(seconds=5)
    token = app.state.scans.click_tokens.sign(
        "location", click_id=pending, organization_id=org.id, scanned_at=scanned_at
    )
    response = await client.post(f"/s/{pending}/location?t={token}", json=FIX)
    assert response.status_code == 204, response.text
    await insert_scan(engine, org, pending, scanned_at)  # the spool is replayed
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT geo_source, accuracy_m FROM scan_positions WHERE click_id = :c"),
                {"c": pending},
            )
        ).one()
    assert tuple(row) == ("gps", 12.5)


@pytest.mark.parametrize("case", ["forged", "other_click", "other_purpose", "too_old"])
async def test_a_bad_click_token_vouches_for_nothing(
    app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine, case: str
) -> None:
    tokens = app.state.scans.click_tokens
    pending = new_click_id()
    at = utcnow() - (
        LOCATION_WINDOW + dt.timedelta(seconds=1) if case == "too_old" else dt.timedelta(0)
    )
    token = tokens.sign(
        "consent" if case == "other_purpose" else "location",
        click_id=new_click_id() if case == "other_click" else pending,
        organization_id=org.id,
        scanned_at=at,
    )
    if case == "forged":
        token = f"{org.id + 1}." + token.split(".", 1)[1]
    response = await client.post(f"/s/{pending}/location?t={token}", json=FIX)
    expected = (410, "location_window_closed") if case == "too_old" else (404, "click_not_found")
    assert (response.status_code, response.json()["code"]) == expected
    assert await table_snapshot(engine, "scan_locations") == {"scan_locations": []}
