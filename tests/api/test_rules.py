"""Redirect rules: ``POST/GET /v1/campaigns/{id}/rules``, ``PATCH/DELETE /v1/rules/{id}``
(their effect on scans is tested in tests/api/test_scan_geo.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, table_snapshot

BE = {
    "priority": 10,
    "when": {"countries": ["be"]},
    "destination_url": "https://shop.example.com/be",
}
SPLIT = {
    "split": [
        {"name": "a", "destination_url": "https://shop.example.com/a", "weight": 70},
        {"name": "b", "destination_url": "https://shop.example.com/b", "weight": 30},
    ]
}


def without_times(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k not in ("created_at", "updated_at")}


async def test_create_list_update_delete(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    url = f"/v1/campaigns/{campaign['id']}/rules"
    created = await client.post(url, json=BE, headers=org.headers)
    assert created.status_code == 201, created.text
    be = created.json()
    empty = {
        "countries": None,
        "location_ids": None,
        "os": None,
        "device_types": None,
        "languages": None,
    }
    assert without_times(be) == {
        "id": be["id"],
        "campaign_id": campaign["id"],
        "priority": 10,
        "when": {**empty, "countries": ["BE"]},
        "destination_url": "https://shop.example.com/be",
        "split": None,
    }
    split = (await client.post(url, json={**SPLIT, "priority": 5}, headers=org.headers)).json()
    assert split["split"][0] == {
        "name": "a",
        "destination_url": "https://shop.example.com/a",
        "weight": 70,
    }
    assert split["when"] == empty  # every scan

    listed = (await client.get(url, headers=org.headers)).json()["items"]
    assert [rule["id"] for rule in listed] == [split["id"], be["id"]]  # priority 5, then 10

    patched = await client.patch(
        f"/v1/rules/{be['id']}",
        json={"priority": 1, "destination_url": "https://shop.example.com/belgique"},
        headers=org.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["priority"], patched.json()["destination_url"]) == (
        1,
        "https://shop.example.com/belgique",
    )
    to_split = await client.patch(f"/v1/rules/{be['id']}", json=SPLIT, headers=org.headers)
    assert (to_split.json()["destination_url"], len(to_split.json()["split"])) == (None, 2)

    assert (await client.delete(f"/v1/rules/{be['id']}", headers=org.headers)).status_code == 204
    gone = await client.delete(f"/v1/rules/{be['id']}", headers=org.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, "rule_not_found")
    assert [r["id"] for r in (await client.get(url, headers=org.headers)).json()["items"]] == [
        split["id"]
    ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**BE, **SPLIT}, 422, "validation_error"),  # both targets
        ({"priority": 1}, 422, "validation_error"),  # no target
        ({"split": SPLIT["split"][:1]}, 422, "validation_error"),  # one variant
        ({"split": [SPLIT["split"][0], SPLIT["split"][0]]}, 422, "validation_error"),
        ({**BE, "when": {"countries": ["XX"]}}, 422, "validation_error"),
        ({**BE, "when": {"device_types": ["phone"]}}, 422, "validation_error"),
        ({**BE, "when": {"planets": ["Mars"]}}, 422, "validation_error"),
        ({**BE, "destination_url": "https://go.example.com/s/ABCDEFGH"}, 422, "redirect_loop"),
        (
            {
                "split": [
                    SPLIT["split"][0],
                    {**SPLIT["split"][1], "destination_url": "https://go.example.com/x"},
                ]
            },
            422,
            "redirect_loop",
        ),
        ({**BE, "when": {"location_ids": [999999]}}, 404, "location_not_found"),
        # Past bigint: nobody's location (PostgreSQL would refuse the comparison).
        ({**BE, "when": {"location_ids": [2**63]}}, 404, "location_not_found"),
    ],
)
async def test_bad_rules_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, "redirect_rules")
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules", json=body, headers=org.headers
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await table_snapshot(engine, "redirect_rules") == before


async def test_bad_updates_and_other_tenants(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    rule = (
        await client.post(f"/v1/campaigns/{campaign['id']}/rules", json=BE, headers=org.headers)
    ).json()
    before = await table_snapshot(engine, "redirect_rules")
    for body, code in (
        ({"priority": None}, "validation_error"),
        ({"destination_url": None}, "validation_error"),
        ({**BE, **SPLIT}, "validation_error"),
        ({"destination_url": "https://go.example.com/"}, "redirect_loop"),
    ):
        response = await client.patch(f"/v1/rules/{rule['id']}", json=body, headers=org.headers)
        assert (response.status_code, response.json()["code"]) == (422, code), body
    for method in ("PATCH", "DELETE"):
        response = await client.request(
            method, f"/v1/rules/{rule['id']}", json={"priority": 1}, headers=other_org.headers
        )
        assert (response.status_code, response.json()["code"]) == (404, "rule_not_found")
    for method, body in (("GET", None), ("POST", BE)):
        response = await client.request(
            method, f"/v1/campaigns/{campaign['id']}/rules", json=body, headers=other_org.headers
        )
        assert (response.status_code, response.json()["code"]) == (404, "campaign_not_found")
    # Another organization's store cannot be a condition.
    theirs = await client.post(
        "/v1/locations",
        json={"name": "Theirs", "point": {"type": "Point", "coordinates": [2.0, 48.0]}},
        headers=other_org.headers,
    )
    response = await client.patch(
        f"/v1/rules/{rule['id']}",
        json={"when": {"location_ids": [theirs.json()["id"]]}},
        headers=org.headers,
    )
    assert (response.status_code, response.json()["code"]) == (404, "location_not_found")
    assert await table_snapshot(engine, "redirect_rules") == before


async def test_split_names_default_to_letters_and_are_stored_as_the_variant(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    url = f"/v1/campaigns/{campaign['id']}/rules"
    body = {
        "split": [
            {"destination_url": "https://shop.example.com/a", "weight": 70},
            {"destination_url": "https://shop.example.com/b", "weight": 30},
        ]
    }
    created = await client.post(url, json=body, headers=org.headers)
    assert created.status_code == 201, created.text
    assert [arm["name"] for arm in created.json()["split"]] == ["A", "B"]
    duplicate = {
        "split": [
            {"name": "x", "destination_url": "https://shop.example.com/a", "weight": 1},
            {"name": "x", "destination_url": "https://shop.example.com/b", "weight": 1},
        ]
    }
    refused = await client.post(url, json=duplicate, headers=org.headers)
    assert refused.status_code == 422
    assert refused.json()["code"] == "validation_error"


async def test_the_issue_example_round_trips_field_by_field(
    client: httpx.AsyncClient, org: Org
) -> None:
    # The body of issue 7 ("Geo-targeted redirects"), every condition given, then the
    # split form with arms named, unnamed (A, B by position) and mixed.
    campaign = await make_campaign(client, org)
    store = await client.post(
        "/v1/locations",
        json={"name": "Rivoli", "point": {"type": "Point", "coordinates": [2.34, 48.86]}},
        headers=org.headers,
    )
    when = {
        "countries": ["FR"],
        "location_ids": [store.json()["id"]],
        "os": ["iOS"],
        "device_types": ["mobile"],
        "languages": ["fr"],
    }
    url = f"/v1/campaigns/{campaign['id']}/rules"
    body = {"priority": 10, "when": when, "destination_url": "https://shop.example.com/fr"}
    created = await client.post(url, json=body, headers=org.headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert set(rule) == {
        "id",
        "campaign_id",
        "priority",
        "when",
        "destination_url",
        "split",
        "created_at",
        "updated_at",
    }
    assert (rule["priority"], rule["when"], rule["destination_url"], rule["split"]) == (
        10,
        when,
        "https://shop.example.com/fr",
        None,
    )
    arms = [
        {"weight": 70, "destination_url": "https://shop.example.com/a"},
        {"weight": 20, "destination_url": "https://shop.example.com/b"},
        {"name": "control", "weight": 10, "destination_url": "https://shop.example.com/c"},
    ]
    split = await client.post(url, json={"priority": 20, "split": arms}, headers=org.headers)
    assert split.status_code == 201, split.text
    assert split.json()["split"] == [
        {"name": "A", "weight": 70, "destination_url": "https://shop.example.com/a"},
        {"name": "B", "weight": 20, "destination_url": "https://shop.example.com/b"},
        {"name": "control", "weight": 10, "destination_url": "https://shop.example.com/c"},
    ]
    assert split.json()["destination_url"] is None
    patched = await client.patch(
        f"/v1/rules/{split.json()['id']}", json={"split": arms[:2]}, headers=org.headers
    )
    assert [arm["name"] for arm in patched.json()["split"]] == ["A", "B"]
