"""Management API limits: per-key rate limit (429), header size (431), JSON media type
(415) and malformed JSON (400)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

import api.routers
from api.app import create_app, served_app
from api.middleware import ForwardedFor, HeadersAndClient, HeaderSizeLimit, header_bytes
from api.routing import JsonBodyRoute, is_json_media_type
from campaigns.db import unit_of_work
from campaigns.services.organizations import issue_api_key
from campaigns.settings import Settings
from geo.forwarded import TrustedProxies
from tests.conftest import Org, make_campaign, make_tag, table_snapshot


@pytest.fixture
async def limited_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app whose API keys get a burst of 3 requests and almost no refill (one token
    per 1000 s), so the test does not depend on timing."""
    app = create_app(
        settings.model_copy(
            update={
                "rate_limit_enabled": True,
                "api_rate_limit_burst": 3,
                "api_rate_limit_per_s": 0.001,
            }
        )
    )
    async with app.router.lifespan_context(app):
        yield app


async def test_each_api_key_has_its_own_bucket(
    client: httpx.AsyncClient,
    org: Org,
    limited_app: FastAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    transport = httpx.ASGITransport(app=served_app(limited_app))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        statuses = [
            (await c.get("/v1/campaigns", headers=org.headers)).status_code for _ in range(3)
        ]
        limited = await c.get("/v1/campaigns", headers=org.headers)
        async with unit_of_work(sessionmaker) as session:
            second = await issue_api_key(
                session, organization_id=org.id, name="second", scopes=["admin"]
            )
        other_key = await c.get(
            "/v1/campaigns", headers={"Authorization": f"Bearer {second.secret}"}
        )
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited"
    assert 990 <= int(limited.headers["retry-after"]) <= 1000
    assert limited.json()["detail"] == (
        f"Too many requests with this API key; retry in {limited.headers['retry-after']} s"
    )
    assert other_key.status_code == 200


async def test_rate_limit_is_off_with_rate_limits_disabled(
    client: httpx.AsyncClient, org: Org, app: FastAPI
) -> None:
    # The shared test app has rate_limit_enabled=False: no bucket at all.
    assert app.state.api_rate_limiter is None
    responses = [await client.get("/v1/campaigns", headers=org.headers) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5


def test_header_bytes_counts_names_values_and_separators() -> None:
    scope = {"type": "http", "headers": [(b"host", b"a.example"), (b"x-a", b"")]}
    assert header_bytes(scope) == (4 + 9 + 4) + (3 + 0 + 4)


@pytest.mark.parametrize("path", ["/v1/campaigns", "/s/7KQ2M9XD", "/health/live", "/nowhere"])
async def test_oversized_headers_are_431_on_every_path(
    client: httpx.AsyncClient, org: Org, settings: Settings, path: str
) -> None:
    padding = {"x-padding": "a" * settings.max_header_bytes}
    response = await client.get(path, headers={**org.headers, **padding})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "headers_too_large"
    assert problem["detail"].startswith(
        f"Request headers are limited to {settings.max_header_bytes} bytes in total"
    )


async def test_headers_under_the_limit_pass(
    client: httpx.AsyncClient, org: Org, settings: Settings
) -> None:
    padding = {"x-padding": "a" * (settings.max_header_bytes // 2)}
    response = await client.get("/v1/campaigns", headers={**org.headers, **padding})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_json_bodies_need_a_json_content_type(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, content_type: str | None
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, "campaigns", "tags", "conversions")
    headers = dict(org.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    body = json.dumps({"name": "Spring", "destination_url": "https://shop.example.com/"})
    attempts = [
        ("POST", "/v1/campaigns", body),
        ("PATCH", f"/v1/campaigns/{campaign['id']}", '{"name": "Renamed"}'),
        ("POST", f"/v1/campaigns/{campaign['id']}/tags", "{}"),
        ("PATCH", f"/v1/tags/{tag['id']}", '{"label": "x"}'),
        ("POST", "/v1/conversions", '{"click_id": "a", "event": "b", "external_id": "c"}'),
    ]
    for method, path, content in attempts:
        response = await client.request(method, path, content=content, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "unsupported_media_type"
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        assert problem["detail"] == (
            f"The body must be JSON sent with Content-Type: application/json (got {sent})"
        )
    assert await table_snapshot(engine, "campaigns", "tags", "conversions") == before


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_media_types_with_parameters_or_suffix_are_accepted(
    client: httpx.AsyncClient, org: Org, content_type: str
) -> None:
    campaign = await make_campaign(client, org)
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        content='{"name": "Renamed"}',
        headers={**org.headers, "content-type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Renamed"


def test_media_type_parsing() -> None:
    assert is_json_media_type("application/json")
    assert is_json_media_type("Application/JSON ; charset=UTF-8")
    assert is_json_media_type("application/problem+json")
    assert not is_json_media_type("text/json")
    assert not is_json_media_type("multipart/form-data; boundary=x")
    assert not is_json_media_type("")


def test_every_route_with_a_json_model_body_checks_its_media_type() -> None:
    """Every router module under api/routers: a route taking a JSON model is a
    JsonBodyRoute (a new router needs ``APIRouter(route_class=JsonBodyRoute)``)."""
    json_routes = []
    for module_info in pkgutil.iter_modules(api.routers.__path__):
        module = importlib.import_module(f"api.routers.{module_info.name}")
        router = getattr(module, "router", None)
        for route in router.routes if router is not None else ():
            if isinstance(route, APIRoute) and route.body_field is not None:
                json_routes.append(route)
    assert {route.path for route in json_routes} >= {"/v1/campaigns", "/v1/conversions"}
    assert all(isinstance(route, JsonBodyRoute) for route in json_routes), [
        route.path for route in json_routes if not isinstance(route, JsonBodyRoute)
    ]


@pytest.mark.parametrize("extra", [0, 1])
async def test_one_pass_guard_answers_as_the_two_middleware(extra: int) -> None:
    # served_app's HeadersAndClient = HeaderSizeLimit then ForwardedFor: the same 431 at
    # the same byte, the same client behind a trusted proxy (several XFF lines in order).
    trusted = TrustedProxies(["127.0.0.1/32"])
    headers = [
        (b"x-forwarded-for", b"203.0.113.7, 10.9.9.9"),
        (b"x-forwarded-for", b"198.51.100.4"),
        (b"host", b"go.example.com"),
    ]
    limit = header_bytes({"headers": headers}) - extra  # extra = 1: one byte too many
    seen: dict[str, list[Any]] = {"one pass": [], "two": []}

    def inner(label: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen[label].append(scope["client"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        return app

    one_pass = HeadersAndClient(inner("one pass"), max_bytes=limit, trusted=trusted)
    two = HeaderSizeLimit(ForwardedFor(inner("two"), trusted=trusted), max_bytes=limit)
    statuses = {}
    for label, app in (("one pass", one_pass), ("two", two)):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": "/s/X", "headers": headers, "client": ("127.0.0.1", 1)}
        await app(scope, receive, send)
        statuses[label] = sent[0]["status"]
    assert statuses == {"one pass": 431 if extra else 204, "two": 431 if extra else 204}
    expected = [] if extra else [("198.51.100.4", 0)]
    assert seen == {"one pass": expected, "two": expected}
