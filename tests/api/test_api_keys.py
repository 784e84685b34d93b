"""``/v1/api-keys`` and scopes, ``/v1/audit``."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, table_snapshot

KEYS = ("api_keys", "audit_events")


async def _create(client: httpx.AsyncClient, org: Org, *scopes: str, name: str = "k") -> dict:  # type: ignore[type-arg]
    response = await client.post(
        "/v1/api-keys", json={"name": name, "scopes": list(scopes)}, headers=org.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_list_and_revoke(client: httpx.AsyncClient, org: Org) -> None:
    created = await _create(client, org, "reports:read", "campaigns:read", name="dashboard")
    assert created["scopes"] == ["campaigns:read", "reports:read"]  # canonical order
    assert created["secret"].startswith("psk_") and len(created["secret"]) == 47
    assert created["prefix"] == created["secret"][:10]
    assert created["last_used_at"] is None and created["revoked_at"] is None

    assert (
        await client.get("/v1/campaigns", headers=_bearer(created["secret"]))
    ).status_code == 200
    listing = await client.get("/v1/api-keys", headers=org.headers)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert [item["name"] for item in items] == ["default", "dashboard"]
    assert items[0]["scopes"] == ["admin"]
    assert set(items[1]) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert items[1]["last_used_at"] is not None
    assert created["secret"] not in listing.text and "secret" not in listing.text

    revoked = await client.delete(f"/v1/api-keys/{created['id']}", headers=org.headers)
    assert revoked.status_code == 204
    refused = await client.get("/v1/campaigns", headers=_bearer(created["secret"]))
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_api_key"
    again = await client.delete(f"/v1/api-keys/{created['id']}", headers=org.headers)
    assert again.status_code == 204
    items = (await client.get("/v1/api-keys", headers=org.headers)).json()["items"]
    assert items[1]["revoked_at"] is not None


async def test_a_key_needs_known_scopes(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    before = await table_snapshot(engine, *KEYS)
    for scopes in ([], ["everything"], ["admin", "root"]):
        response = await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": scopes}, headers=org.headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"][0]["loc"][:2] == ["body", "scopes"]
    missing = await client.post("/v1/api-keys", json={"name": "k"}, headers=org.headers)
    assert missing.status_code == 422
    assert await table_snapshot(engine, *KEYS) == before


async def test_conversions_only_key(client: httpx.AsyncClient, org: Org) -> None:
    shop = _bearer((await _create(client, org, "conversions:write"))["secret"])
    body = {"click_id": "c1", "event": "purchase", "external_id": "o-1"}
    assert (await client.post("/v1/conversions", json=body, headers=shop)).status_code == 201
    refused = await client.get("/v1/campaigns", headers=shop)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == {
        "type": "urn:passerelle:problem:insufficient_scope",
        "title": "Forbidden",
        "status": 403,
        "detail": "This API key lacks the `campaigns:read` scope",
        "code": "insufficient_scope",
        "required_scope": "campaigns:read",
    }
    keys = await client.get("/v1/api-keys", headers=shop)
    assert keys.status_code == 403 and keys.json()["required_scope"] == "admin"


async def test_keys_from_before_scopes_keep_every_scope(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    # A key inserted without scopes, as code from before them did: an admin key.
    secret = "psk_legacy-" + "x" * 36
    from campaigns.services.organizations import hash_secret

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_keys (organization_id, name, prefix, secret_hash) "
                "VALUES (:org, 'legacy', 'psk_legacy', :hash)"
            ),
            {"org": org.id, "hash": hash_secret(secret)},
        )
    for path in ("/v1/campaigns", "/v1/api-keys", "/v1/audit", "/v1/conversions"):
        assert (await client.get(path, headers=_bearer(secret))).status_code == 200, path


async def test_another_organizations_key_cannot_be_revoked(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    theirs = await _create(client, other_org, "reports:read")
    before = await table_snapshot(engine, *KEYS)
    response = await client.delete(f"/v1/api-keys/{theirs['id']}", headers=org.headers)
    assert response.status_code == 404 and response.json()["code"] == "api_key_not_found"
    assert await table_snapshot(engine, *KEYS) == before
    names = [
        k["name"] for k in (await client.get("/v1/api-keys", headers=org.headers)).json()["items"]
    ]
    assert names == ["default"]


async def test_audit_trail(client: httpx.AsyncClient, org: Org, other_org: Org) -> None:
    writer = await _create(client, org, "campaigns:write", "campaigns:read", name="ci")
    campaign = await make_campaign(client, org)
    patched = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"name": "Renamed"},
        headers=_bearer(writer["secret"]),
    )
    assert patched.status_code == 200
    refused = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"name": ""}, headers=_bearer(writer["secret"])
    )
    assert refused.status_code == 422  # a failed write leaves no event
    deleted = await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    assert deleted.status_code == 204
    await client.get("/v1/campaigns", headers=org.headers)  # reads leave none either

    page = await client.get("/v1/audit", headers=org.headers)
    assert page.status_code == 200, page.text
    events = page.json()["items"]
    default_prefix = org.api_key[:10]
    assert [
        (e["action"], e["resource_type"], e["resource_id"], e["rows"], e["actor_label"])
        for e in events
    ] == [
        ("campaigns_delete", "campaigns", campaign["id"], 1, default_prefix),
        ("campaigns_update", "campaigns", campaign["id"], 1, writer["prefix"]),
        ("campaigns_create", "campaigns", campaign["id"], 1, default_prefix),
        ("api_keys_create", "api_keys", writer["id"], 1, default_prefix),
    ]
    assert events[1]["actor_type"] == "api_key" and events[1]["actor_id"] == writer["id"]

    only = await client.get("/v1/audit", params={"action": "campaigns_update"}, headers=org.headers)
    assert [e["id"] for e in only.json()["items"]] == [events[1]["id"]]
    first = await client.get("/v1/audit", params={"limit": 3}, headers=org.headers)
    assert [e["id"] for e in first.json()["items"]] == [e["id"] for e in events[:3]]
    rest = await client.get(
        "/v1/audit", params={"limit": 3, "cursor": first.json()["next_cursor"]}, headers=org.headers
    )
    assert [e["id"] for e in rest.json()["items"]] == [events[3]["id"]]
    assert rest.json()["next_cursor"] is None
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    later = await client.get("/v1/audit", params={"from": future}, headers=org.headers)
    assert later.json()["items"] == []
    earlier = await client.get("/v1/audit", params={"to": future}, headers=org.headers)
    assert len(earlier.json()["items"]) == 4
    bad = await client.get("/v1/audit", params={"cursor": "nonsense"}, headers=org.headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    window = await client.get(
        "/v1/audit", params={"from": future, "to": future}, headers=org.headers
    )
    assert window.status_code == 422 and window.json()["code"] == "invalid_window"
    # Another organization sees none of it.
    theirs = await client.get("/v1/audit", headers=other_org.headers)
    assert theirs.json()["items"] == []


async def test_bulk_writes_are_audited_with_their_row_count(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    for name in ("A", "B"):
        r = await client.post(
            "/v1/locations",
            json={"name": name, "point": {"type": "Point", "coordinates": [2.3, 48.8]}},
            headers=org.headers,
        )
        assert r.status_code == 201
    bulk = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags/bulk",
        json={"location_ids": "all", "labels": ["door", "till", "window"]},
        headers=org.headers,
    )
    assert bulk.status_code == 201, bulk.text
    imported = await client.post(
        "/v1/locations/import",
        files={"file": ("s.csv", b"name,lat,lon\nC,48.8,2.3\nD,48.9,2.4\n", "text/csv")},
        headers=org.headers,
    )
    assert imported.status_code == 200, imported.text
    events = (await client.get("/v1/audit", params={"limit": 2}, headers=org.headers)).json()
    assert [
        (e["action"], e["resource_type"], e["resource_id"], e["rows"]) for e in events["items"]
    ] == [
        ("locations_import", "locations", None, 2),
        ("tags_create_bulk", "tags", None, 6),
    ]
