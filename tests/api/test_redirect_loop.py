"""422 ``redirect_loop``: no campaign or tag URL may point at the short-link origin
(``https://go.example.com`` in the test settings), on create and on PATCH."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot

TABLES = ("campaigns", "tags")
LOOP = "https://GO.example.com:443/s/7KQ2M9XD"


def assert_loop(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == "redirect_loop"
    assert [e["loc"] for e in body["errors"]] == [["body", field]]


@pytest.mark.parametrize("field", ["destination_url", "fallback_url"])
async def test_campaign_create_and_patch(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, field: str
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    body = {"name": "Loop", "destination_url": "https://shop.example.com/", field: LOOP}
    assert_loop(await client.post("/v1/campaigns", json=body, headers=org.headers), field)
    patched = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={field: LOOP}, headers=org.headers
    )
    assert_loop(patched, field)
    assert await table_snapshot(engine, *TABLES) == before


async def test_tag_create_and_patch(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    created = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags",
        json={"destination_url": "http://go.example.com/s/ABC"},
        headers=org.headers,
    )
    assert_loop(created, "destination_url")
    patched = await client.patch(
        f"/v1/tags/{tag['id']}", json={"destination_url": LOOP}, headers=org.headers
    )
    assert_loop(patched, "destination_url")
    assert await table_snapshot(engine, *TABLES) == before


async def test_other_hosts_and_clearing_are_fine(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org, fallback_url="https://www.go.example.com/closed")
    tag = await make_tag(client, org, campaign["id"], destination_url="https://go.example.org/")
    cleared = await client.patch(
        f"/v1/tags/{tag['id']}", json={"destination_url": None}, headers=org.headers
    )
    assert cleared.status_code == 200
    assert cleared.json()["destination_url"] is None
