"""``allowed_destination_hosts``: every destination write checked against the
organization's hosts, what no longer complies when the list shrinks, and ``/s/{code}``
deaf to redirect-like query parameters."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.services.destinations import host_allowed, normalise_host_pattern
from tests.conftest import Org, make_campaign, make_tag, table_snapshot

TABLES = ("campaigns", "tags", "redirect_rules", "audit_events")


async def _allow(client: httpx.AsyncClient, org: Org, hosts: list[str] | None) -> dict:  # type: ignore[type-arg]
    response = await client.patch(
        "/v1/organization", json={"allowed_destination_hosts": hosts}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_host_patterns() -> None:
    assert normalise_host_pattern("Shop.Example.COM.") == "shop.example.com"
    assert normalise_host_pattern("*.Bücher.example") == "*.xn--bcher-kva.example"
    for bad in ("https://shop.example.com", "shop.example.com/p", "*.com", "10.0.0.1", "", "a*b"):
        with pytest.raises(ValueError):
            normalise_host_pattern(bad)
    patterns = ["shop.example.com", "*.example.fr"]
    assert host_allowed("https://shop.example.com:8443/x", patterns)
    assert host_allowed("https://a.b.example.fr/", patterns)
    assert host_allowed("https://BÜCHER.example.fr/", patterns)
    assert not host_allowed("https://example.fr/", patterns)  # the apex is not a subdomain
    assert not host_allowed("https://evilexample.fr/", patterns)
    assert not host_allowed("https://shop.example.com.evil.net/", patterns)
    assert not host_allowed("https://evil.net/?u=https://shop.example.com", patterns)
    assert host_allowed("https://anything.net/", [])


async def test_patch_normalises_and_clears(client: httpx.AsyncClient, org: Org) -> None:
    body = await _allow(client, org, ["Shop.Example.com", "*.example.fr", "shop.example.com"])
    assert body["allowed_destination_hosts"] == ["shop.example.com", "*.example.fr"]
    assert body["noncompliant_destinations"] == []
    got = (await client.get("/v1/organization", headers=org.headers)).json()
    assert got["allowed_destination_hosts"] == ["shop.example.com", "*.example.fr"]
    assert "noncompliant_destinations" not in got
    assert (await _allow(client, org, []))["allowed_destination_hosts"] is None
    assert (await _allow(client, org, None))["allowed_destination_hosts"] is None
    bad = await client.patch(
        "/v1/organization",
        json={"allowed_destination_hosts": ["https://shop.example.com/"]},
        headers=org.headers,
    )
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert bad.json()["errors"][0]["loc"] == ["body", "allowed_destination_hosts", 0]


async def test_every_destination_write_is_checked(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)  # https://shop.example.com/summer
    tag = await make_tag(client, org, campaign["id"])
    await _allow(client, org, ["shop.example.com", "*.example.fr"])
    before = await table_snapshot(engine, *TABLES)
    evil = "https://evil.example.net/x"
    attempts = [
        ("post", "/v1/campaigns", {"name": "x", "destination_url": evil}, ["destination_url"]),
        (
            "post",
            "/v1/campaigns",
            {"name": "x", "destination_url": "https://shop.example.com/", "fallback_url": evil},
            ["fallback_url"],
        ),
        (
            "patch",
            f"/v1/campaigns/{campaign['id']}",
            {"destination_url": evil},
            ["destination_url"],
        ),
        ("patch", f"/v1/campaigns/{campaign['id']}", {"fallback_url": evil}, ["fallback_url"]),
        (
            "post",
            f"/v1/campaigns/{campaign['id']}/tags",
            {"kind": "qr", "label": "x", "destination_url": evil},
            ["destination_url"],
        ),
        ("patch", f"/v1/tags/{tag['id']}", {"destination_url": evil}, ["destination_url"]),
        (
            "post",
            f"/v1/campaigns/{campaign['id']}/rules",
            {"priority": 1, "when": {}, "destination_url": evil},
            ["destination_url"],
        ),
        (
            "post",
            f"/v1/campaigns/{campaign['id']}/rules",
            {
                "priority": 1,
                "when": {},
                "split": [
                    {"name": "a", "destination_url": "https://a.example.fr/", "weight": 1},
                    {"name": "b", "destination_url": evil, "weight": 1},
                ],
            },
            ["split", "1", "destination_url"],
        ),
    ]
    for method, path, body, loc in attempts:
        response = await client.request(method, path, json=body, headers=org.headers)
        assert response.status_code == 422, (path, body, response.text)
        problem = response.json()
        assert problem["code"] == "destination_not_allowed", problem
        assert [error["loc"] for error in problem["errors"]] == [["body", *loc]]
    assert await table_snapshot(engine, *TABLES) == before
    # Allowed hosts still go through.
    ok = await client.patch(
        f"/v1/tags/{tag['id']}",
        json={"destination_url": "https://www.example.fr/t"},
        headers=org.headers,
    )
    assert ok.status_code == 200, ok.text


async def test_a_shrinking_list_reports_what_no_longer_complies(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    campaign = await make_campaign(client, org, fallback_url="https://old.example.net/fallback")
    tag = await make_tag(client, org, campaign["id"], destination_url="https://old.example.net/t")
    rule = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules",
        json={
            "priority": 1,
            "when": {},
            "split": [
                {"name": "a", "destination_url": "https://shop.example.com/a", "weight": 1},
                {"name": "b", "destination_url": "https://old.example.net/b", "weight": 1},
            ],
        },
        headers=org.headers,
    )
    assert rule.status_code == 201, rule.text
    deleted = await make_campaign(client, org, destination_url="https://old.example.net/gone")
    await client.delete(f"/v1/campaigns/{deleted['id']}", headers=org.headers)
    await make_campaign(client, other_org, destination_url="https://old.example.net/theirs")

    body = await _allow(client, org, ["shop.example.com"])
    assert body["noncompliant_destinations"] == [
        {
            "resource_type": "campaign",
            "id": campaign["id"],
            "field": "fallback_url",
            "url": "https://old.example.net/fallback",
        },
        {
            "resource_type": "tag",
            "id": tag["id"],
            "field": "destination_url",
            "url": "https://old.example.net/t",
        },
        {
            "resource_type": "rule",
            "id": rule.json()["id"],
            "field": "split.1.destination_url",
            "url": "https://old.example.net/b",
        },
    ]
    # A PATCH that leaves the list alone reports nothing.
    renamed = await client.patch("/v1/organization", json={"name": "Acme 2"}, headers=org.headers)
    assert renamed.json()["noncompliant_destinations"] == []


@pytest.mark.parametrize(
    "parameter",
    ["url", "redirect", "redirect_uri", "next", "destination", "dest", "to", "return", "r", "u"],
)
async def test_no_query_parameter_changes_where_a_scan_goes(
    client: httpx.AsyncClient, org: Org, parameter: str
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    for value in ("https://evil.example.net/", "//evil.example.net/", "evil.example.net"):
        response = await client.get(f"/s/{tag['code']}", params={parameter: value})
        assert response.status_code == 302
        location = urlsplit(response.headers["location"])
        assert (location.scheme, location.netloc, location.path) == (
            "https",
            "shop.example.com",
            "/summer",
        )
        assert "evil" not in response.headers["location"]
