"""``/v1/campaigns``: create, list (cursor pagination), read, update, delete; slugs, URL
validation, tenant isolation, and bad input that changes nothing."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.app import served_app
from campaigns.services import campaigns as campaign_service
from tests.conftest import Org, make_campaign, make_tag, table_snapshot

TABLES = ("organizations", "api_keys", "campaigns", "tags", "scans")
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
BIGINT_MAX = 2**63 - 1


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    extra = {"error_id"} if code == "internal_error" else {"errors"}
    assert PROBLEM_KEYS <= set(body) <= PROBLEM_KEYS | extra
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"] == f"urn:passerelle:problem:{code}"
    if code == "validation_error" and status == 422:
        assert body["errors"], body
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}
    return body


async def _stored(engine: AsyncEngine, campaign_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    text("SELECT * FROM campaigns WHERE id = :id"), {"id": campaign_id}
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


# -- create ----------------------------------------------------------------------------


async def test_create_minimal_campaign(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    response = await client.post(
        "/v1/campaigns",
        json={"name": "Summer windows", "destination_url": "https://shop.example.com/summer"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "Summer windows"
    assert body["slug"] == "summer-windows"
    assert body["destination_url"] == "https://shop.example.com/summer"
    assert body["fallback_url"] is None
    assert body["starts_at"] is None and body["ends_at"] is None
    assert body["cost"] is None
    assert body["archived"] is False
    assert {k: v for k, v in body["utm"].items() if v is not None} == {}
    row = await _stored(engine, body["id"])
    assert row["organization_id"] == org.id
    assert (row["slug"], row["destination_url"], row["utm"]) == (
        "summer-windows",
        "https://shop.example.com/summer",
        {},
    )
    assert row["deleted_at"] is None


async def test_create_full_campaign(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    body = await make_campaign(
        client,
        org,
        name="  Black Friday  ",
        slug="bf-2026",
        destination_url="https://shop.example.com/bf?ref=print#deals",
        fallback_url="http://shop.example.com/over",
        starts_at="2026-11-27T08:00:00+01:00",
        ends_at="2026-11-30T23:59:59Z",
        utm={"source": "flyer", "term": "deals"},
        cost={"amount_minor": 125_000, "currency": "eur"},
    )
    assert body["name"] == "Black Friday"
    assert body["slug"] == "bf-2026"
    assert body["destination_url"] == "https://shop.example.com/bf?ref=print#deals"
    assert body["fallback_url"] == "http://shop.example.com/over"
    assert dt.datetime.fromisoformat(body["starts_at"]) == dt.datetime(
        2026, 11, 27, 7, tzinfo=dt.UTC
    )
    assert body["utm"]["source"] == "flyer" and body["utm"]["term"] == "deals"
    assert body["cost"] == {"amount_minor": 125_000, "currency": "EUR"}
    row = await _stored(engine, body["id"])
    assert (row["cost_amount_minor"], row["cost_currency"]) == (125_000, "EUR")
    assert row["utm"] == {"source": "flyer", "term": "deals"}
    got = await client.get(f"/v1/campaigns/{body['id']}", headers=org.headers)
    assert got.status_code == 200
    assert got.json() == body


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Été 2026 — Vitrines!", "ete-2026-vitrines"),
        ("  Spaces   and___underscores ", "spaces-and-underscores"),
        ("🎉🎉", "campaign"),
        ("Ünïcödé Çafé", "unicode-cafe"),
        # Letters NFKD leaves whole were dropped: "operation-cur-de-ville-uvres".
        ("Opération Cœur de ville — Œuvres", "operation-coeur-de-ville-oeuvres"),
        ("Ærøskøbing Straße", "aeroskobing-strasse"),
        ("x" * 150, "x" * 100),
    ],
)
async def test_slug_is_generated_from_the_name(
    client: httpx.AsyncClient, org: Org, name: str, slug: str
) -> None:
    assert (await make_campaign(client, org, name=name))["slug"] == slug


async def test_generated_slugs_stay_unique(client: httpx.AsyncClient, org: Org) -> None:
    slugs = [(await make_campaign(client, org, name="Summer"))["slug"] for _ in range(4)]
    assert slugs == ["summer", "summer-2", "summer-3", "summer-4"]


async def test_generated_slugs_stay_unique_for_long_names(
    client: httpx.AsyncClient, org: Org
) -> None:
    name = "Very long campaign name " * 8
    slugs = [(await make_campaign(client, org, name=name))["slug"] for _ in range(4)]
    assert len(set(slugs)) == 4
    assert all(len(slug) <= 100 and "--" not in slug for slug in slugs)


async def test_generated_slug_avoids_explicit_ones(client: httpx.AsyncClient, org: Org) -> None:
    await make_campaign(client, org, name="Other", slug="summer")
    assert (await make_campaign(client, org, name="Summer"))["slug"] == "summer-2"


async def test_explicit_slug_clash_is_409_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await make_campaign(client, org, slug="summer")
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/campaigns",
        json={"name": "Again", "slug": "summer", "destination_url": "https://x.example.com/"},
        headers=org.headers,
    )
    assert_problem(response, 409, "slug_taken")
    assert await table_snapshot(engine, *TABLES) == before


async def test_slugs_are_unique_per_organization_only(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    first = await make_campaign(client, org, slug="summer")
    second = await make_campaign(client, other_org, slug="summer")
    assert first["slug"] == second["slug"] == "summer"
    assert (await make_campaign(client, other_org, name="Summer"))["slug"] == "summer-2"


async def test_slug_of_a_deleted_campaign_can_be_reused(
    client: httpx.AsyncClient, org: Org
) -> None:
    old = await make_campaign(client, org, slug="summer")
    assert (
        await client.delete(f"/v1/campaigns/{old['id']}", headers=org.headers)
    ).status_code == 204
    assert (await make_campaign(client, org, slug="summer"))["slug"] == "summer"
    assert (await make_campaign(client, org, name="Summer"))["slug"] == "summer-2"


BAD_URLS = [
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("JaVaScRiPt:alert(document.cookie)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
    pytest.param("ftp://files.example.com/a", id="ftp"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("mailto:someone@example.com", id="mailto"),
    pytest.param("/relative/path", id="relative"),
    pytest.param("relative", id="bare-word"),
    pytest.param("//evil.example.com/x", id="scheme-relative"),
    pytest.param("https://", id="no-host"),
    pytest.param("https:///path", id="empty-host"),
    pytest.param("http:shop.example.com", id="no-slashes"),
    pytest.param("https://user:pass@shop.example.com/", id="credentials"),
    pytest.param("https://user@shop.example.com/", id="username"),
    pytest.param("https://shop.example.com\\@evil.example.com/", id="backslash-userinfo"),
    pytest.param("https://shop.example.com/a b", id="inner-space"),
    pytest.param("https://shop.example.com/?q=a b", id="space-in-query"),
    pytest.param("https://shop.example .com/", id="space-in-host"),
    pytest.param("https://shop.example.com/\x00", id="nul"),
    pytest.param("https://shop.example.com/a\tb", id="tab"),
    pytest.param("https://shop.example.com/a\r\nSet-Cookie: x=1", id="crlf"),
    pytest.param("https://shop.example.com/a\x7fb", id="del"),
    pytest.param("java\tscript:alert(1)", id="tab-in-scheme"),
    pytest.param("https://shop.example.com:99999/", id="bad-port"),
    pytest.param("https://shop.example.com/" + "a" * 2100, id="too-long"),
    pytest.param("", id="empty"),
    pytest.param(42, id="not-a-string"),
]

# Unicode controls and separators that ``_check_url`` in campaigns/schemas.py lets through
# (it only refuses code points below U+0021 and U+007F).
BAD_UNICODE_URLS = [
    pytest.param("https://shop.example.com/a\x85b", id="c1-next-line"),
    pytest.param("https://shop.example.com/a\x9bb", id="c1-csi"),
    pytest.param("https://shop.example.com/a\u2028b", id="line-separator"),
    pytest.param("https://shop.example.com/a\u00a0b", id="no-break-space"),
    pytest.param("https://shop.example.com/a\u202eb", id="bidi-override"),
]


async def _assert_refused(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    body: dict[str, Any],
    field: str,
) -> None:
    before = await table_snapshot(engine, *TABLES)
    response = await client.post("/v1/campaigns", json=body, headers=org.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize("url", BAD_URLS)
async def test_bad_destination_url_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, url: Any
) -> None:
    await make_campaign(client, org)  # something stored that must stay as it is
    body = {"name": "Bad", "destination_url": url}
    await _assert_refused(client, org, engine, body, "destination_url")


@pytest.mark.parametrize("url", BAD_URLS)
async def test_bad_fallback_url_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, url: Any
) -> None:
    await make_campaign(client, org)
    body = {"name": "Bad", "destination_url": "https://shop.example.com/", "fallback_url": url}
    await _assert_refused(client, org, engine, body, "fallback_url")


@pytest.mark.parametrize("url", BAD_UNICODE_URLS)
async def test_unicode_controls_in_urls_are_422(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, url: str
) -> None:
    body = {"name": "Bad", "destination_url": url}
    await _assert_refused(client, org, engine, body, "destination_url")


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example.com",
        "HTTPS://SHOP.EXAMPLE.COM/Path",
        "http://127.0.0.1:8080/x",
        "https://[2001:db8::1]/x",
        "https://shop.example.com/p?a=1&b=%20#frag",
        "https://xn--caf-dma.example/",
    ],
)
async def test_good_urls_are_accepted(client: httpx.AsyncClient, org: Org, url: str) -> None:
    assert (await make_campaign(client, org, destination_url=url))["destination_url"] == url


BAD_BODIES = [
    pytest.param({"destination_url": "https://x.example.com/"}, "name", id="no-name"),
    pytest.param(
        {"name": "", "destination_url": "https://x.example.com/"}, "name", id="empty-name"
    ),
    pytest.param(
        {"name": "   ", "destination_url": "https://x.example.com/"}, "name", id="blank-name"
    ),
    pytest.param(
        {"name": "n" * 201, "destination_url": "https://x.example.com/"}, "name", id="long-name"
    ),
    pytest.param({"name": "N"}, "destination_url", id="no-destination"),
    pytest.param({"name": "N", "destination_url": None}, "destination_url", id="null-destination"),
    pytest.param(
        {"name": "N", "slug": "Bad Slug", "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-spaces",
    ),
    pytest.param(
        {"name": "N", "slug": "-lead", "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-leading-hyphen",
    ),
    pytest.param(
        {"name": "N", "slug": "a--b", "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-double-hyphen",
    ),
    pytest.param(
        {"name": "N", "slug": "été", "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-unicode",
    ),
    pytest.param(
        {"name": "N", "slug": "a" * 101, "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-long",
    ),
    pytest.param(
        {"name": "N", "slug": "", "destination_url": "https://x.example.com/"},
        "slug",
        id="slug-empty",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "starts_at": "2026-01-01T00:00:00",
        },
        "starts_at",
        id="naive-start",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "starts_at": "tomorrow"},
        "starts_at",
        id="bad-date",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "starts_at": "2026-02-01T00:00:00Z",
            "ends_at": "2026-01-01T00:00:00Z",
        },
        "body",
        id="ends-before-start",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "starts_at": "2026-02-01T00:00:00Z",
            "ends_at": "2026-02-01T00:00:00Z",
        },
        "body",
        id="ends-at-start",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "cost": {"amount_minor": -1, "currency": "EUR"},
        },
        "amount_minor",
        id="negative-cost",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "cost": {"amount_minor": 1.5, "currency": "EUR"},
        },
        "amount_minor",
        id="fractional-cost",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "cost": {"amount_minor": 10**16, "currency": "EUR"},
        },
        "amount_minor",
        id="huge-cost",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "cost": {"amount_minor": 1, "currency": "ZZZ"},
        },
        "currency",
        id="unknown-currency",
    ),
    pytest.param(
        {
            "name": "N",
            "destination_url": "https://x.example.com/",
            "cost": {"amount_minor": 1, "currency": "EURO"},
        },
        "currency",
        id="long-currency",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "cost": {"amount_minor": 1}},
        "currency",
        id="no-currency",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "utm": {"medium2": "x"}},
        "medium2",
        id="unknown-utm",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "utm": {"source": ""}},
        "source",
        id="empty-utm",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "utm": "flyer"},
        "utm",
        id="utm-not-object",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "organization_id": 2},
        "organization_id",
        id="unknown-field",
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "id": 99}, "id", id="id-field"
    ),
    pytest.param(
        {"name": "N", "destination_url": "https://x.example.com/", "archived": True},
        "archived",
        id="archived-on-create",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_campaign_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any], field: str
) -> None:
    await make_campaign(client, org)
    await _assert_refused(client, org, engine, body, field)


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"", 422, "validation_error"),
        (b"{", 400, "bad_request"),
        (b"[]", 422, "validation_error"),
        (b"null", 422, "validation_error"),
        (b'"x"', 422, "validation_error"),
        (b"\xff\xfe", 400, "bad_request"),
        (b'{"name": "N", "destination_url": "https://x.example.com/"', 400, "bad_request"),
    ],
)
async def test_malformed_json_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    content: bytes,
    status: int,
    code: str,
) -> None:
    """Not JSON at all is 400 ``bad_request``; JSON of the wrong shape is 422."""
    await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/campaigns",
        content=content,
        headers={**org.headers, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, status, code)
    if status == 400:
        assert problem["detail"].startswith("The body is not valid JSON (")
    assert await table_snapshot(engine, *TABLES) == before


# -- read and list ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "campaign_id",
    ["0", "-1", "999999", str(BIGINT_MAX), str(BIGINT_MAX + 1), "99999999999999999999999"],
)
async def test_unknown_campaign_is_404(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, campaign_id: str
) -> None:
    await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        response = await client.request(
            method, f"/v1/campaigns/{campaign_id}", json=body, headers=org.headers
        )
        assert_problem(response, 404, "campaign_not_found")
    assert await table_snapshot(engine, *TABLES) == before


async def test_non_integer_campaign_id_is_422(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get("/v1/campaigns/abc", headers=org.headers)
    assert_problem(response, 422, "validation_error")


async def test_list_is_newest_first_and_cursor_paginated(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    created = [(await make_campaign(client, org, name=f"C{i}"))["id"] for i in range(7)]
    await make_campaign(client, other_org, name="Not mine")
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/v1/campaigns", params=params, headers=org.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor", "limit"}
        assert page["limit"] == 3
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created, reverse=True)
    assert pages == 3


async def test_list_page_that_ends_exactly_has_no_next_cursor(
    client: httpx.AsyncClient, org: Org
) -> None:
    for i in range(2):
        await make_campaign(client, org, name=f"C{i}")
    page = (await client.get("/v1/campaigns?limit=2", headers=org.headers)).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None
    default = (await client.get("/v1/campaigns", headers=org.headers)).json()
    assert default["limit"] == 50


async def test_list_hides_deleted_and_filters_archived(client: httpx.AsyncClient, org: Org) -> None:
    kept = await make_campaign(client, org, name="Kept")
    archived = await make_campaign(client, org, name="Archived")
    deleted = await make_campaign(client, org, name="Deleted")
    await client.patch(
        f"/v1/campaigns/{archived['id']}", json={"archived": True}, headers=org.headers
    )
    await client.delete(f"/v1/campaigns/{deleted['id']}", headers=org.headers)

    async def ids(query: str) -> list[int]:
        response = await client.get(f"/v1/campaigns{query}", headers=org.headers)
        assert response.status_code == 200
        return [item["id"] for item in response.json()["items"]]

    assert await ids("") == [archived["id"], kept["id"]]
    assert await ids("?archived=true") == [archived["id"]]
    assert await ids("?archived=false") == [kept["id"]]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "x",
        "aWQ6",  # "id:"
        _b64(b"id:abc"),
        _b64(b"offset:5"),
        _b64(b"\xff\xfe\xfd"),
        _b64(b"id:1.5"),
        _b64(f"id:{BIGINT_MAX + 1}".encode()),
        _b64(b"id:" + b"9" * 60),
        "",
    ],
)
async def test_bad_cursor_is_422_invalid_cursor(
    client: httpx.AsyncClient, org: Org, cursor: str
) -> None:
    await make_campaign(client, org)
    response = await client.get("/v1/campaigns", params={"cursor": cursor}, headers=org.headers)
    assert_problem(response, 422, "invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5"])
async def test_bad_limit_is_422(client: httpx.AsyncClient, org: Org, limit: str) -> None:
    response = await client.get("/v1/campaigns", params={"limit": limit}, headers=org.headers)
    assert_problem(response, 422, "validation_error")


async def test_cursor_of_another_organization_reveals_nothing(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    for i in range(3):
        await make_campaign(client, org, name=f"C{i}")
    cursor = (await client.get("/v1/campaigns?limit=1", headers=org.headers)).json()["next_cursor"]
    assert cursor
    response = await client.get(
        "/v1/campaigns", params={"cursor": cursor}, headers=other_org.headers
    )
    assert response.status_code == 200
    assert response.json()["items"] == []


# -- update -----------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(
        client,
        org,
        fallback_url="https://shop.example.com/fb",
        utm={"source": "flyer"},
        cost={"amount_minor": 100, "currency": "EUR"},
    )
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"name": "Autumn", "destination_url": "https://shop.example.com/autumn"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Autumn"
    assert body["slug"] == campaign["slug"]  # slugs do not follow renames: printed URLs use them
    assert body["destination_url"] == "https://shop.example.com/autumn"
    assert body["fallback_url"] == "https://shop.example.com/fb"
    assert body["utm"] == campaign["utm"]
    assert body["cost"] == campaign["cost"]
    assert body["updated_at"] > campaign["updated_at"]
    assert body["created_at"] == campaign["created_at"]
    row = await _stored(engine, campaign["id"])
    assert (row["name"], row["destination_url"]) == ("Autumn", "https://shop.example.com/autumn")


async def test_patch_null_clears_optional_fields(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(
        client,
        org,
        fallback_url="https://shop.example.com/fb",
        starts_at="2026-01-01T00:00:00Z",
        ends_at="2099-01-01T00:00:00Z",
        utm={"source": "flyer"},
        cost={"amount_minor": 100, "currency": "EUR"},
    )
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"fallback_url": None, "starts_at": None, "ends_at": None, "utm": None, "cost": None},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback_url"] is None
    assert body["starts_at"] is None and body["ends_at"] is None
    assert body["cost"] is None
    assert {k: v for k, v in body["utm"].items() if v is not None} == {}


async def test_patch_archive_and_slug(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"archived": True, "slug": "new-slug"},
        headers=org.headers,
    )
    assert response.status_code == 200
    assert (response.json()["archived"], response.json()["slug"]) == (True, "new-slug")
    # Setting a campaign's own slug again is not a clash.
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"slug": "new-slug"}, headers=org.headers
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("patch", "status", "code"),
    [
        ({"slug": "taken"}, 409, "slug_taken"),
        ({"name": None}, 422, "name_required"),
        ({"slug": None}, 422, "slug_required"),
        ({"destination_url": None}, 422, "destination_required"),
        ({"ends_at": "2025-06-01T00:00:00Z"}, 422, "invalid_schedule"),
        ({"starts_at": "2031-01-01T00:00:00Z"}, 422, "invalid_schedule"),
        ({"destination_url": "javascript:alert(1)"}, 422, "validation_error"),
        ({"fallback_url": "ftp://x.example.com/"}, 422, "validation_error"),
        ({"slug": "Not A Slug"}, 422, "validation_error"),
        ({"name": ""}, 422, "validation_error"),
        ({"starts_at": "2026-01-01T00:00:00"}, 422, "validation_error"),
        (
            {"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2029-01-01T00:00:00Z"},
            422,
            "validation_error",
        ),
        ({"cost": {"amount_minor": -5, "currency": "EUR"}}, 422, "validation_error"),
        ({"utm": {"bogus": "x"}}, 422, "validation_error"),
        ({"organization_id": 999}, 422, "validation_error"),
        ({"deleted_at": None}, 422, "validation_error"),
    ],
)
async def test_bad_patch_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    patch: dict[str, Any],
    status: int,
    code: str,
) -> None:
    await make_campaign(client, org, slug="taken")
    campaign = await make_campaign(
        client, org, starts_at="2026-01-01T00:00:00Z", ends_at="2030-01-01T00:00:00Z"
    )
    before = await table_snapshot(engine, *TABLES)
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json=patch, headers=org.headers
    )
    assert_problem(response, status, code)
    assert await table_snapshot(engine, *TABLES) == before
    got = await client.get(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    assert got.json() == campaign


# -- delete -----------------------------------------------------------------------------


async def test_delete_hides_the_campaign_and_its_tags_but_keeps_scans(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert (await client.get(f"/s/{tag['code']}")).status_code == 302

    response = await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers)
    assert response.status_code == 204
    assert response.content == b""

    assert_problem(
        await client.get(f"/v1/campaigns/{campaign['id']}", headers=org.headers),
        404,
        "campaign_not_found",
    )
    assert_problem(
        await client.delete(f"/v1/campaigns/{campaign['id']}", headers=org.headers),
        404,
        "campaign_not_found",
    )
    assert_problem(
        await client.get(f"/v1/tags/{tag['id']}", headers=org.headers), 404, "tag_not_found"
    )
    scan = await client.get(f"/s/{tag['code']}")
    assert scan.status_code == 404
    assert scan.headers["content-type"].startswith("text/html")
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM scans"))).scalar()
        deleted_at = (
            await conn.execute(
                text("SELECT deleted_at FROM campaigns WHERE id = :id"), {"id": campaign["id"]}
            )
        ).scalar()
    assert count == 1
    assert deleted_at is not None


# -- tenant isolation -------------------------------------------------------------------


async def test_another_organizations_campaign_is_invisible(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    theirs = await make_campaign(client, other_org, name="Theirs")
    await make_campaign(client, org, name="Mine")
    before = await table_snapshot(engine, *TABLES)
    path = f"/v1/campaigns/{theirs['id']}"
    assert_problem(await client.get(path, headers=org.headers), 404, "campaign_not_found")
    assert_problem(
        await client.patch(path, json={"name": "Pwned"}, headers=org.headers),
        404,
        "campaign_not_found",
    )
    assert_problem(
        await client.patch(path, json={"slug": "theirs-2"}, headers=org.headers),
        404,
        "campaign_not_found",
    )
    assert_problem(await client.delete(path, headers=org.headers), 404, "campaign_not_found")
    listed = (await client.get("/v1/campaigns", headers=org.headers)).json()["items"]
    assert theirs["id"] not in [item["id"] for item in listed]
    assert await table_snapshot(engine, *TABLES) == before
    assert (await client.get(path, headers=other_org.headers)).json() == theirs


# -- unexpected failures ----------------------------------------------------------------


async def test_unexpected_error_is_a_problem_500_and_rolls_back(
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_campaign(client, org)
    real_create = campaign_service.create_campaign

    async def create_then_fail(session: AsyncSession, **kwargs: Any) -> Any:
        await real_create(session, **kwargs)  # flushed: the failure must undo it
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(campaign_service, "create_campaign", create_then_fail)
    before = await table_snapshot(engine, *TABLES)
    transport = httpx.ASGITransport(app=served_app(app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        response = await c.post(
            "/v1/campaigns",
            json={"name": "Doomed", "destination_url": "https://shop.example.com/"},
            headers=org.headers,
        )
    body = assert_problem(response, 500, "internal_error")
    assert "boom" not in response.text and "secret" not in body["detail"]
    # The log line names the request and the id the client got (never the message).
    assert re.fullmatch(r"[0-9a-f]{16}", body["error_id"]) and body["error_id"] in body["detail"]
    lines = [r.getMessage() for r in caplog.records if r.name == "api.errors"]
    assert lines == [
        f"internal error {body['error_id']} answering POST '/v1/campaigns': RuntimeError"
    ]
    assert await table_snapshot(engine, *TABLES) == before
