"""``GET/PATCH /v1/organization``: the calling key's organization and its settings."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, table_snapshot


async def test_read_defaults(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get("/v1/organization", headers=org.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "created_at",
        "visitor_cookie",
        "visitor_cookie_consent",
        "scan_retention_days",
        "precise_location_retention_days",
        "allowed_destination_hosts",
    }
    assert body["allowed_destination_hosts"] is None
    assert body["id"] == org.id
    assert body["name"] == "Acme"
    assert body["visitor_cookie"] is False
    assert body["visitor_cookie_consent"] == "organization"
    assert (body["scan_retention_days"], body["precise_location_retention_days"]) == (395, 30)


async def test_update_and_read_back(client: httpx.AsyncClient, org: Org, other_org: Org) -> None:
    response = await client.patch(
        "/v1/organization",
        json={"visitor_cookie": True, "visitor_cookie_consent": "ask"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["visitor_cookie"] is True
    assert response.json()["visitor_cookie_consent"] == "ask"
    assert response.json()["name"] == "Acme"
    read = (await client.get("/v1/organization", headers=org.headers)).json()
    assert (read["visitor_cookie"], read["visitor_cookie_consent"]) == (True, "ask")
    renamed = await client.patch(
        "/v1/organization", json={"name": " Acme SAS "}, headers=org.headers
    )
    assert renamed.json()["name"] == "Acme SAS"
    assert renamed.json()["visitor_cookie"] is True  # fields not sent are unchanged
    # Each key sees and changes its own organization only.
    theirs = (await client.get("/v1/organization", headers=other_org.headers)).json()
    assert theirs["id"] == other_org.id
    assert (theirs["name"], theirs["visitor_cookie"]) == ("Globex", False)


@pytest.mark.parametrize(
    "body",
    [
        {"visitor_cookie": "yes"},
        {"visitor_cookie": 1},
        {"visitor_cookie": None},
        {"visitor_cookie_consent": "visitor"},
        {"visitor_cookie_consent": None},
        {"name": ""},
        {"name": None},
        {"name": "a\u202eb"},
        {"id": 5},
        {"retention_days": 30},
        {"scan_retention_days": 0},
        {"scan_retention_days": 3651},
        {"scan_retention_days": "30"},
        {"scan_retention_days": 30.5},
        {"scan_retention_days": None},
        {"precise_location_retention_days": 0},
        {"precise_location_retention_days": True},
    ],
)
async def test_bad_updates(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    before = await table_snapshot(engine, "organizations")
    response = await client.patch("/v1/organization", json=body, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["loc"][0] == "body"
    assert await table_snapshot(engine, "organizations") == before


async def test_needs_a_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/organization")).status_code == 401
    response = await client.patch("/v1/organization", json={"visitor_cookie": True})
    assert response.status_code == 401


async def test_retention_settings(client: httpx.AsyncClient, org: Org, other_org: Org) -> None:
    response = await client.patch(
        "/v1/organization",
        json={"scan_retention_days": 3650, "precise_location_retention_days": 3650},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["scan_retention_days"] == 3650
    assert response.json()["precise_location_retention_days"] == 3650
    response = await client.patch(
        "/v1/organization",
        json={"scan_retention_days": 1, "precise_location_retention_days": 1},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    read = (await client.get("/v1/organization", headers=org.headers)).json()
    assert (read["scan_retention_days"], read["precise_location_retention_days"]) == (1, 1)
    theirs = (await client.get("/v1/organization", headers=other_org.headers)).json()
    assert (theirs["scan_retention_days"], theirs["precise_location_retention_days"]) == (395, 30)


@pytest.mark.parametrize(
    "body",
    [
        # A GPS fix cannot outlive its scan: checked against the stored value too.
        {"precise_location_retention_days": 396},
        {"scan_retention_days": 29},
        {"scan_retention_days": 10, "precise_location_retention_days": 11},
    ],
)
async def test_precise_retention_within_scan_retention(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    before = await table_snapshot(engine, "organizations")
    response = await client.patch("/v1/organization", json=body, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_retention"
    assert await table_snapshot(engine, "organizations") == before
