"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
``passerelle serve`` process on a throwaway database.

Chromium comes from the system (``apt-get install chromium``, done by ``.ci/run``);
Playwright's own browser download is never used. Without ``/usr/bin/chromium`` these
tests are skipped with that reason. Every test saves a screenshot under
``tests/output/dashboard/`` (not committed).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pypdfium2
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy.engine import make_url

from campaigns import migrate
from campaigns.db import libpq_url
from tests.e2e.harness import ROOT, Server
from tests.fixtures.artwork import decode_artwork, pdf_page_png
from tests.fixtures.smtp import smtp_server
from tests.fixtures.user_agents import ANDROID_CHROME, IPHONE_SAFARI

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = ROOT / "tests" / "output" / "dashboard"
AXE = ROOT / "tests" / "fixtures" / "axe-core" / "axe.min.js"
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing: apt-get install -y chromium (.ci/run does)",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def dashboard_db() -> Iterator[str]:
    """A fresh, migrated database of its own (the server process and these tests only)."""
    from tests.conftest import SERVER_URL

    name = f"passerelle_dash_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        migrate.drop_database(url)


@pytest.fixture(scope="module")
def server(dashboard_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``passerelle serve`` on a free port; short links on its own origin (plain http, so
    the cookies carry no ``Secure`` and the QR codes resolve here)."""
    srv = Server(dashboard_db, tmp_path_factory.mktemp("dash-data"))
    srv.env["PASSERELLE_BASE_URL"] = srv.base_url
    srv.env["PASSERELLE_ENVIRONMENT"] = "test"
    srv.env["PASSERELLE_SECRET_KEY"] = secrets.token_urlsafe(32)
    srv.env["PASSERELLE_RENDER_WORKERS"] = "1"
    srv.env["PASSERELLE_DASHBOARD_SIGN_IN_PER_ACCOUNT"] = "1000"
    srv.env["PASSERELLE_DASHBOARD_SIGN_IN_PER_ADDRESS"] = "1000"
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cli(server: Server, *args: str) -> str:
    """``python -m api.cli ARGS`` with the server's settings; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def organization(server: Server) -> dict[str, Any]:
    """An organization and its API key, made with ``passerelle organizations create``."""
    created: dict[str, Any] = json.loads(cli(server, "organizations", "create", "Acme", "--json"))
    return created


def invite(server: Server, organization_id: int, email: str, role: str) -> str:
    """``passerelle users create`` and the sign-in link it prints."""
    out = cli(
        server, "users", "create", email, "--organization", str(organization_id), "--role", role
    )
    match = re.search(r"(http://\S+/app/sign-in/\S+)", out)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


class Watch:
    """Console errors and CSP violations of a page: the tests end with none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # A page answered 401/403/404/422 on purpose is logged as "Failed to load
        # resource"; sub-resources are checked by their responses instead.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.status} {response.url}")


def new_page(
    browser: Any, *, phone: bool = False, locale: str = "en-GB", bypass_csp: bool = False
) -> tuple[Any, Any, Watch]:
    """A fresh context (no cookies) and page, desktop or phone sized. ``bypass_csp`` only
    for injecting axe-core (an inline script the pages' CSP rightly refuses)."""
    if phone:
        context = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale=locale,
            user_agent=IPHONE_SAFARI,
        )
    else:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, locale=locale, bypass_csp=bypass_csp
        )
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page, Watch(page)


def shot(page: Any, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, server: Server, email: str, password: str = PASSWORD) -> None:
    page.goto(server.base_url + "/app/sign-in")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/campaigns$"))


def accept_link(page: Any, link: str, password: str = PASSWORD) -> None:
    page.goto(link)
    page.fill("#password", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/campaigns$"))


_users: dict[str, str] = {}


def user(server: Server, organization: dict[str, Any], browser: Any, role: str) -> str:
    """The e-mail of a user of ``role`` in ``organization`` who has chosen a password."""
    email = f"{role}@acme.example"
    if email not in _users:
        context, page, _ = new_page(browser)
        accept_link(page, invite(server, organization["id"], email, role))
        context.close()
        _users[email] = role
    return email


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page (vendored axe.min.js)."""
    page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("async () => await axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def scan(server: Server, code: str, user_agent: str = IPHONE_SAFARI) -> str:
    """Scan a tag over HTTP like a phone; the click id of the redirect."""
    response = httpx.get(
        f"{server.base_url}/s/{code}", headers={"user-agent": user_agent}, timeout=10
    )
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0]


def api(server: Server, organization: dict[str, Any]) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {organization['api_key']}"},
        timeout=30,
    )


def create_campaign_in_page(page: Any, server: Server, name: str, cost: str = "100") -> int:
    page.goto(server.base_url + "/app/campaigns/new")
    page.fill("#name", name)
    page.fill("#destination_url", "https://shop.example.com/summer")
    page.fill("#timezone", "Europe/Paris")
    page.fill("#cost", cost)
    page.fill("#currency", "EUR")
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/campaigns/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def create_tag_in_page(page: Any, server: Server, campaign_id: int, label: str) -> dict[str, str]:
    page.goto(f"{server.base_url}/app/campaigns/{campaign_id}/tags")
    page.fill("#label", label)
    page.click("main form.panel button[type=submit]")
    page.wait_for_url(re.compile(rf".*/app/campaigns/{campaign_id}/tags$"))
    item = page.locator("li.tag", has_text=label).first
    return {
        "id": item.get_attribute("data-tag-id") or "",
        "code": item.get_attribute("data-code") or "",
        "qr": item.get_attribute("data-qr-content") or "",
    }


def wait_for_figure(page: Any, selector: str, value: str, url: str) -> None:
    """Reload ``url`` until ``selector``'s ``data-value`` is ``value`` (the scan writer
    commits in the background, within milliseconds)."""
    for _ in range(50):
        page.goto(url)
        if page.locator(selector).get_attribute("data-value") == value:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{selector} never showed {value}")


# --- Tests ----------------------------------------------------------------------------


def test_sign_in_with_a_link_then_a_password(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    link = invite(server, organization["id"], "first@acme.example", "admin")
    context, page, watch = new_page(browser)
    page.goto(link)
    shot(page, "choose-password")
    page.fill("#password", "short")
    # The browser's own minlength check stops a short password; the server checks too.
    page.evaluate("document.querySelector('#password').removeAttribute('minlength')")
    page.click("form.stack button[type=submit]")
    assert page.locator(".notice.error").is_visible()
    page.fill("#password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/campaigns$"))
    cookie = next(c for c in context.cookies() if c["name"] == "passerelle_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # http base URL here; https gets Secure (unit test)
    # The link worked once.
    page.goto(link)
    assert page.locator("h1").inner_text() == "Error"
    # Sign out, then in with the password.
    page.goto(server.base_url + "/app/campaigns")
    page.click("header form button")
    page.wait_for_url(re.compile(r".*/app/sign-in$"))
    page.fill("#email", "first@acme.example")
    page.fill("#password", "wrong password!")
    page.click("form.stack button[type=submit]")
    assert page.locator("#sign-in-error").inner_text() == "Wrong e-mail or password."
    sign_in(page, server, "first@acme.example")
    shot(page, "campaigns-empty")
    assert watch.errors == []
    context.close()


def test_campaign_tag_qr_scan_conversion_and_figures_equal_the_api(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "admin")
    context, page, watch = new_page(browser)
    sign_in(page, server, email)
    campaign_id = create_campaign_in_page(page, server, "Summer windows")
    tag = create_tag_in_page(page, server, campaign_id, "window-1")

    # The QR image shown decodes to the tag's URL.
    src = page.locator(f"li.tag[data-tag-id='{tag['id']}'] img.qr").get_attribute("src")
    image = page.request.get(server.base_url + str(src))
    assert image.status == 200
    assert image.headers["content-type"] == "image/png"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(image.body())))
    assert [d.text for d in decoded] == [tag["qr"]]
    assert tag["qr"] == f"http://{urlsplit(server.base_url).netloc}/S/{tag['code']}"
    shot(page, "tags")

    # A scan over HTTP appears in the figures.
    campaign_url = f"{server.base_url}/app/campaigns/{campaign_id}"
    click_id = scan(server, tag["code"])
    wait_for_figure(page, "[data-counter=scans]", "1", campaign_url)
    assert page.locator("[data-counter=revenue]").get_attribute("data-value") == "0"

    # A conversion moves the revenue.
    with api(server, organization) as client:
        response = client.post(
            "/v1/conversions",
            json={
                "click_id": click_id,
                "event": "purchase",
                "value": {"amount_minor": 4990, "currency": "EUR"},
                "external_id": "order-1",
            },
        )
        assert response.status_code == 201, response.text
    wait_for_figure(page, "[data-counter=revenue]", "4990", campaign_url)
    assert page.locator("[data-counter=revenue]").inner_text() == "€49.90"
    assert page.locator("[data-counter=conversions]").inner_text() == "1"

    # The page's figures are the API's for the same campaign and period.
    start = page.locator("#figures").get_attribute("data-from")
    with api(server, organization) as client:
        stats = client.get(f"/v1/campaigns/{campaign_id}/stats", params={"from": start}).json()
    shown = {
        "scans": page.locator("[data-counter=scans]").get_attribute("data-value"),
        "unique_visitors": page.locator("[data-figure=unique_visitors]").get_attribute(
            "data-value"
        ),
        "conversions": page.locator("[data-counter=conversions]").get_attribute("data-value"),
        "revenue": page.locator("[data-counter=revenue]").get_attribute("data-value"),
        "roas": page.locator("[data-figure=roas]").inner_text(),
    }
    assert shown == {
        "scans": str(stats["scans"]),
        "unique_visitors": str(stats["unique_visitors"]),
        "conversions": str(stats["conversions"]),
        "revenue": str(stats["revenue"][0]["amount_minor"]),
        "roas": f"{stats['roas']:.2f}",
    }
    assert shown["scans"] == "1" and shown["roas"] == "0.50"  # €49.90 on a €100 cost
    # ...and the campaigns list shows the same.
    page.goto(server.base_url + "/app/campaigns?period=30d")
    row = page.locator(f"tr[data-campaign-id='{campaign_id}']")
    assert page.locator("#campaigns").get_attribute("data-from") == start
    assert row.locator("[data-figure=scans]").get_attribute("data-value") == str(stats["scans"])
    assert row.locator("[data-figure=conversions]").get_attribute("data-value") == str(
        stats["conversions"]
    )
    assert row.locator("[data-figure=revenue]").inner_text() == "€49.90"
    assert row.locator("[data-figure=roas]").inner_text() == "0.50"
    shot(page, "campaigns")
    page.goto(campaign_url)
    page.locator("#chart canvas").wait_for()
    shot(page, "campaign-desktop")
    assert watch.errors == []
    context.close()


def test_attribution_switcher_changes_the_credited_figures(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "editor")
    context, page, watch = new_page(browser)
    sign_in(page, server, email)
    campaign_id = create_campaign_in_page(page, server, "Metro and windows")
    first = create_tag_in_page(page, server, campaign_id, "metro")
    second = create_tag_in_page(page, server, campaign_id, "window")
    # One visitor (same address and browser, same day) scans the metro poster, then the
    # window, then buys with the window scan's click id.
    scan(server, first["code"], ANDROID_CHROME)
    click_id = scan(server, second["code"], ANDROID_CHROME)
    with api(server, organization) as client:
        response = client.post(
            "/v1/conversions",
            json={
                "click_id": click_id,
                "event": "purchase",
                "value": {"amount_minor": 10000, "currency": "EUR"},
                "external_id": "order-metro",
            },
        )
        assert response.status_code == 201, response.text
    url = f"{server.base_url}/app/campaigns/{campaign_id}"
    wait_for_figure(page, "[data-counter=conversions]", "1", url)

    def credit(tag_id: str) -> str | None:
        cell = page.locator(f"#credited tr[data-tag-id='{tag_id}'] td[data-credit]")
        return cell.get_attribute("data-credit") if cell.count() else None

    assert page.locator("#model").input_value() == "last_touch"
    assert (credit(first["id"]), credit(second["id"])) in ((None, "1.0"), ("0.0", "1.0"))
    page.select_option("#model", "first_touch")  # submits by itself
    page.wait_for_url(re.compile(r".*model=first_touch.*"))
    assert credit(first["id"]) == "1.0"
    assert credit(second["id"]) in (None, "0.0")
    page.select_option("#model", "linear")
    page.wait_for_url(re.compile(r".*model=linear.*"))
    assert (credit(first["id"]), credit(second["id"])) == ("0.5", "0.5")
    shot(page, "attribution-linear")
    assert watch.errors == []
    context.close()


GOOD_CSV = (
    "name,external_id,lat,lon,radius_m,address,timezone\n"
    "Paris Rivoli,PAR-01,48.8606,2.3376,120,1 rue de Rivoli,Europe/Paris\n"
    "Lyon Bellecour,LYS-01,45.7578,4.8320,150,Place Bellecour,Europe/Paris\n"
)
BAD_CSV = (
    "name,external_id,lat,lon,radius_m,address,timezone\n"
    "Lille,LIL-01,50.6365,3.0635,100,,Europe/Paris\n"
    "Nowhere,BAD-01,95.0,2.0,100,,Europe/Paris\n"
    ",BAD-02,45.0,4.0,-5,,Europe/Paris\n"
)


def upload(page: Any, server: Server, name: str, content: str) -> None:
    page.goto(server.base_url + "/app/stores")
    page.set_input_files(
        "#file", files=[{"name": name, "mimeType": "text/csv", "buffer": content.encode()}]
    )
    page.click("form[action='/app/stores/import'] button[type=submit]")
    page.wait_for_load_state()


def test_store_import_row_errors_and_the_map(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "admin")
    context, page, watch = new_page(browser)
    sign_in(page, server, email)
    upload(page, server, "bad.csv", BAD_CSV)
    errors = page.locator("#import-errors")
    assert errors.locator("tr[data-row='2'] td").first.inner_text() == (
        "Nowhere, BAD-01, 95.0, 2.0, 100, , Europe/Paris"
    )
    assert "lat" in errors.locator("tr[data-row='2']").inner_text()
    assert errors.locator("tr[data-row='3']").count() == 1
    assert errors.locator("tr[data-row='1']").count() == 0
    assert page.locator("#stores").count() == 0  # nothing was imported
    shot(page, "stores-import-errors")

    upload(page, server, "stores.csv", GOOD_CSV)
    assert page.locator(".notice[role=status]").inner_text() == "2 store(s) created, 0 updated."
    assert page.locator("#stores tbody tr").count() == 2
    page.locator("#map[data-ready=true]").wait_for()
    assert page.locator("#map path.store-marker").count() == 2
    shot(page, "stores")

    # A tag at a store, a scan with a precise position: the map shows both stores and
    # the heatmap cell.
    campaign_id = create_campaign_in_page(page, server, "Stores map")
    page.goto(f"{server.base_url}/app/campaigns/{campaign_id}/tags")
    page.fill("#label", "rivoli-door")
    page.select_option("#location_id", label="Paris Rivoli")
    page.click("main form.panel button[type=submit]")
    code = page.locator("li.tag", has_text="rivoli-door").get_attribute("data-code")
    click_id = scan(server, str(code))
    posted = httpx.post(
        f"{server.base_url}/s/{click_id}/location",
        json={"lat": 48.8607, "lon": 2.3377, "accuracy_m": 10},
        timeout=10,
    )
    assert posted.status_code == 204, posted.text
    page.goto(f"{server.base_url}/app/campaigns/{campaign_id}")
    page.locator("#map[data-ready=true]").wait_for()
    assert page.locator("#map path.store-marker").count() == 2
    assert page.locator("#map path.geofence").count() == 2
    assert page.locator("#map path.heat-cell").count() == 1
    assert page.locator("#by-store tbody th").first.inner_text() == "Paris Rivoli"
    shot(page, "campaign-map")

    # Tags in bulk, one per store and label (idempotent), an NFC sticker's NDEF hex, and
    # a tag re-pointed elsewhere.
    page.goto(f"{server.base_url}/app/campaigns/{campaign_id}/tags")
    page.fill("#bulk-labels", "door, window")
    page.click("#bulk-form button[type=submit]")
    assert page.locator(".notice[role=status]").inner_text() == "4 tag(s) created."
    page.fill("#bulk-labels", "door, window")
    page.click("#bulk-form button[type=submit]")
    assert page.locator(".notice[role=status]").inner_text() == "0 tag(s) created."
    assert page.locator("li.tag").count() == 5
    page.fill("#label", "sticker")
    page.select_option("#kind", "nfc")
    page.click("main form.panel button[type=submit]")
    sticker = page.locator("li.tag", has_text="sticker")
    ndef_hex = sticker.locator("code.secret").inner_text()
    with api(server, organization) as client:
        expected = client.get(f"/v1/tags/{sticker.get_attribute('data-tag-id')}/ndef").json()
    assert ndef_hex == expected["ndef_hex"]
    door = page.locator("li.tag", has_text="rivoli-door")
    door.locator("input[name=destination_url]").fill("https://shop.example.com/rivoli")
    door.locator("form.repoint button").click()
    page.wait_for_url(re.compile(rf".*/app/campaigns/{campaign_id}/tags$"))
    moved = httpx.get(
        f"{server.base_url}/s/{code}", headers={"user-agent": IPHONE_SAFARI}, timeout=10
    )
    assert moved.headers["location"].startswith("https://shop.example.com/rivoli")
    shot(page, "tags-bulk")
    assert watch.errors == []
    context.close()


def test_live_feed_updates_the_counters_from_the_stream(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """The page's script against the SSE contract (events ``scan`` and ``conversion``,
    JSON data), with a stream served by the test: a bot not counted, a store's name
    shown. The real feed is tested below."""
    email = user(server, organization, browser, "viewer")
    context, page, watch = new_page(browser)
    sign_in(page, server, email)
    with api(server, organization) as client:
        created = client.post(
            "/v1/campaigns",
            json={"name": "Live", "destination_url": "https://shop.example.com/live"},
        ).json()
    body = (
        "retry: 60000\n\n"
        'event: scan\ndata: {"device_type": "mobile", "city": "Lyon", '
        '"location_name": "Lyon Bellecour", "channel": "qr", "is_bot": false}\n\n'
        'event: scan\ndata: {"device_type": "desktop", "is_bot": true}\n\n'
        'event: conversion\ndata: {"event": "purchase", '
        '"value": {"amount_minor": 2500, "currency": "EUR"}}\n\n'
    )
    page.route(
        f"**/app/campaigns/{created['id']}/events",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=body
        ),
    )
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}")
    page.locator("#feed li.feed-conversion").wait_for()
    assert page.locator("[data-counter=scans]").inner_text() == "1"  # the bot is not counted
    assert page.locator("[data-counter=conversions]").inner_text() == "1"
    assert page.locator("[data-counter=revenue]").get_attribute("data-value") == "2500"
    assert page.locator("#feed li.feed-scan").count() == 2
    assert "Lyon Bellecour" in page.locator("#feed li.feed-scan").last.inner_text()
    shot(page, "live-feed")
    assert watch.errors == []
    context.close()


def test_a_scan_and_a_conversion_arrive_over_the_real_feed(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """End to end through the feed service: the page's ``EventSource`` on
    ``/app/campaigns/{id}/events``, a scan made over HTTP, then its conversion, move the
    live list and the counters without a reload. The issue asks for two seconds; the
    wait below is longer only because test machines are shared (speed is not tested
    here: the feed polls at least every second)."""
    email = user(server, organization, browser, "viewer")
    context, page, watch = new_page(browser)
    sign_in(page, server, email)
    with api(server, organization) as client:
        created = client.post(
            "/v1/campaigns",
            json={"name": "Live for real", "destination_url": "https://shop.example.com/live"},
        ).json()
        tag = client.post(f"/v1/campaigns/{created['id']}/tags", json={}).json()
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}")
    status = page.locator("#live-status")
    connected = page.evaluate("JSON.parse(document.getElementById('live').dataset.texts).connected")
    page.wait_for_function(
        "text => document.getElementById('live-status').textContent === text", arg=connected
    )
    assert status.inner_text() == connected
    click_id = scan(server, tag["code"])
    page.locator("#feed li.feed-scan").first.wait_for(timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('[data-counter=scans]').textContent.trim() === '1'",
        timeout=10_000,
    )
    with api(server, organization) as client:
        response = client.post(
            "/v1/conversions",
            json={
                "click_id": click_id,
                "event": "purchase",
                "value": {"amount_minor": 1250, "currency": "EUR"},
                "external_id": "live-order-1",
            },
        )
        assert response.status_code == 201, response.text
    page.locator("#feed li.feed-conversion").first.wait_for(timeout=10_000)
    assert page.locator("[data-counter=conversions]").inner_text() == "1"
    assert page.locator("[data-counter=revenue]").get_attribute("data-value") == "1250"
    shot(page, "live-feed-real")
    assert watch.errors == []
    context.close()


def test_a_phone_signed_into_the_dashboard_scans_as_staff(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """Issue 11: a browser signed into the dashboard that opens a poster's QR URL (the
    upper-case ``/S/`` form, a top-level navigation) carries the installer cookie, so its
    scan is staff's: counted as "Staff scans", not as scans; a customer's scan counts.
    After signing out the same browser is a customer."""
    email = user(server, organization, browser, "viewer")
    context, page, watch = new_page(browser, phone=True)  # a person's browser, not a bot's
    sign_in(page, server, email)
    with api(server, organization) as client:
        created = client.post(
            "/v1/campaigns",
            json={"name": "Staff test", "destination_url": "https://shop.example.com/staff"},
        ).json()
        tag = client.post(f"/v1/campaigns/{created['id']}/tags", json={}).json()
    # The navigation's own request (Chromium's Cookie header) goes to the server; its 302
    # to the shop, unreachable from here, is shown as text instead of followed.
    locations: list[str] = []

    def scan_only(route: Any) -> None:
        answer = route.fetch(max_redirects=0)
        locations.append(answer.headers.get("location", ""))
        route.fulfill(status=200, content_type="text/plain", body="scanned")

    page.route(re.compile(r"/S/[0-9A-Z]+$"), scan_only)
    page.goto(tag["qr_content"])
    assert locations[-1].startswith("https://shop.example.com/staff?")
    scan(server, tag["code"])  # a customer's phone
    campaign_url = f"{server.base_url}/app/campaigns/{created['id']}"
    wait_for_figure(page, "[data-counter=internal_scans]", "1", campaign_url)
    assert page.locator("[data-counter=scans]").get_attribute("data-value") == "1"
    assert page.locator("#internal-scans-help").is_visible()
    shot(page, "staff-scans")

    page.click("header form button")  # sign out
    page.wait_for_url(re.compile(r".*/app/sign-in$"))
    page.goto(tag["qr_content"])
    with api(server, organization) as client:
        figures = client.get(f"/v1/campaigns/{created['id']}/stats").json()
    assert (figures["scans"], figures["bot_scans"], figures["internal_scans"]) == (2, 0, 1)
    assert watch.errors == []
    context.close()


def test_a_viewer_cannot_edit(server: Server, organization: dict[str, Any], browser: Any) -> None:
    email = user(server, organization, browser, "viewer")
    context, page, _ = new_page(browser)
    sign_in(page, server, email)
    assert page.locator("a[href='/app/campaigns/new']").count() == 0
    response = page.goto(server.base_url + "/app/campaigns/new")
    assert response is not None and response.status == 403
    assert page.locator("[role=alert]").inner_text() == "Your role does not allow this change."
    shot(page, "viewer-forbidden")
    # Even with the right CSRF token, a change is refused.
    page.goto(server.base_url + "/app/account")
    csrf = page.locator("input[name=csrf]").first.input_value()
    refused = page.request.post(
        server.base_url + "/app/campaigns",
        form={"csrf": csrf, "name": "Nope", "destination_url": "https://shop.example.com/"},
    )
    assert refused.status == 403
    assert page.request.get(server.base_url + "/app/users").status == 403
    context.close()
    with api(server, organization) as client:
        names = [c["name"] for c in client.get("/v1/campaigns").json()["items"]]
    assert "Nope" not in names


def test_csrf_and_session_expiry(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "admin")
    context, page, _ = new_page(browser)
    sign_in(page, server, email)
    form = {"name": "Forged", "destination_url": "https://shop.example.com/"}
    assert page.request.post(server.base_url + "/app/campaigns", form=form).status == 403
    forged = page.request.post(server.base_url + "/app/campaigns", form={**form, "csrf": "x"})
    assert forged.status == 403
    assert "This form has expired" in forged.text()
    # A session idle for longer than PASSERELLE_DASHBOARD_SESSION_IDLE_S is over.
    with psycopg.connect(libpq_url(server.env["PASSERELLE_DATABASE_URL"])) as conn:
        conn.execute(
            "UPDATE dashboard_sessions SET last_seen_at = now() - interval '9 hours' "
            "WHERE user_id = (SELECT id FROM dashboard_users WHERE email = %s)",
            (email,),
        )
    page.goto(server.base_url + "/app/campaigns")
    page.wait_for_url(re.compile(r".*/app/sign-in\?next=.*expired=true$"))
    assert page.locator("[role=status]").inner_text() == (
        "Your session expired; please sign in again."
    )
    shot(page, "session-expired")
    context.close()
    with api(server, organization) as client:
        names = [c["name"] for c in client.get("/v1/campaigns").json()["items"]]
    assert "Forged" not in names


def test_french_and_phone_width(server: Server, organization: dict[str, Any], browser: Any) -> None:
    email = user(server, organization, browser, "admin")
    context, page, watch = new_page(browser, phone=True, locale="fr-FR")
    page.goto(server.base_url + "/app/sign-in")
    assert page.locator("h1").inner_text() == "Se connecter"
    sign_in(page, server, email)
    with api(server, organization) as client:
        campaigns = client.get("/v1/campaigns").json()["items"]
    summer = next(c for c in campaigns if c["name"] == "Summer windows")
    page.goto(f"{server.base_url}/app/campaigns/{summer['id']}")
    assert page.locator("[data-counter=revenue]").inner_text() == "49,90\u00a0€"
    page.locator("#chart canvas").wait_for()
    page.locator("#map[data-ready=true]").wait_for()
    # Nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "campaign-phone")
    # Switch to English.
    page.click("a[hreflang=en]")
    assert page.locator("h2#chart-title").inner_text() == "Scans and conversions over time"
    assert watch.errors == []
    context.close()


def test_no_serious_accessibility_violation_on_any_page(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "admin")
    context, page, _ = new_page(browser, bypass_csp=True)
    page.goto(server.base_url + "/app/sign-in")
    found = {"/app/sign-in": axe_violations(page)}
    sign_in(page, server, email)
    with api(server, organization) as client:
        campaign = client.get("/v1/campaigns").json()["items"][0]
    pages = [
        "/app/campaigns",
        "/app/campaigns/new",
        f"/app/campaigns/{campaign['id']}",
        f"/app/campaigns/{campaign['id']}/edit",
        f"/app/campaigns/{campaign['id']}/tags",
        "/app/stores",
        "/app/users",
        "/app/keys",
        "/app/account",
    ]
    for path in pages:
        page.goto(server.base_url + path)
        if path in (f"/app/campaigns/{campaign['id']}", "/app/stores"):
            page.locator("#map[data-ready=true]").wait_for()
        if path == f"/app/campaigns/{campaign['id']}":
            page.locator("#chart canvas").wait_for()
        found[path] = axe_violations(page)
    assert {path: v for path, v in found.items() if v} == {}
    context.close()


def test_admin_invites_a_user_and_manages_api_keys(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    email = user(server, organization, browser, "admin")
    context, page, _ = new_page(browser)
    sign_in(page, server, email)
    page.goto(server.base_url + "/app/users")
    page.fill("#email", "invited@acme.example")
    page.select_option("#role", "viewer")
    page.click("main form.panel button[type=submit]")
    link = page.locator("#invite-url").inner_text()
    assert link.startswith(server.base_url + "/app/sign-in/")
    shot(page, "users")
    page.goto(server.base_url + "/app/keys")
    page.fill("#name", "shop backend")
    page.click("main form.panel button[type=submit]")
    secret = page.locator("#new-key").inner_text()
    assert (
        httpx.get(
            server.base_url + "/v1/organization",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        ).status_code
        == 200
    )
    shot(page, "keys")
    page.goto(server.base_url + "/app/keys")  # shown once
    assert page.locator("#new-key").count() == 0
    page.locator("tr", has_text="shop backend").locator("button").click()
    page.wait_for_url(re.compile(r".*/app/keys$"))
    assert (
        httpx.get(
            server.base_url + "/v1/organization",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        ).status_code
        == 401
    )
    context.close()


def download(page: Any, selector: str) -> tuple[str, bytes]:
    """Click ``selector`` (a link or a form's button answering an attachment); the
    suggested file name and the bytes the browser saved."""
    with page.expect_download() as info:
        page.click(selector)
    saved = info.value
    return saved.suggested_filename, Path(saved.path()).read_bytes()


def test_print_downloads_and_the_ndef_copy(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """The tags page's print panel: the campaign's artwork ZIP in each format and the label
    sheets, downloaded by the browser, each QR decoded back to its tag's URL; an NFC
    sticker's NDEF hex copied to the clipboard."""
    email = user(server, organization, browser, "editor")
    context, page, watch = new_page(browser)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    sign_in(page, server, email)
    campaign_id = create_campaign_in_page(page, server, "Print run")
    door = create_tag_in_page(page, server, campaign_id, "door")
    till = create_tag_in_page(page, server, campaign_id, "till")
    page.fill("#label", "sticker")
    page.select_option("#kind", "nfc")
    page.click("main form.panel button[type=submit]")
    page.wait_for_url(re.compile(rf".*/app/campaigns/{campaign_id}/tags$"))
    expected = {door["code"]: door["qr"], till["code"]: till["qr"]}
    labelled = (("door", door), ("till", till))
    base = f"{server.base_url}/app/campaigns/{campaign_id}"

    for fmt in ("png", "svg", "pdf"):
        name, body = download(page, f"#print-zip a[href$='format={fmt}']")
        assert name == f"campaign-{campaign_id}-{fmt}.zip"
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            names = sorted(archive.namelist())
            files = [f"nostore_{label}_{tag['code']}.{fmt}" for label, tag in labelled]
            assert names == sorted([*files, "manifest.csv"])
            for code, content in expected.items():
                artwork = archive.read(next(n for n in names if code in n))
                assert decode_artwork(fmt, artwork).text == content
            manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert [row["kind"] for row in manifest] == ["qr", "qr", "nfc"]
        assert manifest[2]["file"] == ""
        assert manifest[2]["ndef_hex"]
        # The same URL answers the right media type.
        answer = page.request.get(f"{base}/print.zip?format={fmt}")
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["content-disposition"].startswith("attachment;")

    page.select_option("#paper", "Letter")
    page.select_option("#layout", "2x7")
    page.fill("#sheet-caption", "Scan me")
    name, pdf = download(page, "#sheets-form button[type=submit]")
    assert name == f"campaign-{campaign_id}-labels.pdf"
    assert pdf.startswith(b"%PDF-")
    document = pypdfium2.PdfDocument(pdf)
    width, height = document[0].get_size()
    assert (round(width), round(height)) == (612, 792)  # US Letter, points
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(pdf_page_png(pdf))))
    assert sorted(d.text for d in decoded) == sorted(expected.values())
    assert "Scan me" in document[0].get_textpage().get_text_range()
    sheets = page.request.get(f"{base}/sheets.pdf?paper=A4&layout=3x8")
    assert sheets.headers["content-type"] == "application/pdf"
    # A layout too dense to scan is the error page, in words.
    dense = page.request.get(f"{base}/sheets.pdf?layout=10x20")
    assert dense.status == 422
    assert "text/html" in dense.headers["content-type"]

    # The NFC sticker's NDEF message, copied with the button.
    sticker = page.locator("li.tag", has_text="sticker")
    hex_text = sticker.locator("code.secret").inner_text()
    sticker.locator("button.copy").click()
    sticker.locator("button.copy", has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == hex_text
    shot(page, "tags-print")
    assert watch.errors == []
    context.close()


def test_chart_and_map_speak_french(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """Every text the chart and the map draw comes from the page: no English "Time" in the
    French legend, French month names in its date, French zoom buttons."""
    email = user(server, organization, browser, "viewer")
    with api(server, organization) as client:
        created = client.post(
            "/v1/campaigns",
            json={
                "name": "Soldes d'hiver",
                "destination_url": "https://shop.example.com/soldes",
                "timezone": "Europe/Paris",
            },
        ).json()
        tag = client.post(f"/v1/campaigns/{created['id']}/tags", json={}).json()
    scan(server, tag["code"])
    context, page, watch = new_page(browser, locale="fr-FR")
    sign_in(page, server, email)
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}")
    page.locator("#chart[data-ready=true]").wait_for()
    labels = page.locator("#chart .u-legend .u-series .u-label").all_inner_texts()
    assert labels == ["Date", "Scans", "Conversions"]
    # Hover the last point: the legend shows its date in French.
    box = page.locator("#chart .u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    when = page.locator("#chart .u-legend .u-series").first.locator(".u-value").inner_text()
    french_months = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août",
                     "sept.", "oct.", "nov.", "déc.")  # fmt: skip
    assert any(f" {month} " in f" {when} " for month in french_months), when
    page.locator("#map[data-ready=true]").wait_for()
    assert page.locator(".leaflet-control-zoom-in").get_attribute("title") == "Zoom avant"
    assert page.locator(".leaflet-control-zoom-out").get_attribute("title") == "Zoom arrière"
    assert "Time" not in page.locator("#chart").inner_text()
    shot(page, "campaign-chart-french")
    # The hourly chart says "Heure".
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}?interval=hour")
    page.locator("#chart[data-ready=true]").wait_for()
    first = page.locator("#chart .u-legend .u-series .u-label").first.inner_text()
    assert first == "Heure"
    assert watch.errors == []
    context.close()


def test_a_chart_the_service_refuses_says_so(
    server: Server, organization: dict[str, Any], browser: Any
) -> None:
    """A conversion reported 500 days late makes "all time" by hour more than the series'
    10,000 buckets: ``series.json`` answers 422 and the chart says why (in the page's
    language) instead of staying blank."""
    email = user(server, organization, browser, "viewer")
    with api(server, organization) as client:
        created = client.post(
            "/v1/campaigns",
            json={"name": "Long run", "destination_url": "https://shop.example.com/long"},
        ).json()
        tag = client.post(f"/v1/campaigns/{created['id']}/tags", json={}).json()
        click_id = scan(server, tag["code"])
        occurred = dt.datetime.now(dt.UTC) - dt.timedelta(days=500)
        response = client.post(
            "/v1/conversions",
            json={
                "click_id": click_id,
                "event": "purchase",
                "occurred_at": occurred.isoformat(),
                "external_id": "order-late",
            },
        )
        assert response.status_code == 201, response.text
    context, page, watch = new_page(browser, locale="fr-FR")
    sign_in(page, server, email)
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}?period=all&interval=hour")
    page.locator("#chart[data-ready=unavailable]").wait_for()
    assert "Impossible de tracer ce graphique" in page.locator("#chart").inner_text()
    shot(page, "chart-refused")
    # The same campaign by week draws.
    page.goto(f"{server.base_url}/app/campaigns/{created['id']}?period=all&interval=week")
    page.locator("#chart[data-ready=true]").wait_for()
    assert [e for e in watch.errors if "series.json" not in e] == []
    context.close()


def test_an_invitation_e_mailed_from_the_users_page(
    dashboard_db: str,
    server: Server,
    organization: dict[str, Any],
    browser: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second server process with ``PASSERELLE_SMTP_URL`` (a real SMTP server,
    aiosmtpd): the Users page e-mails the invitation (in the admin's language) instead of
    showing it, and the link from the message lets the new user choose a password."""
    email = user(server, organization, browser, "admin")
    with smtp_server() as smtp:
        mailer = Server(dashboard_db, tmp_path_factory.mktemp("mailer-data"))
        mailer.env = {
            **server.env,
            "PASSERELLE_DATA_DIR": str(mailer.data_dir),
            "PASSERELLE_BASE_URL": mailer.base_url,
            "PASSERELLE_SMTP_URL": smtp.url,
            "PASSERELLE_SMTP_FROM": "Passerelle <noreply@acme.example>",
        }
        mailer.start()
        try:
            context, page, watch = new_page(browser, locale="fr-FR")
            sign_in(page, mailer, email)
            page.goto(mailer.base_url + "/app/users")
            page.fill("#email", "mailed@acme.example")
            page.select_option("#role", "editor")
            page.click("main form.panel button[type=submit]")
            assert page.locator("#link-mailed").inner_text() == (
                "Un lien de connexion a été envoyé à mailed@acme.example "
                "(usage unique, valable 24 h)."
            )
            assert page.locator("#invite-url").count() == 0
            shot(page, "users-invitation-mailed")
            [mail] = smtp.received
            assert mail.rcpt_tos == ["mailed@acme.example"]
            assert mail.message["Subject"] == "Votre invitation au tableau de bord Passerelle"
            link = mail.link()
            assert link.startswith(mailer.base_url + "/app/sign-in/")
            assert link not in page.content()
            context.close()
            # The new user follows the e-mailed link in their own browser.
            context, page, _ = new_page(browser)
            accept_link(page, link)
            assert page.locator("h1").inner_text() == "Campaigns"
            context.close()
            assert watch.errors == []
        finally:
            mailer.stop()
