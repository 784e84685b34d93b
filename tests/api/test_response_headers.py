"""Every kind of response the service sends carries the security headers of issue 12:
``Content-Security-Policy``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer`` and, the base URL being https, ``Strict-Transport-Security``; each once.

One case per kind: the scan path's redirect, pages (404, 410, NFC "tap again", the two
consent pages) and its own problem documents (503 when shedding load, 500 for a bug),
the 431 of oversized headers (answered before anything else), the management API's
answers and errors, the dashboard, the location beacon, health, metrics, the OpenAPI
document. Over plain http, none carries HSTS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app, served_app
from api.security_headers import HSTS
from campaigns.scanning.writer import WriterOverloaded
from campaigns.services import audit as audit_service
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

PHONE = {"User-Agent": IPHONE_SAFARI}

Case = Callable[[FastAPI, httpx.AsyncClient, Org, pytest.MonkeyPatch], Awaitable[httpx.Response]]


async def _tag(client: httpx.AsyncClient, org: Org, **campaign: Any) -> dict[str, Any]:
    made = await make_campaign(client, org, **campaign)
    return await make_tag(client, org, made["id"])


async def scan_redirect(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get(f"/s/{(await _tag(client, org))['code']}", headers=PHONE)


async def scan_not_found(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/s/NOSUCHC0", headers={"Accept-Language": "fr"})


async def scan_gone(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    archived = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"archived": True}, headers=org.headers
    )
    assert archived.status_code == 200, archived.text
    return await client.get(f"/s/{tag['code']}", headers=PHONE)


async def nfc_tap_again(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    tag = await make_tag(
        client, org, campaign["id"], kind="nfc_sun", label="door", nfc={"uid": "04112233445566"}
    )
    # No SUN message at all: an invalid tap, blocked.
    return await client.get(f"/n/{tag['code']}", headers=PHONE)


async def location_consent(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    tag = await _tag(client, org, precise_location="ask")
    return await client.get(f"/s/{tag['code']}", headers=PHONE)


async def cookie_consent(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    patched = await client.patch(
        "/v1/organization",
        json={"visitor_cookie": True, "visitor_cookie_consent": "ask"},
        headers=org.headers,
    )
    assert patched.status_code == 200, patched.text
    return await client.get(f"/s/{(await _tag(client, org))['code']}", headers=PHONE)


async def scan_shedding(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    tag = await _tag(client, org)

    async def refuse(*args: Any) -> None:
        raise WriterOverloaded("queue full", 3)

    mp.setattr(app.state.scans.writer, "submit", refuse)
    return await client.get(f"/s/{tag['code']}", headers=PHONE)


async def scan_bug(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    tag = await _tag(client, org)

    def broken(*args: Any) -> None:
        raise ValueError("a bug")

    mp.setattr(app.state.scans, "build", broken)
    return await client.get(f"/s/{tag['code']}", headers=PHONE)


async def headers_too_large(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    size = app.state.settings.max_header_bytes
    return await client.get("/s/ANYC0DE1", headers={"X-Padding": "x" * size})


async def api_ok(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/v1/campaigns", headers=org.headers)


async def api_unauthenticated(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/v1/campaigns")


async def api_not_found(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/v1/campaigns/999", headers=org.headers)


async def api_invalid(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.post("/v1/campaigns", json={"name": ""}, headers=org.headers)


async def api_too_large(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    body = b"x" * (app.state.settings.max_body_bytes + 1)
    headers = {**org.headers, "content-type": "application/json"}
    return await client.post("/v1/campaigns", content=body, headers=headers)


async def api_bug(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug")

    mp.setattr(audit_service, "list_events", broken)
    # Starlette re-raises the bug after answering: this transport keeps the answer.
    transport = httpx.ASGITransport(app=served_app(app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=str(client.base_url)) as c:
        return await c.get("/v1/audit", headers=org.headers)


async def unknown_path(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/nowhere/<script>")


async def dashboard_sign_in(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/app/sign-in")


async def dashboard_signed_out(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/app/campaigns")


async def location_beacon(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.post(
        "/s/no-such-click/location", json={"lat": 48.8, "lon": 2.3, "accuracy_m": 10}
    )


async def health(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/health/ready")


async def metrics(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/metrics")


async def openapi(
    app: FastAPI, client: httpx.AsyncClient, org: Org, mp: pytest.MonkeyPatch
) -> httpx.Response:
    return await client.get("/openapi.json")


#: Each kind of response, with the status it must have.
CASES: dict[str, tuple[Case, int]] = {
    "scan-redirect": (scan_redirect, 302),
    "scan-404-page": (scan_not_found, 404),
    "scan-410-page": (scan_gone, 410),
    "nfc-tap-again-page": (nfc_tap_again, 403),
    "location-consent-page": (location_consent, 200),
    "cookie-consent-page": (cookie_consent, 200),
    "scan-503-shedding": (scan_shedding, 503),
    "scan-500": (scan_bug, 500),
    "431-headers-too-large": (headers_too_large, 431),
    "v1-200": (api_ok, 200),
    "v1-401": (api_unauthenticated, 401),
    "v1-404": (api_not_found, 404),
    "v1-422": (api_invalid, 422),
    "v1-413": (api_too_large, 413),
    "v1-500": (api_bug, 500),
    "unknown-path-404": (unknown_path, 404),
    "dashboard-page": (dashboard_sign_in, 200),
    "dashboard-redirect": (dashboard_signed_out, 303),
    "location-beacon-error": (location_beacon, 404),
    "health": (health, 200),
    "metrics": (metrics, 200),
    "openapi": (openapi, 200),
}


def assert_headers(response: httpx.Response, *, https: bool = True) -> None:
    """The security headers, each exactly once (a response never gets two CSPs)."""
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy"):
        assert len(response.headers.get_list(name)) == 1, name
    assert response.headers["content-security-policy"].startswith("default-src ")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    if https:
        assert response.headers.get_list("strict-transport-security") == [HSTS]
    else:
        assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_every_kind_of_response_carries_the_security_headers(
    kind: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case, status = CASES[kind]
    response = await case(app, client, org, monkeypatch)
    assert response.status_code == status, response.text
    assert_headers(response)


@asynccontextmanager
async def plain_http(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A second app on the test database whose base URL is plain http."""
    application = create_app(settings.model_copy(update={"base_url": "http://127.0.0.1:8000"}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=served_app(application), client=("203.0.113.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            yield application, c


async def test_no_hsts_on_any_kind_over_plain_http(
    settings: Settings, client: httpx.AsyncClient, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = ("scan-404-page", "scan-503-shedding", "scan-500", "431-headers-too-large", "v1-404")
    async with plain_http(settings) as (application, http):
        for kind in kinds:
            case, status = CASES[kind]
            with monkeypatch.context() as mp:
                response = await case(application, http, org, mp)
            assert response.status_code == status, (kind, response.text)
            assert_headers(response, https=False)
