"""Hostile and edge-case input found by trying to break the service: each is a clear 4xx
problem+json (never a 500), and nothing stored changes."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot

TABLES = ("campaigns", "tags", "conversions")


async def assert_422(response: httpx.Response, code: str = "validation_error") -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad\x00name"},
        {"name": "\x1b[31mred"},
        {"name": "abc\u202egnp.exe"},
        {"name": "\u200b\u200b"},
        {"utm": {"source": "a\x00b"}},
        {"starts_at": "0001-01-01T00:00:00+01:00"},
        {"ends_at": "9999-12-31T23:59:59-01:00"},
        {"starts_at": "1969-12-31T23:00:00Z"},
        {"cost": {"amount_minor": True, "currency": "EUR"}},
        {"cost": {"amount_minor": "100", "currency": "EUR"}},
        {"cost": {"amount_minor": 100, "currency": "XXX"}},
        {"cost": {"amount_minor": 100, "currency": "XAU"}},
        {"destination_url": "https://exa\u200bmple.com/"},
    ],
)
async def test_bad_campaign_fields_are_422_and_store_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    full = {"name": "Spring", "destination_url": "https://shop.example.com/", **body}
    await assert_422(await client.post("/v1/campaigns", json=full, headers=org.headers))
    await assert_422(
        await client.patch(f"/v1/campaigns/{campaign['id']}", json=body, headers=org.headers)
    )
    assert await table_snapshot(engine, *TABLES) == before


async def test_archived_null_is_refused(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    r = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"archived": None}, headers=org.headers
    )
    await assert_422(r, "archived_required")
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"event": "buy\x00"},
        {"external_id": "order\x00-1"},
        {"occurred_at": "0001-01-01T00:00:00+01:00"},
        {"value": {"amount_minor": 1.0, "currency": "EUR"}},
    ],
)
async def test_bad_conversion_fields_are_422(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, changes: dict[str, Any]
) -> None:
    before = await table_snapshot(engine, *TABLES)
    body = {"click_id": "abc", "event": "purchase", "external_id": "o-1", **changes}
    await assert_422(await client.post("/v1/conversions", json=body, headers=org.headers))
    assert await table_snapshot(engine, *TABLES) == before


async def test_nul_in_a_tag_label_is_422(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    r = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags", json={"label": "door\x00"}, headers=org.headers
    )
    await assert_422(r)


async def test_internationalised_hosts_are_stored_as_punycode(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org, destination_url="https://bücher.example/livres")
    assert campaign["destination_url"] == "https://xn--bcher-kva.example/livres"
    tag = await make_tag(client, org, campaign["id"])
    location = (await client.get(f"/s/{tag['code']}")).headers["location"]
    assert location.startswith("https://xn--bcher-kva.example/livres?")


async def test_concurrent_creations_with_the_same_name_all_get_a_slug(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """20 requests at once, each on its own session and connection (the pool holds 20):
    all created, each with its own slug derived from the name."""
    body = {"name": "Spring sale", "destination_url": "https://shop.example.com/"}
    responses = await asyncio.gather(
        *(client.post("/v1/campaigns", json=body, headers=org.headers) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    slugs = [r.json()["slug"] for r in responses]
    assert len(set(slugs)) == 20
    assert "spring-sale" in slugs
    assert all(re.fullmatch(r"spring-sale(-[0-9]+|-[a-z0-9]{6})?", slug) for slug in slugs)
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT slug FROM campaigns"))).scalars().all()
    assert sorted(stored) == sorted(slugs)


async def test_a_flood_of_unknown_fields_gets_a_bounded_answer(
    client: httpx.AsyncClient, org: Org
) -> None:
    body: dict[str, Any] = {f"k{i}": i for i in range(5000)}
    r = await client.post("/v1/campaigns", json=body, headers=org.headers)
    problem = await assert_422(r)
    assert len(problem["errors"]) == 20
    assert "more problems not listed" in problem["detail"]


async def test_paths_under_s_are_html_pages_and_no_slash_redirects(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    for path in (f"/s/{tag['code']}/", f"/s/{tag['code']}%2F", "/s/"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
    r = await client.get("/v1/campaigns/", headers={**org.headers, "host": "evil.example"})
    assert r.status_code == 404  # no redirect built from the Host header
    assert "location" not in r.headers


async def test_health_probes_answer_head_with_an_empty_body(client: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/health/scans", "/health/ready"):
        response = await client.head(path)
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-type"] == "application/json"
