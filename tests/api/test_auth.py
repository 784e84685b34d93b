"""API keys: random, stored only as a hash, shown once; 401 problems for missing,
unknown and revoked keys on every management route, with nothing stored changed."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.db import unit_of_work
from campaigns.services.organizations import issue_api_key, revoke_api_key
from tests.conftest import Org, make_campaign, make_tag, table_snapshot

TABLES = ("organizations", "api_keys", "campaigns", "tags", "scans")
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) == PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:passerelle:problem:{code}"
    assert body["title"] and isinstance(body["detail"], str)
    return body


def _routes(campaign_id: int, tag_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every management route with a valid body, so only authentication can fail."""
    return [
        ("POST", "/v1/campaigns", {"name": "X", "destination_url": "https://x.example.com/"}),
        ("GET", "/v1/campaigns", None),
        ("GET", f"/v1/campaigns/{campaign_id}", None),
        ("PATCH", f"/v1/campaigns/{campaign_id}", {"name": "Renamed"}),
        ("DELETE", f"/v1/campaigns/{campaign_id}", None),
        ("POST", f"/v1/campaigns/{campaign_id}/tags", {"kind": "qr", "label": "x"}),
        ("GET", f"/v1/campaigns/{campaign_id}/tags", None),
        ("GET", f"/v1/tags/{tag_id}", None),
        ("PATCH", f"/v1/tags/{tag_id}", {"status": "disabled"}),
    ]


BAD_HEADERS = [
    pytest.param({}, "missing_api_key", id="no-header"),
    pytest.param({"Authorization": ""}, "missing_api_key", id="empty-header"),
    pytest.param({"Authorization": "Bearer"}, "missing_api_key", id="bearer-without-key"),
    pytest.param({"Authorization": "Bearer    "}, "missing_api_key", id="bearer-blank"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key", id="basic-scheme"),
    pytest.param({"X-Api-Key": "psk_x"}, "missing_api_key", id="other-header"),
    pytest.param(
        {"Authorization": "Bearer psk_" + secrets.token_urlsafe(32)},
        "invalid_api_key",
        id="unknown-key",
    ),
    pytest.param({"Authorization": "Bearer not-a-key"}, "invalid_api_key", id="garbage"),
    pytest.param({"Authorization": "Bearer psk_" + "A" * 5000}, "invalid_api_key", id="very-long"),
    pytest.param({"Authorization": "Bearer psk_' OR '1'='1"}, "invalid_api_key", id="sql-looking"),
]


@pytest.mark.parametrize(("headers", "code"), BAD_HEADERS)
async def test_every_route_refuses_bad_credentials_and_changes_nothing(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    headers: dict[str, str],
    code: str,
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    for method, path, body in _routes(campaign["id"], tag["id"]):
        response = await client.request(method, path, json=body, headers=headers)
        assert_problem(response, 401, code)
        assert response.headers["www-authenticate"] == "Bearer"
    assert await table_snapshot(engine, *TABLES) == before


async def test_a_valid_key_authenticates_and_the_scheme_is_case_insensitive(
    client: httpx.AsyncClient, org: Org
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await client.get(
            "/v1/campaigns", headers={"Authorization": f"{scheme} {org.api_key}"}
        )
        assert response.status_code == 200, response.text


async def test_keys_are_random_and_stored_only_as_a_hash(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    engine: AsyncEngine,
) -> None:
    keys = [org.api_key, other_org.api_key]
    assert keys[0] != keys[1]
    for key in keys:
        assert key.startswith("psk_")
        body = key.removeprefix("psk_")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 128
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys ORDER BY id"))).mappings().all()
    assert len(rows) == 2
    for key, row in zip(keys, rows, strict=True):
        assert bytes(row["secret_hash"]) == hashlib.sha256(key.encode()).digest()
        assert key.startswith(row["prefix"]) and len(row["prefix"]) <= 12
        stored = " ".join(str(value) for value in row.values())
        assert key not in stored
        assert key.removeprefix("psk_") not in stored
        assert key.removeprefix("psk_")[8:20] not in stored


async def test_revoked_key_is_refused_while_other_keys_still_work(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    async with unit_of_work(sessionmaker) as session:
        second = await issue_api_key(session, organization_id=org.id, name="ci", scopes=["admin"])
    second_headers = {"Authorization": f"Bearer {second.secret}"}
    campaign = await make_campaign(client, org)
    response = await client.get(f"/v1/campaigns/{campaign['id']}", headers=second_headers)
    assert response.status_code == 200

    async with unit_of_work(sessionmaker) as session:
        await revoke_api_key(session, organization_id=org.id, key_id=second.api_key.id)
    before = await table_snapshot(engine, *TABLES)
    for method, path, body in _routes(campaign["id"], 1):
        response = await client.request(method, path, json=body, headers=second_headers)
        assert_problem(response, 401, "invalid_api_key")
    assert await table_snapshot(engine, *TABLES) == before
    response = await client.get(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    assert response.status_code == 200


async def test_a_key_is_bound_to_its_organization(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    campaign = await make_campaign(client, org)
    response = await client.get("/v1/campaigns", headers=other_org.headers)
    assert response.status_code == 200
    assert response.json()["items"] == []
    response = await client.get(f"/v1/campaigns/{campaign['id']}", headers=other_org.headers)
    assert_problem(response, 404, "campaign_not_found")


async def test_last_used_at_is_recorded(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT last_used_at FROM api_keys"))).scalar() is None
    response = await client.get("/v1/campaigns", headers=org.headers)
    assert response.status_code == 200
    async with engine.connect() as conn:
        used = (await conn.execute(text("SELECT last_used_at FROM api_keys"))).scalar()
    assert used is not None


async def test_public_and_health_routes_need_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    response = await client.get("/s/ZZZZZZZZ")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
