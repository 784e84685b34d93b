"""Tags: ``POST /v1/campaigns/{id}/tags``, ``GET /v1/campaigns/{id}/tags``,
``GET/PATCH /v1/tags/{id}``; codes, short URLs, disabling, tenant isolation."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.scanning import links
from campaigns.services import tags as tag_service
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.http import assert_problem

TABLES = ("organizations", "api_keys", "campaigns", "tags", "scans")
CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{8}$")  # Crockford base32: no I, L, O, U
BASE_URL = "https://go.example.com"
BIGINT_MAX = 2**63 - 1


async def _tag_row(engine: AsyncEngine, tag_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM tags WHERE id = :id"), {"id": tag_id})
        return dict(result.mappings().one())


async def test_create_tag(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    campaign = await make_campaign(client, org)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags",
        json={"kind": "qr", "label": "Window 1"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    tag = response.json()
    assert CODE_RE.fullmatch(tag["code"])
    assert tag["short_url"] == f"{BASE_URL}/s/{tag['code']}"
    assert tag["kind"] == "qr"
    assert tag["campaign_id"] == campaign["id"]
    assert tag["label"] == "Window 1"
    assert tag["status"] == "active"
    assert tag["destination_url"] is None
    assert isinstance(tag["id"], int)
    row = await _tag_row(engine, tag["id"])
    assert (row["organization_id"], row["campaign_id"], row["code"], row["kind"]) == (
        org.id,
        campaign["id"],
        tag["code"],
        "qr",
    )
    assert (row["label"], row["status"]) == ("Window 1", "active")
    got = await client.get(f"/v1/tags/{tag['id']}", headers=org.headers)
    assert got.status_code == 200
    assert got.json() == tag


async def test_create_tag_with_destination_override_and_defaults(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags",
        json={"destination_url": "https://shop.example.com/door"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    tag = response.json()
    assert (tag["kind"], tag["label"]) == ("qr", None)
    assert tag["destination_url"] == "https://shop.example.com/door"
    nfc = await make_tag(client, org, campaign["id"], kind="nfc")
    assert nfc["kind"] == "nfc"


async def test_codes_are_random_unique_and_not_sequential(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    codes = [(await make_tag(client, org, campaign["id"]))["code"] for _ in range(40)]
    assert len(set(codes)) == 40
    assert all(CODE_RE.fullmatch(code) for code in codes)
    assert codes != sorted(codes)
    # Consecutive codes share no long prefix, as a counter's would.
    assert max(len(_common_prefix(a, b)) for a, b in itertools.pairwise(codes)) < 5


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@pytest.fixture
def colliding_codes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make ``new_code`` answer the codes put in the returned list first, then random."""
    queue: list[str] = []

    def fake() -> str:
        return queue.pop(0) if queue else links.new_code()

    monkeypatch.setattr(tag_service, "new_code", fake)
    yield queue


async def test_a_code_collision_draws_again(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    engine: AsyncEngine,
    colliding_codes: list[str],
) -> None:
    campaign = await make_campaign(client, org)
    existing = await make_tag(client, org, campaign["id"])
    theirs = await make_campaign(client, other_org)
    # Codes are unique across organizations: the next two draws collide, the third is free.
    colliding_codes += [existing["code"], existing["code"]]
    tag = await make_tag(client, other_org, theirs["id"], label="second")
    assert tag["code"] != existing["code"]
    assert colliding_codes == []
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM tags"))).scalar()
    assert count == 2
    scan = await client.get(f"/s/{existing['code']}")
    assert scan.status_code == 302
    assert scan.headers["location"].startswith("https://shop.example.com/summer?")


async def test_short_url_resolves_through_the_scan_route(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    path = tag["short_url"].removeprefix(BASE_URL)
    assert (await client.get(path)).status_code == 302


BAD_TAG_BODIES = [
    # An NTAG 424 DNA tag needs its UID (tests/api/test_nfc.py has the rest).
    pytest.param({"kind": "nfc_sun", "label": "x"}, "nfc", id="nfc-sun-without-uid"),
    pytest.param({"kind": "barcode", "label": "x"}, "kind", id="kind-unknown"),
    pytest.param({"kind": "QR", "label": "x"}, "kind", id="kind-upper"),
    pytest.param({"kind": None, "label": "x"}, "kind", id="kind-null"),
    pytest.param({"kind": "qr", "label": ""}, "label", id="label-empty"),
    pytest.param({"kind": "qr", "label": "l" * 201}, "label", id="label-long"),
    pytest.param({"kind": "qr", "label": 5}, "label", id="label-number"),
    pytest.param(
        {"kind": "qr", "destination_url": "javascript:alert(1)"}, "destination_url", id="javascript"
    ),
    pytest.param(
        {"kind": "qr", "destination_url": "data:text/html,x"}, "destination_url", id="data"
    ),
    pytest.param(
        {"kind": "qr", "destination_url": "ftp://x.example.com/"}, "destination_url", id="ftp"
    ),
    pytest.param({"kind": "qr", "destination_url": "/relative"}, "destination_url", id="relative"),
    pytest.param(
        {"kind": "qr", "destination_url": "https://u:p@x.example.com/"},
        "destination_url",
        id="credentials",
    ),
    pytest.param(
        {"kind": "qr", "destination_url": "https://x.example.com/a b"},
        "destination_url",
        id="space",
    ),
    pytest.param(
        {"kind": "qr", "destination_url": "https://x.example.com/\r\nX: y"},
        "destination_url",
        id="crlf",
    ),
    pytest.param({"kind": "qr", "code": "ABCDEFGH"}, "code", id="client-chosen-code"),
    pytest.param({"kind": "qr", "campaign_id": 1}, "campaign_id", id="campaign-id-field"),
    pytest.param({"kind": "qr", "status": "active"}, "status", id="status-on-create"),
]


@pytest.mark.parametrize(("body", "field"), BAD_TAG_BODIES)
async def test_bad_tag_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any], field: str
) -> None:
    campaign = await make_campaign(client, org)
    await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags", json=body, headers=org.headers
    )
    problem = assert_problem(response, 422, "validation_error")
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(
    "campaign_id", ["0", "-3", "424242", str(BIGINT_MAX), "99999999999999999999999"]
)
async def test_tags_of_an_unknown_campaign_are_404(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, campaign_id: str
) -> None:
    await make_tag(client, org, (await make_campaign(client, org))["id"])
    before = await table_snapshot(engine, *TABLES)
    path = f"/v1/campaigns/{campaign_id}/tags"
    response = await client.post(path, json={"kind": "qr", "label": "x"}, headers=org.headers)
    assert_problem(response, 404, "campaign_not_found")
    assert_problem(await client.get(path, headers=org.headers), 404, "campaign_not_found")
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize("tag_id", ["0", "-1", "424242", str(BIGINT_MAX + 1), "9" * 30])
async def test_unknown_tag_is_404(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, tag_id: str
) -> None:
    await make_tag(client, org, (await make_campaign(client, org))["id"])
    before = await table_snapshot(engine, *TABLES)
    assert_problem(
        await client.get(f"/v1/tags/{tag_id}", headers=org.headers), 404, "tag_not_found"
    )
    response = await client.patch(
        f"/v1/tags/{tag_id}", json={"status": "disabled"}, headers=org.headers
    )
    assert_problem(response, 404, "tag_not_found")
    assert await table_snapshot(engine, *TABLES) == before


async def test_tags_of_a_deleted_campaign_are_gone(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert (
        await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    ).status_code == 204
    before = await table_snapshot(engine, *TABLES)
    assert_problem(
        await client.get(f"/v1/tags/{tag['id']}", headers=org.headers), 404, "tag_not_found"
    )
    response = await client.patch(f"/v1/tags/{tag['id']}", json={"label": "x"}, headers=org.headers)
    assert_problem(response, 404, "tag_not_found")
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags", json={"kind": "qr"}, headers=org.headers
    )
    assert_problem(response, 404, "campaign_not_found")
    assert await table_snapshot(engine, *TABLES) == before


async def test_list_tags_is_newest_first_and_paginated(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    other = await make_campaign(client, org, name="Other")
    ids = [(await make_tag(client, org, campaign["id"], label=f"t{i}"))["id"] for i in range(5)]
    await make_tag(client, org, other["id"])
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(
            f"/v1/campaigns/{campaign['id']}/tags", params=params, headers=org.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["limit"] == 2
        for item in page["items"]:
            assert item["short_url"] == f"{BASE_URL}/s/{item['code']}"
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/tags", params={"cursor": "@@"}, headers=org.headers
    )
    assert_problem(response, 422, "invalid_cursor")


async def test_patch_disables_and_reenables_a_tag(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert (await client.get(f"/s/{tag['code']}")).status_code == 302

    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"status": "disabled"}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "disabled"
    assert {k: v for k, v in body.items() if k != "status"} == {
        k: v for k, v in tag.items() if k != "status"
    }
    assert (await _tag_row(engine, tag["id"]))["status"] == "disabled"
    scan = await client.get(f"/s/{tag['code']}")
    assert scan.status_code == 404
    assert scan.headers["content-type"].startswith("text/html")
    assert "location" not in scan.headers

    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"status": "active"}, headers=org.headers
    )
    assert response.json()["status"] == "active"
    assert (await client.get(f"/s/{tag['code']}")).status_code == 302
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM scans"))).scalar()
    assert count == 2  # the scan of the disabled tag was not recorded


async def test_patch_relabels_and_repoints_a_tag(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.patch(
        f"/v1/tags/{tag['id']}",
        json={"label": "Door", "destination_url": "https://shop.example.com/door"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["label"], response.json()["destination_url"]) == (
        "Door",
        "https://shop.example.com/door",
    )
    assert response.json()["code"] == tag["code"]  # printed codes never change
    location = (await client.get(f"/s/{tag['code']}")).headers["location"]
    assert location.startswith("https://shop.example.com/door?")
    assert "utm_content=Door" in location

    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"destination_url": None}, headers=org.headers
    )
    assert response.json()["destination_url"] is None
    location = (await client.get(f"/s/{tag['code']}")).headers["location"]
    assert location.startswith("https://shop.example.com/summer?")


async def test_tag_status_cannot_be_removed(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"status": None}, headers=org.headers
    )
    assert_problem(response, 422, "status_required")
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(
    "patch",
    [
        {"status": "deleted"},
        {"status": "DISABLED"},
        {"label": ""},
        {"destination_url": "javascript:alert(1)"},
        {"destination_url": "https://x.example.com/a b"},
        {"code": "ABCDEFGH"},
        {"kind": "nfc"},
        {"campaign_id": 2},
    ],
)
async def test_bad_tag_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, patch: dict[str, Any]
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    response = await client.patch(f"/v1/tags/{tag['id']}", json=patch, headers=org.headers)
    assert_problem(response, 422, "validation_error")
    assert await table_snapshot(engine, *TABLES) == before
    assert (await client.get(f"/s/{tag['code']}")).status_code == 302


async def test_another_organizations_tags_are_invisible(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    theirs = await make_campaign(client, other_org, name="Theirs")
    their_tag = await make_tag(client, other_org, theirs["id"], label="theirs")
    mine = await make_campaign(client, org)
    await make_tag(client, org, mine["id"])
    before = await table_snapshot(engine, *TABLES)

    response = await client.post(
        f"/v1/campaigns/{theirs['id']}/tags",
        json={"kind": "qr", "label": "x"},
        headers=org.headers,
    )
    assert_problem(response, 404, "campaign_not_found")
    response = await client.get(f"/v1/campaigns/{theirs['id']}/tags", headers=org.headers)
    assert_problem(response, 404, "campaign_not_found")
    response = await client.get(f"/v1/tags/{their_tag['id']}", headers=org.headers)
    assert_problem(response, 404, "tag_not_found")
    for patch in (
        {"status": "disabled"},
        {"destination_url": "https://evil.example.com/"},
        {"label": "pwned"},
    ):
        response = await client.patch(
            f"/v1/tags/{their_tag['id']}", json=patch, headers=org.headers
        )
        assert_problem(response, 404, "tag_not_found")

    assert await table_snapshot(engine, *TABLES) == before
    scan = await client.get(f"/s/{their_tag['code']}")
    assert scan.status_code == 302
    assert scan.headers["location"].startswith("https://shop.example.com/summer?")
    assert (
        await client.get(f"/v1/tags/{their_tag['id']}", headers=other_org.headers)
    ).json() == their_tag
