"""``GET /v1/campaigns/{id}/scans``: JSON pages, GeoJSON and CSV, never an address."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

LOUVRE = [2.3376, 48.8606]
FIX = {"lat": 48.85, "lon": 2.35, "accuracy_m": 8.0}


async def three_scans(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> dict[str, Any]:
    """A placed tag scanned by a phone (then its GPS fix), a bot, and an unplaced tag."""
    campaign = await make_campaign(client, org, precise_location="ask")
    placed = await make_tag(
        client, org, campaign["id"], placement={"type": "Point", "coordinates": LOUVRE}
    )
    bare = await make_tag(client, org, campaign["id"], label="window-2")
    phone = {"User-Agent": IPHONE_SAFARI}
    assert (await client.get(f"/s/{placed['code']}", headers=phone)).status_code == 200
    assert (await client.head(f"/s/{placed['code']}", headers=phone)).status_code == 302
    assert (await client.get(f"/s/{bare['code']}", headers=phone)).status_code == 200
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT click_id FROM scans ORDER BY id"))).scalars())
    response = await client.post(f"/s/{ids[0]}/location", json=FIX)
    assert response.status_code == 204
    return {"campaign": campaign, "placed": placed, "bare": bare, "click_ids": ids}


def expected(made: dict[str, Any]) -> list[dict[str, Any]]:
    """The three scans, newest first, as the API must show them."""
    common = {
        "channel": "qr",
        "device_type": "mobile",
        "os": "iOS",
        "browser": "Mobile Safari",
        "country": None,
        "region": None,
        "city": None,
        "far_from_placement": None,
        "rule_id": None,
        "variant": None,
        "internal": False,
        "outcome": "redirect",
        "nfc_counter": None,
        "nfc_verification": None,
    }
    ids = made["click_ids"]
    return [
        {
            **common,
            "click_id": ids[2],
            "tag_id": made["bare"]["id"],
            "is_bot": False,
            "bot_reason": None,
            "position": None,
            "geo_source": None,
            "accuracy_m": None,
            "location_id": None,
        },
        {
            **common,
            "click_id": ids[1],
            "tag_id": made["placed"]["id"],
            "is_bot": True,
            "bot_reason": "head",
            "position": {"type": "Point", "coordinates": LOUVRE},
            "geo_source": "placement",
            "accuracy_m": None,
            "location_id": None,
        },
        {
            **common,
            "click_id": ids[0],
            "tag_id": made["placed"]["id"],
            "is_bot": False,
            "bot_reason": None,
            "position": {"type": "Point", "coordinates": [2.35, 48.85]},
            "geo_source": "gps",
            "accuracy_m": 8.0,
            "location_id": None,
        },
    ]


def without_volatile(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("id", "scanned_at")}


async def test_json_pages_show_positions_and_never_an_address(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    made = await three_scans(client, org, engine)
    url = f"/v1/campaigns/{made['campaign']['id']}/scans"
    first = await client.get(url, params={"limit": 2}, headers=org.headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert [without_volatile(item) for item in body["items"]] == expected(made)[:2]
    assert "ip" not in first.text and "visitor" not in first.text
    second = await client.get(
        url, params={"limit": 2, "cursor": body["next_cursor"]}, headers=org.headers
    )
    page = second.json()
    assert [without_volatile(item) for item in page["items"]] == expected(made)[2:]
    assert page["next_cursor"] is None


async def test_geojson_and_csv_exports(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    made = await three_scans(client, org, engine)
    url = f"/v1/campaigns/{made['campaign']['id']}/scans"
    geo = await client.get(url, params={"format": "geojson"}, headers=org.headers)
    assert geo.status_code == 200
    assert geo.headers["content-type"] == "application/geo+json"
    collection = geo.json()
    assert collection["type"] == "FeatureCollection"
    oldest_first = list(reversed(expected(made)))
    assert [
        {"geometry": f["geometry"], **without_volatile(f["properties"])}
        for f in collection["features"]
    ] == [
        {"geometry": e["position"], **{k: v for k, v in e.items() if k != "position"}}
        for e in oldest_first
    ]

    table = await client.get(url, params={"format": "csv"}, headers=org.headers)
    assert table.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [(r["click_id"], r["lon"], r["lat"], r["geo_source"], r["is_bot"]) for r in rows] == [
        (made["click_ids"][0], "2.35", "48.85", "gps", "False"),
        (made["click_ids"][1], "2.3376", "48.8606", "placement", "True"),
        (made["click_ids"][2], "", "", "", "False"),
    ]
    assert "ip_truncated" not in table.text.splitlines()[0]


async def test_accept_geo_json_asks_for_the_feature_collection(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    made = await three_scans(client, org, engine)
    url = f"/v1/campaigns/{made['campaign']['id']}/scans"
    exported = (await client.get(url, params={"format": "geojson"}, headers=org.headers)).json()
    for accept in ("application/geo+json", "application/json;q=0.5, application/geo+json"):
        response = await client.get(url, headers={**org.headers, "Accept": accept})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/geo+json"
        assert response.json()["type"] == "FeatureCollection"
        assert [f["properties"]["click_id"] for f in response.json()["features"]] == [
            f["properties"]["click_id"] for f in exported["features"]
        ]
    # JSON pages otherwise: no Accept, wildcards, JSON preferred, or an explicit format.
    for accept, params in (
        (None, {}),
        ("*/*", {}),
        ("application/json", {}),
        ("application/geo+json;q=0.5, application/json", {}),
        ("application/geo+json;q=0", {}),
        ("application/geo+json", {"format": "json"}),
    ):
        headers = org.headers if accept is None else {**org.headers, "Accept": accept}
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json", accept
        assert len(response.json()["items"]) == 3


async def test_other_tenants_and_bad_windows_are_refused(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    made = await three_scans(client, org, engine)
    url = f"/v1/campaigns/{made['campaign']['id']}/scans"
    for fmt in ("json", "geojson", "csv"):
        response = await client.get(url, params={"format": fmt}, headers=other_org.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "campaign_not_found"
    window = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z", "format": "csv"}
    response = await client.get(url, params=window, headers=org.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_window"
