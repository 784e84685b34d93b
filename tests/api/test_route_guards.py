"""Every management route, walked from the app's OpenAPI document: a key without the
route's scope gets 403 ``insufficient_scope`` naming it, a key with only that scope is
let through, and another organization's ids are 404. A new ``/v1`` route fails
:func:`test_every_management_route_is_classified` until it is given a scope here and a
request below (so it cannot ship without a scope or a tenant check being tested)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from campaigns.db import unit_of_work
from campaigns.scopes import ADMIN, SCOPES
from campaigns.services.organizations import issue_api_key
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.artwork import png_logo
from tests.fixtures.journeys import convert, eur

#: The scope each management operation needs: the contract of issue 12.
REQUIRED_SCOPE: dict[str, str] = {
    "campaigns_create": "campaigns:write",
    "campaigns_list": "campaigns:read",
    "campaigns_get": "campaigns:read",
    "campaigns_update": "campaigns:write",
    "campaigns_delete": "campaigns:write",
    "tags_create": "campaigns:write",
    "tags_create_bulk": "campaigns:write",
    "tags_list": "campaigns:read",
    "tags_get": "campaigns:read",
    "tags_update": "campaigns:write",
    "tags_get_qr": "campaigns:read",
    "tags_get_ndef": "campaigns:read",
    "tags_get_sdm": "campaigns:read",
    "locations_create": "campaigns:write",
    "locations_list": "campaigns:read",
    "locations_import": "campaigns:write",
    "locations_get": "campaigns:read",
    "locations_update": "campaigns:write",
    "locations_delete": "campaigns:write",
    "rules_create": "campaigns:write",
    "rules_list": "campaigns:read",
    "rules_update": "campaigns:write",
    "rules_delete": "campaigns:write",
    "printing_get_print_zip": "campaigns:read",
    "printing_get_sheets": "campaigns:read",
    "conversions_create": "conversions:write",
    "conversions_create_refund": "conversions:write",
    "conversions_list": "reports:read",
    "stats_get": "reports:read",
    "stats_get_csv": "reports:read",
    "stats_scans_per_location": "reports:read",
    "stats_heatmap": "reports:read",
    "scans_list": "reports:read",
    "attribution_get": "reports:read",
    "attribution_get_csv": "reports:read",
    "organization_get": "admin",
    "organization_update": "admin",
    "printing_put_logo": "admin",
    "api_keys_create": "admin",
    "api_keys_list": "admin",
    "api_keys_revoke": "admin",
    "audit_list": "admin",
    "events_stream": "reports:read",
    "webhooks_create": "admin",
    "webhooks_list": "admin",
    "webhooks_delete": "admin",
    "webhooks_list_deliveries": "admin",
    "webhooks_retry_delivery": "admin",
    "webhooks_ping": "admin",
    "privacy_get_scans": "admin",
    "privacy_erase_scans": "admin",
}

_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass(frozen=True)
class Call:
    """A request for one operation: path parameters come from the organization's ids."""

    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    #: Path ids replacing the tenant's when the call is allowed (an event stream that
    #: opened would never end: a campaign that does not exist answers past the scope).
    allowed_ids: dict[str, int] = field(default_factory=dict)


#: One well-formed request per operation (bodies valid, so a 404 comes from the service).
CALLS: dict[str, Call] = {
    "campaigns_create": Call(json={"name": "n", "destination_url": "https://shop.example.com/"}),
    "campaigns_update": Call(json={"name": "renamed"}),
    "tags_create": Call(json={"kind": "qr", "label": "guard"}),
    "tags_create_bulk": Call(json={"location_ids": "all", "labels": ["bulk-guard"]}),
    "tags_update": Call(json={"label": "relabelled"}),
    "locations_create": Call(
        json={"name": "Store", "point": {"type": "Point", "coordinates": [2.35, 48.85]}}
    ),
    "locations_import": Call(
        files={"file": ("stores.csv", b"name,lat,lon\nA,48.85,2.35\n", "text/csv")}
    ),
    "locations_update": Call(json={"name": "Renamed store"}),
    "rules_create": Call(
        json={"priority": 1, "when": {}, "destination_url": "https://shop.example.com/r"}
    ),
    "rules_update": Call(json={"priority": 2}),
    "conversions_create": Call(
        json={"click_id": "no-such-click", "event": "purchase", "external_id": "guard-1"}
    ),
    "conversions_create_refund": Call(json={"amount_minor": 1, "external_id": "refund-guard"}),
    "organization_update": Call(json={"name": "Renamed org"}),
    "printing_put_logo": Call(content=_PNG, headers={"content-type": "image/png"}),
    "api_keys_create": Call(json={"name": "guard", "scopes": ["reports:read"]}),
    "printing_get_sheets": Call(params={"labels": "a"}),
    "events_stream": Call(allowed_ids={"campaign_id": 0}),
    "webhooks_create": Call(
        json={"url": "https://hooks.example.com/guard", "events": ["scan.created"]}
    ),
    "privacy_get_scans": Call(params={"click_id": "no-such-click"}),
    "privacy_erase_scans": Call(params={"click_id": "no-such-click"}),
}

#: Operations that take no id of a resource: another organization's data cannot be named
#: (their isolation is what they list or change, tested with their resource).
NO_FOREIGN_ID = {
    "campaigns_create",
    "campaigns_list",
    "locations_create",
    "locations_list",
    "locations_import",
    "conversions_create",
    "conversions_list",
    "organization_get",
    "organization_update",
    "printing_put_logo",
    "api_keys_create",
    "api_keys_list",
    "audit_list",
    "webhooks_create",
    "webhooks_list",
    "privacy_get_scans",
    "privacy_erase_scans",
}


def management_operations(app: FastAPI) -> dict[str, tuple[str, str]]:
    """``{operation id: (method, path)}`` of every ``/v1`` route in the app."""
    found: dict[str, tuple[str, str]] = {}
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in operations.items():
                found[operation["operationId"]] = (method.upper(), path)
    return found


def test_every_management_route_is_classified(app: FastAPI) -> None:
    assert set(management_operations(app)) == set(REQUIRED_SCOPE)
    assert set(REQUIRED_SCOPE.values()) <= set(SCOPES)


@dataclass
class Tenant:
    """An organization with one of each resource, and its ids by path parameter name."""

    org: Org
    ids: dict[str, int]


async def _tenant(
    client: httpx.AsyncClient, org: Org, sessionmaker: async_sessionmaker[AsyncSession]
) -> Tenant:
    campaign = await make_campaign(client, org, name="Secret campaign")
    tag = await make_tag(client, org, campaign["id"])
    location = await client.post(
        "/v1/locations",
        json={"name": "Secret store", "point": {"type": "Point", "coordinates": [2.3, 48.8]}},
        headers=org.headers,
    )
    rule = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules",
        json={"priority": 5, "when": {}, "destination_url": "https://shop.example.com/x"},
        headers=org.headers,
    )
    assert location.status_code == 201 and rule.status_code == 201, (location.text, rule.text)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    conversion = await convert(client, org, "a-click", f"order-{org.id}", at, eur(1000))
    async with unit_of_work(sessionmaker) as session:
        spare = await issue_api_key(session, organization_id=org.id, name="spare", scopes=[ADMIN])
    webhook = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/secret", "events": ["scan.created"]},
        headers=org.headers,
    )
    assert webhook.status_code == 201, webhook.text
    webhook_id = webhook.json()["id"]
    ping = await client.post(f"/v1/webhooks/{webhook_id}/ping", headers=org.headers)
    assert ping.status_code < 300, ping.text
    deliveries = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=org.headers)
    delivery_id = deliveries.json()["items"][0]["id"]
    return Tenant(
        org=org,
        ids={
            "campaign_id": campaign["id"],
            "tag_id": tag["id"],
            "location_id": location.json()["id"],
            "rule_id": rule.json()["id"],
            "conversion_id": conversion["id"],
            "key_id": spare.api_key.id,
            "webhook_id": webhook_id,
            "delivery_id": delivery_id,
        },
    )


async def _send(
    client: httpx.AsyncClient, method: str, path: str, ids: dict[str, int], call: Call, key: str
) -> httpx.Response:
    url = path.format(**{name: ids[name] for name in ids if "{" + name + "}" in path})
    headers = {"Authorization": f"Bearer {key}", **call.headers}
    return await client.request(
        method,
        url,
        json=call.json,
        params=call.params,
        content=call.content,
        files=call.files,
        headers=headers,
    )


async def _key(sessionmaker: async_sessionmaker[AsyncSession], org: Org, scopes: list[str]) -> str:
    async with unit_of_work(sessionmaker) as session:
        issued = await issue_api_key(session, organization_id=org.id, name="t", scopes=scopes)
    return issued.secret


@pytest.mark.parametrize("operation", sorted(REQUIRED_SCOPE))
async def test_route_needs_its_scope_and_only_its_scope(
    operation: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    method, path = management_operations(app)[operation]
    scope = REQUIRED_SCOPE[operation]
    tenant = await _tenant(client, org, sessionmaker)
    call = CALLS.get(operation, Call())
    # Every other scope but admin: still refused, with the missing one named.
    others = [s for s in SCOPES if s not in (scope, ADMIN)]
    refused = await _send(
        client, method, path, tenant.ids, call, await _key(sessionmaker, org, others)
    )
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "insufficient_scope"
    assert refused.json()["required_scope"] == scope
    # That scope alone is enough.
    allowed = await _send(
        client,
        method,
        path,
        {**tenant.ids, **call.allowed_ids},
        call,
        await _key(sessionmaker, org, [scope]),
    )
    assert allowed.status_code < 400 or allowed.json()["code"] != "insufficient_scope"
    assert allowed.status_code < 500, allowed.text


@pytest.mark.parametrize("operation", sorted(set(REQUIRED_SCOPE) - NO_FOREIGN_ID))
async def test_another_organizations_ids_are_404(
    operation: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    method, path = management_operations(app)[operation]
    victim = await _tenant(client, org, sessionmaker)
    response = await _send(
        client, method, path, victim.ids, CALLS.get(operation, Call()), other_org.api_key
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"].endswith("_not_found")
    # Nothing of the victim's leaks into the answer.
    assert "Secret" not in response.text


# --- the audit trail ------------------------------------------------------------------

#: Writes that are business data posted by shop servers, not management: not audited
#: (campaigns/services/audit.py).
NOT_AUDITED = {"conversions_create", "conversions_create_refund"}
#: Every other write of the management API: each must leave an audit event.
AUDITED_WRITES = {
    "api_keys_create",
    "api_keys_revoke",
    "campaigns_create",
    "campaigns_delete",
    "campaigns_update",
    "locations_create",
    "locations_delete",
    "locations_import",
    "locations_update",
    "organization_update",
    "printing_put_logo",
    "privacy_erase_scans",
    "rules_create",
    "rules_delete",
    "rules_update",
    "tags_create",
    "tags_create_bulk",
    "tags_update",
    "webhooks_create",
    "webhooks_delete",
    "webhooks_ping",
    "webhooks_retry_delivery",
}
#: Requests that succeed on the tenant (its conversion's click, never scanned, is a
#: subject the erasure can unlink).
AUDIT_CALLS: dict[str, Call] = {
    "privacy_erase_scans": Call(params={"click_id": "a-click"}),
    "printing_put_logo": Call(
        content=png_logo(64, 64).content, headers={"content-type": "image/png"}
    ),
}


def test_every_management_write_is_audited_or_exempt(app: FastAPI) -> None:
    writes = {
        op
        for op, (method, _) in management_operations(app).items()
        if method in ("POST", "PUT", "PATCH", "DELETE")
    }
    assert writes == AUDITED_WRITES | NOT_AUDITED
    assert not AUDITED_WRITES & NOT_AUDITED


@pytest.mark.parametrize("operation", sorted(AUDITED_WRITES))
async def test_a_management_write_is_audited_with_its_key(
    operation: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    method, path = management_operations(app)[operation]
    tenant = await _tenant(client, org, sessionmaker)
    async with unit_of_work(sessionmaker) as session:
        issued = await issue_api_key(session, organization_id=org.id, name="w", scopes=[ADMIN])
    call = AUDIT_CALLS.get(operation, CALLS.get(operation, Call()))
    response = await _send(client, method, path, tenant.ids, call, issued.secret)
    assert response.status_code < 300, response.text
    audit = await client.get(
        "/v1/audit",
        params={"action": operation},
        headers={"Authorization": f"Bearer {org.api_key}"},
    )
    assert audit.status_code == 200, audit.text
    mine = [e for e in audit.json()["items"] if e["actor_id"] == issued.api_key.id]
    assert mine, f"{operation} left no audit event"
    assert all(e["rows"] >= 1 and e["actor_type"] == "api_key" for e in mine)
