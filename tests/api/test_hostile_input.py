"""Hostile and edge-case input found by trying to break the service: each is a clear 4xx
problem+json (never a 500), and nothing stored changes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.errors import install_error_handlers
from api.routing import CheckedRoute
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.dashboard import csrf_of, make_user, sign_in
from tests.fixtures.http import api_routes

TABLES = ("campaigns", "tags", "conversions")


async def assert_422(response: httpx.Response, code: str = "validation_error") -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad\x00name"},
        {"name": "\x1b[31mred"},
        {"name": "abc\u202egnp.exe"},
        {"name": "\u200b\u200b"},
        {"utm": {"source": "a\x00b"}},
        {"starts_at": "0001-01-01T00:00:00+01:00"},
        {"ends_at": "9999-12-31T23:59:59-01:00"},
        {"starts_at": "1969-12-31T23:00:00Z"},
        {"cost": {"amount_minor": True, "currency": "EUR"}},
        {"cost": {"amount_minor": "100", "currency": "EUR"}},
        {"cost": {"amount_minor": 100, "currency": "XXX"}},
        {"cost": {"amount_minor": 100, "currency": "XAU"}},
        {"destination_url": "https://exa\u200bmple.com/"},
    ],
)
async def test_bad_campaign_fields_are_422_and_store_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    full = {"name": "Spring", "destination_url": "https://shop.example.com/", **body}
    await assert_422(await client.post("/v1/campaigns", json=full, headers=org.headers))
    await assert_422(
        await client.patch(f"/v1/campaigns/{campaign['id']}", json=body, headers=org.headers)
    )
    assert await table_snapshot(engine, *TABLES) == before


async def test_archived_null_is_refused(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    r = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"archived": None}, headers=org.headers
    )
    await assert_422(r, "archived_required")
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"event": "buy\x00"},
        {"external_id": "order\x00-1"},
        {"occurred_at": "0001-01-01T00:00:00+01:00"},
        {"value": {"amount_minor": 1.0, "currency": "EUR"}},
    ],
)
async def test_bad_conversion_fields_are_422(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, changes: dict[str, Any]
) -> None:
    before = await table_snapshot(engine, *TABLES)
    body = {"click_id": "abc", "event": "purchase", "external_id": "o-1", **changes}
    await assert_422(await client.post("/v1/conversions", json=body, headers=org.headers))
    assert await table_snapshot(engine, *TABLES) == before


async def test_nul_in_a_tag_label_is_422(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    r = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags", json={"label": "door\x00"}, headers=org.headers
    )
    await assert_422(r)


async def test_internationalised_hosts_are_stored_as_punycode(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org, destination_url="https://bücher.example/livres")
    assert campaign["destination_url"] == "https://xn--bcher-kva.example/livres"
    tag = await make_tag(client, org, campaign["id"])
    location = (await client.get(f"/s/{tag['code']}")).headers["location"]
    assert location.startswith("https://xn--bcher-kva.example/livres?")


async def test_concurrent_creations_with_the_same_name_all_get_a_slug(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """20 requests at once, each on its own session and connection (the pool holds 20):
    all created, each with its own slug derived from the name."""
    body = {"name": "Spring sale", "destination_url": "https://shop.example.com/"}
    responses = await asyncio.gather(
        *(client.post("/v1/campaigns", json=body, headers=org.headers) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    slugs = [r.json()["slug"] for r in responses]
    assert len(set(slugs)) == 20
    assert "spring-sale" in slugs
    assert all(re.fullmatch(r"spring-sale(-[0-9]+|-[a-z0-9]{6})?", slug) for slug in slugs)
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT slug FROM campaigns"))).scalars().all()
    assert sorted(stored) == sorted(slugs)


async def test_a_flood_of_unknown_fields_gets_a_bounded_answer(
    client: httpx.AsyncClient, org: Org
) -> None:
    body: dict[str, Any] = {f"k{i}": i for i in range(5000)}
    r = await client.post("/v1/campaigns", json=body, headers=org.headers)
    problem = await assert_422(r)
    assert len(problem["errors"]) == 20
    assert "more problems not listed" in problem["detail"]


async def test_paths_under_s_are_html_pages_and_no_slash_redirects(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    for path in (f"/s/{tag['code']}/", f"/s/{tag['code']}%2F", "/s/"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
    r = await client.get("/v1/campaigns/", headers={**org.headers, "host": "evil.example"})
    assert r.status_code == 404  # no redirect built from the Host header
    assert "location" not in r.headers


async def test_health_probes_answer_head_with_an_empty_body(client: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/health/scans", "/health/ready"):
        response = await client.head(path)
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-type"] == "application/json"


@pytest.fixture
def fresh_limits(app: FastAPI) -> Iterator[None]:
    """Sign-in budgets start full (they live in the session-wide app)."""
    if hasattr(app.state, "sign_in_limiters"):
        del app.state.sign_in_limiters
    yield None
    if hasattr(app.state, "sign_in_limiters"):
        del app.state.sign_in_limiters


NUL_TABLES = (*TABLES, "redirect_rules", "dashboard_users", "audit_events", "scans")


async def assert_nul_refused(response: httpx.Response, loc: list[Any]) -> None:
    body = await assert_422(response)
    assert body["errors"][0]["type"] == "string_contains_nul"
    assert body["errors"][0]["loc"] == loc


@pytest.mark.parametrize("value", ["\x00", "a\x00b"])
@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/v1/privacy/scans", "click_id"),
        ("DELETE", "/v1/privacy/scans", "click_id"),
        ("GET", "/v1/audit", "action"),
        ("GET", "/v1/campaigns", "cursor"),
        ("GET", "/v1/conversions", "event"),
        ("GET", "/v1/locations", "unknown_parameter"),
    ],
)
async def test_nul_in_a_query_parameter_is_422(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    method: str,
    path: str,
    name: str,
    value: str,
) -> None:
    before = await table_snapshot(engine, *NUL_TABLES)
    response = await client.request(method, path, params={name: value}, headers=org.headers)
    await assert_nul_refused(response, ["query", name])
    assert await table_snapshot(engine, *NUL_TABLES) == before


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"when": {"os": ["i\x00OS"]}}, ["body", "when", "os", 0]),
        ({"when": {"os": ["iOS"]}, "destination_url": "https://a.example/\x00"}, None),
        ({"when": {"languages": ["f\x00"]}}, ["body", "when", "languages", 0]),
        ({"when": {"os": ["iOS"]}, "x\x00": 1}, ["body", "x\x00"]),
    ],
)
async def test_nul_in_a_json_string_at_any_depth_is_422(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    body: dict[str, Any],
    loc: list[Any] | None,
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *NUL_TABLES)
    full = {"destination_url": "https://ios.example.com/", "priority": 1, **body}
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules", json=full, headers=org.headers
    )
    await assert_nul_refused(response, loc or ["body", "destination_url"])
    assert await table_snapshot(engine, *NUL_TABLES) == before


async def test_other_control_characters_in_rule_os_names_are_422(
    client: httpx.AsyncClient, org: Org
) -> None:
    """List items get the text check of other fields (they used to escape it)."""
    campaign = await make_campaign(client, org)
    body = {"when": {"os": ["i\x1bOS"]}, "destination_url": "https://a.example/", "priority": 1}
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/rules", json=body, headers=org.headers
    )
    problem = await assert_422(response)
    assert "control characters" in problem["detail"]


async def test_nul_in_a_path_parameter_is_422(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get("/v1/campaigns/slug%00/stats", headers=org.headers)
    await assert_nul_refused(response, ["path", "campaign_id"])


async def test_nul_in_a_dashboard_form_field_is_a_422_page(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "lea@acme.example", "admin")
    await sign_in(client, "lea@acme.example")
    csrf = csrf_of((await client.get("/app/users")).text)
    before = await table_snapshot(engine, *NUL_TABLES)
    for data in (
        {"csrf": csrf, "email": "x\x00@example.com", "role": "viewer"},
        {"csrf": csrf, "email": "x@example.com", "role": "view\x00er"},
    ):
        response = await client.post("/app/users", data=data)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("text/html")
        assert "NUL" in response.text
    response = await client.get("/app/campaigns", params={"period": "\x00"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert await table_snapshot(engine, *NUL_TABLES) == before


def test_every_v1_and_app_route_refuses_nul(app: FastAPI) -> None:
    """One boundary: every management and dashboard route is a CheckedRoute."""
    routes = [(path, r) for path, r in api_routes(app) if path.startswith(("/v1/", "/app"))]
    assert len(routes) > 80  # not vacuous: the API and the dashboard are all here
    assert [path for path, route in routes if not isinstance(route, CheckedRoute)] == []


async def test_every_v1_write_answers_a_form_body_without_a_500(
    app: FastAPI, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """A form body (``curl -d`` sends one by default) is parsed for the NUL check before
    any route runs; a route that then reads the body itself (the location import, the
    logo) got Starlette's "Stream consumed", a 500. Every ``/v1`` write, url-encoded and
    multipart: a 4xx or a success, never a 5xx, and nothing stored changed."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    ids = {"campaign_id": campaign["id"], "tag_id": tag["id"]}
    tables = ("campaigns", "tags", "locations", "organization_logos", "conversions")
    before = await table_snapshot(engine, *tables)
    writes = 0
    for template, route in api_routes(app):
        if not template.startswith("/v1/"):
            continue
        path = re.sub(r"{(\w+)}", lambda m: str(ids.get(m.group(1), 1)), template)
        for method in (route.methods or set()) & {"POST", "PUT", "PATCH"}:
            writes += 1
            for body in ({"data": {"name": "x"}}, {"files": {"file": (None, "name\nx\n")}}):
                response = await client.request(method, path, headers=org.headers, **body)
                assert response.status_code < 500, (method, template, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
    assert writes > 15  # not vacuous: every /v1 write
    assert await table_snapshot(engine, *tables) == before


async def test_a_nul_reaching_the_database_is_422_not_500(engine: AsyncEngine) -> None:
    """The safety net: psycopg's refusal of NUL (a value no route checked) is a 422."""
    probe = FastAPI()
    install_error_handlers(probe)

    @probe.get("/probe")
    async def store_nul() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})

    transport = httpx.ASGITransport(app=probe, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/probe")
    body = await assert_422(response)
    assert body["errors"][0]["type"] == "string_contains_nul"


def _dashboard_id_routes() -> list[tuple[str, str, list[str]]]:
    from api.dashboard.routes import router

    found: list[tuple[str, str, list[str]]] = []
    for route in router.routes:
        assert isinstance(route, APIRoute)
        ids = [p.name for p in route.dependant.path_params if p.field_info.annotation is int]
        found.extend((method, route.path, ids) for method in sorted(route.methods or ()) if ids)
    return found


DASHBOARD_ID_ROUTES = _dashboard_id_routes()


def test_the_dashboard_has_the_id_routes_the_tester_found() -> None:
    paths = {(method, path) for method, path, _ in DASHBOARD_ID_ROUTES}
    for action in ("link", "role", "remove"):
        assert ("POST", f"/app/users/{{user_id}}/{action}") in paths
    assert ("POST", "/app/keys/{key_id}/revoke") in paths
    assert len(paths) >= 19


@pytest.mark.parametrize("bad_id", ["99999999999999999999", "9223372036854775808", "0", "-1"])
@pytest.mark.parametrize(("method", "path", "ids"), DASHBOARD_ID_ROUTES)
async def test_every_dashboard_id_route_answers_404_for_an_id_out_of_range(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    method: str,
    path: str,
    ids: list[str],
    bad_id: str,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "lea@acme.example", "admin")
    await sign_in(client, "lea@acme.example")
    csrf = csrf_of((await client.get("/app/users")).text)
    before = await table_snapshot(engine, *NUL_TABLES)
    url = path
    for name in ids:
        url = url.replace(f"{{{name}}}", bad_id)
    data = {"csrf": csrf, "role": "viewer", "archived": "true"} if method == "POST" else None
    response = await client.request(method, url, data=data)
    assert response.status_code == 404, (url, response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("text/html")
    assert await table_snapshot(engine, *NUL_TABLES) == before


@pytest.mark.parametrize(
    "zone", ["localtime", "Factory", "posixrules", "posix/Europe/Paris", "right/UTC", "Mars/Base"]
)
async def test_pseudo_time_zones_are_refused_for_a_campaign(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, zone: str
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    body = {"name": "Spring", "destination_url": "https://shop.example.com/", "timezone": zone}
    await assert_422(
        await client.post("/v1/campaigns", json=body, headers=org.headers), "invalid_timezone"
    )
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"timezone": zone}, headers=org.headers
    )
    await assert_422(response, "invalid_timezone")
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize("zone", ["UTC", "Etc/GMT-2", "Europe/Paris", "America/Argentina/Salta"])
async def test_place_and_offset_time_zones_are_accepted(
    client: httpx.AsyncClient, org: Org, zone: str
) -> None:
    campaign = await make_campaign(client, org, timezone=zone)
    assert campaign["timezone"] == zone


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Starlette named only the first route whose path matched: "POST", without GET.
        ("PUT", "/v1/campaigns", "GET, POST"),
        ("POST", "/v1/campaigns/1", "DELETE, GET, PATCH"),
        # The scan endpoint answers HEAD in front of the router (issue 2: HEAD redirects).
        ("POST", "/s/7K3QX9TB", "GET, HEAD"),
    ],
)
async def test_a_405_lists_every_method_the_path_answers(
    client: httpx.AsyncClient, org: Org, method: str, path: str, allow: str
) -> None:
    """RFC 9110 §15.5.6: a 405 carries ``Allow`` with the target's supported methods."""
    response = await client.request(method, path, headers=org.headers)
    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow
