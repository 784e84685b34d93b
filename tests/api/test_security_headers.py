"""Security headers on public responses, and no input reflected unescaped in pages."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
from fastapi import FastAPI

from api.pages import location_page, not_found_page
from api.security_headers import HSTS, LOCKED_DOWN_CSP, SecurityHeaders, hsts_headers
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import IPHONE_SAFARI

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def assert_secure(response: httpx.Response, *, csp: str | None = LOCKED_DOWN_CSP) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["strict-transport-security"] == HSTS  # BASE_URL is https
    if csp is not None:
        assert response.headers["content-security-policy"] == csp
    assert len(response.headers.get_list("x-content-type-options")) == 1


async def test_scan_redirect(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.get(f"/s/{tag['code']}", headers={"User-Agent": IPHONE_SAFARI})
    assert response.status_code == 302
    assert_secure(response)


async def test_pages_allow_only_their_own_style(client: httpx.AsyncClient) -> None:
    response = await client.get("/s/NOSUCHCODE")
    assert response.status_code == 404
    csp = response.headers["content-security-policy"]
    assert_secure(response, csp=csp)
    assert csp.startswith("default-src 'none'; style-src 'sha256-")
    assert "unsafe-inline" not in csp and "script-src" not in csp
    style = re.search(r"<style>(.*?)</style>", response.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


async def test_api_and_error_responses(client: httpx.AsyncClient, org: Org) -> None:
    assert_secure(await client.get("/v1/campaigns", headers=org.headers))
    missing = await client.get("/v1/campaigns/999", headers=org.headers)
    assert missing.status_code == 404
    assert_secure(missing)
    unauthenticated = await client.get("/v1/campaigns")
    assert unauthenticated.status_code == 401
    assert_secure(unauthenticated)
    assert_secure(await client.get("/nowhere"))
    assert_secure(await client.get("/health/live"))
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert_secure(docs, csp=None)
    assert "content-security-policy" not in docs.headers  # Swagger UI runs inline scripts


async def test_no_hsts_over_plain_http() -> None:
    assert hsts_headers("http://127.0.0.1:8000") == []
    assert hsts_headers("HTTPS://go.example.com") == [(b"strict-transport-security", HSTS.encode())]
    app = FastAPI()

    @app.get("/x")
    def _x() -> dict[str, int]:
        return {"x": 1}

    transport = httpx.ASGITransport(app=SecurityHeaders(app, base_url="http://localhost"))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        response = await c.get("/x")
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == LOCKED_DOWN_CSP


@pytest.mark.parametrize("path", [f"/s/{HOSTILE}", "/s/%22%3E%3Cscript%3Ealert(1)%3C/script%3E"])
async def test_a_hostile_code_is_not_reflected(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "<script" not in response.text and "alert" not in response.text
    assert response.text == not_found_page()["en"].body.decode()


def test_consent_page_escapes_what_it_shows() -> None:
    destination = f"https://shop.example.com/?q={HOSTILE}&x=</script><script>alert(3)</script>"
    page = location_page(destination=destination, click_id="c1", accept_language=HOSTILE)
    body = bytes(page.body).decode()
    nonce = re.search(r"<script nonce=\"([^\"]+)\">", body)
    assert nonce is not None
    # One script, the page's own; the destination appears only escaped.
    assert body.count("<script") == 1
    assert "alert(1)</script>" not in body and "onerror=alert(2)>" not in body
    assert "</script><script>" not in body
    assert f"'nonce-{nonce.group(1)}'" in page.headers["content-security-policy"]
    assert page.headers["content-language"] == "en"  # the hostile header picks nothing
