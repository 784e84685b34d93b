from __future__ import annotations

import httpx

from tests.conftest import Org, make_campaign, make_tag


async def test_scan_roundtrip(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.get(f"/s/{tag['code'].lower()}")
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith("https://shop.example.com/summer?")
