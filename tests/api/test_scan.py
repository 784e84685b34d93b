"""``GET|HEAD /s/{code}``: the public redirect and the scan row it stores.

The in-process ASGI client connects from 203.0.113.77 (see ``tests/conftest.py``); the
scan writer commits before the 302 is sent, so rows are read right after each request.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import served_app
from campaigns.scanning import links
from campaigns.scanning.service import ScanService
from campaigns.services import tags as tag_service
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.user_agents import (
    ANDROID_CHROME,
    BOTS,
    FACEBOOK_ANDROID,
    FACEBOOK_IOS,
    INSTAGRAM_ANDROID,
    INSTAGRAM_IOS,
    IPHONE_SAFARI,
    SAMSUNG_INTERNET,
    SNAPCHAT_IOS,
)

CLIENT_IP = "203.0.113.77"
CLICK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11,}$")


async def scans(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM scans ORDER BY id"))
        return [dict(row) for row in result.mappings()]


def query(location: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(location).query, keep_blank_values=True)


def assert_redirect(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    location: str = response.headers["location"]
    return location


def assert_page(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "location" not in response.headers
    if response.request.method == "GET":
        assert "<html" in response.text


@pytest.fixture
async def client_from() -> AsyncIterator[Any]:
    """Factory of ASGI clients connecting from a given address."""
    opened: list[httpx.AsyncClient] = []

    def make(app: FastAPI, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=served_app(app), client=(ip, 40000))
        c = httpx.AsyncClient(transport=transport, base_url="https://go.example.com")
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()


# -- the redirect ------------------------------------------------------------------------


async def test_scan_redirects_with_utm_and_click_id(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.get(f"/s/{tag['code']}", headers={"User-Agent": IPHONE_SAFARI})
    location = assert_redirect(response)
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "shop.example.com", "/summer")
    pairs = query(location)
    assert pairs[:4] == [
        ("utm_source", "passerelle"),
        ("utm_medium", "qr"),
        ("utm_campaign", campaign["slug"]),
        ("utm_content", "window-1"),
    ]
    assert [key for key, _ in pairs] == [
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "pcid",
    ]
    click_id = dict(pairs)["pcid"]
    assert CLICK_ID_RE.fullmatch(click_id)
    assert len(base64.urlsafe_b64decode(click_id + "=" * (-len(click_id) % 4))) * 8 >= 64
    assert response.content == b""
    rows = await scans(engine)
    assert len(rows) == 1
    assert rows[0]["click_id"] == click_id
    assert rows[0]["destination"] == location


async def test_codes_resolve_in_any_case(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    code = (await make_tag(client, org, campaign["id"]))["code"]
    mixed = "".join(c.lower() if i % 2 else c for i, c in enumerate(code))
    for path in (f"/s/{code}", f"/s/{code.lower()}", f"/s/{mixed}", f"/S/{code}"):
        assert_redirect(await client.get(path))


async def test_crockford_look_alikes_resolve(
    client: httpx.AsyncClient, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "10" + "".join(secrets.choice("23456789ABCDEFGH") for _ in range(6))
    monkeypatch.setattr(tag_service, "new_code", lambda: code)
    campaign = await make_campaign(client, org)
    assert (await make_tag(client, org, campaign["id"]))["code"] == code
    for typed in ("IO" + code[2:], "lo" + code[2:].lower(), "Lo" + code[2:]):
        assert_redirect(await client.get(f"/s/{typed}"))


async def test_destination_query_and_fragment_are_kept_and_its_utm_win(
    client: httpx.AsyncClient, org: Org
) -> None:
    own = "ref=print&utm_source=flyer&flag&q=caf%C3%A9%20cr%C3%A8me"
    campaign = await make_campaign(
        client,
        org,
        destination_url=f"https://shop.example.com/p?{own}#top",
        utm={"source": "poster"},
    )
    tag = await make_tag(client, org, campaign["id"])
    location = assert_redirect(await client.get(f"/s/{tag['code']}"))
    parts = urlsplit(location)
    assert parts.fragment == "top"
    assert parts.query.startswith(own + "&")
    pairs = query(location)
    assert [v for k, v in pairs if k == "utm_source"] == ["flyer"]
    assert ("utm_medium", "qr") in pairs
    assert ("q", "café crème") in pairs


async def test_campaign_utm_source_and_tag_code_as_content(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org, slug="bf-26", utm={"source": "poster"})
    tag = await make_tag(client, org, campaign["id"], label=None)
    pairs = dict(query(assert_redirect(await client.get(f"/s/{tag['code']}"))))
    assert pairs["utm_source"] == "poster"
    assert pairs["utm_campaign"] == "bf-26"
    assert pairs["utm_content"] == tag["code"]
    assert pairs["utm_medium"] == "qr"


async def test_campaign_utm_values_win_over_computed_defaults(
    client: httpx.AsyncClient, org: Org
) -> None:
    utm = {"medium": "print", "campaign": "summer-26", "content": "generic", "term": "shoes"}
    campaign = await make_campaign(client, org, utm=utm)
    labelled = await make_tag(client, org, campaign["id"], label="door-left")
    bare = await make_tag(client, org, campaign["id"], label=None)
    pairs = dict(query(assert_redirect(await client.get(f"/s/{labelled['code']}"))))
    assert pairs["utm_medium"] == "print"
    assert pairs["utm_campaign"] == "summer-26"
    assert pairs["utm_content"] == "door-left"  # the tag's label is more specific
    assert pairs["utm_term"] == "shoes"
    assert pairs["utm_source"] == "passerelle"
    pairs = dict(query(assert_redirect(await client.get(f"/s/{bare['code']}"))))
    assert pairs["utm_content"] == "generic"


async def test_a_foreign_pcid_in_the_destination_is_replaced(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, destination_url="https://shop.example.com/?pcid=x")
    tag = await make_tag(client, org, campaign["id"])
    pairs = query(assert_redirect(await client.get(f"/s/{tag['code']}")))
    assert [v for k, v in pairs if k == "pcid"] == [(await scans(engine))[0]["click_id"]]


async def test_tag_destination_overrides_the_campaigns(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], destination_url="https://shop.example.com/d")
    location = assert_redirect(await client.get(f"/s/{tag['code']}"))
    assert location.startswith("https://shop.example.com/d?")


async def test_non_ascii_destination_is_percent_encoded(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, destination_url="https://shop.example.com/été/日本")
    tag = await make_tag(client, org, campaign["id"], label="vitrine été")
    location = assert_redirect(await client.get(f"/s/{tag['code']}"))
    assert location.startswith("https://shop.example.com/%C3%A9t%C3%A9/%E6%97%A5%E6%9C%AC?")
    assert ("utm_content", "vitrine été") in query(location)
    location.encode("ascii")
    assert (await scans(engine))[0]["destination"] == location


async def test_click_ids_are_unique(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    ids = [
        dict(query(assert_redirect(await client.get(f"/s/{tag['code']}"))))["pcid"]
        for _ in range(25)
    ]
    assert len(set(ids)) == 25
    assert sorted(row["click_id"] for row in await scans(engine)) == sorted(ids)


async def test_campaign_changes_apply_to_the_next_scan(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert_redirect(await client.get(f"/s/{tag['code']}"))
    response = await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"destination_url": "https://shop.example.com/autumn", "utm": {"source": "tv"}},
        headers=org.headers,
    )
    assert response.status_code == 200
    location = assert_redirect(await client.get(f"/s/{tag['code']}"))
    assert location.startswith("https://shop.example.com/autumn?")
    assert ("utm_source", "tv") in query(location)


# -- the stored row ---------------------------------------------------------------------


async def test_scan_row_holds_everything_but_the_full_ip(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = dt.datetime.now(dt.UTC)
    response = await client.get(f"/s/{tag['code']}", headers={"User-Agent": IPHONE_SAFARI})
    after = dt.datetime.now(dt.UTC)
    location = assert_redirect(response)
    rows = await scans(engine)
    assert len(rows) == 1
    row = rows[0]
    assert row["click_id"] == dict(query(location))["pcid"]
    assert (row["organization_id"], row["campaign_id"], row["tag_id"]) == (
        org.id,
        campaign["id"],
        tag["id"],
    )
    assert before <= row["scanned_at"] <= after
    assert (row["channel"], row["method"], row["outcome"]) == ("qr", "GET", "redirect")
    assert row["user_agent"] == IPHONE_SAFARI
    assert (row["device_type"], row["os"], row["browser"], row["is_bot"]) == (
        "mobile",
        "iOS",
        "Mobile Safari",
        False,
    )
    assert str(row["ip_truncated"]) == "203.0.113.0"
    assert isinstance(row["visitor_id"], bytes) and len(row["visitor_id"]) == 16
    # The full address is nowhere in the row, in any form.
    packed = bytes([203, 0, 113, 77])
    for value in row.values():
        assert CLIENT_IP not in str(value)
        assert "113.77" not in str(value)
        if isinstance(value, bytes):
            assert packed not in value
    async with engine.connect() as conn:
        dump = (await conn.execute(text("SELECT s::text FROM scans s"))).scalar_one()
    assert CLIENT_IP not in dump


@pytest.mark.parametrize(
    ("ip", "stored"),
    [
        ("198.51.100.255", "198.51.100.0"),
        ("2001:db8:abcd:12:3456:789a:bcde:f012", "2001:db8:abcd::"),
        ("::ffff:198.51.100.7", "198.51.100.0"),
    ],
)
async def test_ip_is_truncated_to_24_or_48_bits(
    app: FastAPI,
    client: httpx.AsyncClient,
    client_from: Any,
    org: Org,
    engine: AsyncEngine,
    ip: str,
    stored: str,
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert_redirect(await client_from(app, ip).get(f"/s/{tag['code']}"))
    row = (await scans(engine))[0]
    assert str(row["ip_truncated"]) == stored
    async with engine.connect() as conn:
        dump = (await conn.execute(text("SELECT s::text FROM scans s"))).scalar_one()
    assert ip not in dump and ip.split(":")[-1] not in dump


async def test_visitor_id_is_stable_per_visitor_and_day(
    app: FastAPI, client: httpx.AsyncClient, client_from: Any, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    other_campaign = await make_campaign(client, org, name="Other")
    tag = await make_tag(client, org, campaign["id"])
    second_tag = await make_tag(client, org, campaign["id"], label="door")
    other_tag = await make_tag(client, org, other_campaign["id"])
    iphone = {"User-Agent": IPHONE_SAFARI}
    android = {"User-Agent": ANDROID_CHROME}
    neighbour = client_from(app, "203.0.113.78")  # same /24, another person

    await client.get(f"/s/{tag['code']}", headers=iphone)  # 0
    await client.get(f"/s/{tag['code']}", headers=iphone)  # 1 same visitor
    await client.get(f"/s/{second_tag['code']}", headers=iphone)  # 2 same campaign
    await client.get(f"/s/{tag['code']}", headers=android)  # 3 other UA
    await neighbour.get(f"/s/{tag['code']}", headers=iphone)  # 4 other IP
    await client.get(f"/s/{other_tag['code']}", headers=iphone)  # 5 other campaign, same org
    ids = [row["visitor_id"] for row in await scans(engine)]
    assert len(ids) == 6
    # Keyed per organization: one person's scans of two campaigns share the id.
    assert ids[0] == ids[1] == ids[2] == ids[5]
    assert len({ids[0], ids[3], ids[4]}) == 3
    # Keyed: not a plain hash anyone could recompute from (org, IP, UA).
    message = f"{org.id}\x00{CLIENT_IP}\x00{IPHONE_SAFARI}".encode()
    assert ids[0] != hashlib.sha256(message).digest()[:16]


def test_visitor_salt_rotates_daily(app: FastAPI) -> None:
    visitors = app.state.scans.visitors
    today = dt.datetime.now(dt.UTC).date()

    def visitor(day: dt.date) -> bytes:
        return bytes(
            visitors.visitor_id(
                organization_id=1, client_key=CLIENT_IP, user_agent=IPHONE_SAFARI, day=day
            )
        )

    # Today's and tomorrow's salts exist ahead; older ones are gone.
    assert visitors.days == [today, today + dt.timedelta(days=1)]
    first = visitor(today)
    assert first == visitor(today)
    assert first != visitor(today + dt.timedelta(days=1))
    assert first != visitor(today - dt.timedelta(days=1))


@pytest.mark.parametrize(
    ("user_agent", "os", "browser"),
    [
        pytest.param(IPHONE_SAFARI, "iOS", "Mobile Safari", id="iphone-safari"),
        pytest.param(ANDROID_CHROME, "Android", "Chrome Mobile", id="android-chrome"),
        pytest.param(SAMSUNG_INTERNET, "Android", "Samsung Internet", id="samsung-internet"),
        pytest.param(INSTAGRAM_IOS, "iOS", "Instagram", id="instagram-ios"),
        pytest.param(INSTAGRAM_ANDROID, "Android", "Instagram", id="instagram-android"),
        pytest.param(FACEBOOK_IOS, "iOS", "Facebook", id="facebook-ios"),
        pytest.param(FACEBOOK_ANDROID, "Android", "Facebook", id="facebook-android"),
        pytest.param(SNAPCHAT_IOS, "iOS", "Snapchat", id="snapchat-ios"),
    ],
)
async def test_phones_are_stored_as_human_scans(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    user_agent: str,
    os: str,
    browser: str,
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    assert_redirect(await client.get(f"/s/{tag['code']}", headers={"User-Agent": user_agent}))
    row = (await scans(engine))[0]
    assert (row["is_bot"], row["bot_reason"], row["burst"]) == (False, None, False)
    assert (row["device_type"], row["os"], row["browser"]) == ("mobile", os, browser)
    assert row["user_agent"] == user_agent


@pytest.mark.parametrize("user_agent", [*BOTS, pytest.param(None, id="no-user-agent")])
async def test_link_previewers_are_redirected_but_stored_as_bots(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, user_agent: str | None
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    headers = {"User-Agent": user_agent} if user_agent else {}
    if user_agent is None:
        client.headers.pop("User-Agent", None)
    assert_redirect(await client.get(f"/s/{tag['code']}", headers=headers))
    row = (await scans(engine))[0]
    assert row["is_bot"] is True
    assert row["device_type"] in ("bot", "unknown")


async def test_head_redirects_but_is_not_a_human_scan(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.head(f"/s/{tag['code']}", headers={"User-Agent": IPHONE_SAFARI})
    location = assert_redirect(response)
    assert location.startswith("https://shop.example.com/summer?")
    rows = await scans(engine)
    assert len(rows) == 1
    assert (rows[0]["method"], rows[0]["is_bot"], rows[0]["bot_reason"]) == ("HEAD", True, "head")
    assert rows[0]["click_id"] == dict(query(location))["pcid"]


# -- no redirect ------------------------------------------------------------------------


async def test_unknown_code_is_a_404_page(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    await make_tag(client, org, campaign["id"])
    unknown = links.new_code()
    assert_page(await client.get(f"/s/{unknown}"), 404)
    assert_page(await client.head(f"/s/{unknown}"), 404)
    assert await scans(engine) == []


async def test_disabled_tag_is_a_404_page(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    await client.patch(f"/v1/tags/{tag['id']}", json={"status": "disabled"}, headers=org.headers)
    assert_page(await client.get(f"/s/{tag['code']}"), 404)
    assert await scans(engine) == []


MALFORMED = [
    pytest.param("ABC", id="short"),
    pytest.param("ABCDEFGHJ", id="nine"),
    pytest.param("A" * 4000, id="very-long"),
    pytest.param("ABCDEFGU", id="u-not-base32"),
    pytest.param("ABCD-EFG", id="hyphen"),
    pytest.param("ABCD_EFG", id="underscore"),
    pytest.param("ABCD.EFG", id="dot"),
    pytest.param("ABCD%20EF", id="space"),
    pytest.param("ABCDEF%00G", id="nul"),
    pytest.param("ÀBCDEFGH", id="latin-accent"),
    pytest.param("ＡＢＣＤＥＦＧＨ", id="fullwidth"),
    pytest.param("ABCDEFG\u0131", id="dotless-i"),
    pytest.param("🎉🎉🎉🎉🎉🎉🎉🎉", id="emoji"),
    pytest.param("'%20OR%201=1--", id="sql-looking"),
    pytest.param("%3Cscript%3E", id="script"),
]


@pytest.mark.parametrize("code", MALFORMED)
async def test_malformed_code_is_a_404_page_without_lookup_or_database(
    app: FastAPI,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
) -> None:
    service: ScanService = app.state.scans
    touched: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        touched.append("scan runtime")
        raise AssertionError("a malformed code reached the lookup or the writer")

    monkeypatch.setattr(service.cache, "lookup", refuse)
    monkeypatch.setattr(service.writer, "submit", refuse)
    monkeypatch.setattr(service.runtime, "_connect", refuse)

    def count(*args: Any) -> None:
        touched.append("sql")

    sync_engine = app.state.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        for method in ("GET", "HEAD"):
            assert_page(await client.request(method, f"/s/{code}"), 404)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert touched == []


async def test_campaign_not_started_redirects_to_its_fallback(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    now = dt.datetime.now(dt.UTC)
    campaign = await make_campaign(
        client,
        org,
        starts_at=(now + dt.timedelta(days=1)).isoformat(),
        fallback_url="https://shop.example.com/soon?x=1",
    )
    tag = await make_tag(client, org, campaign["id"])
    location = assert_redirect(await client.get(f"/s/{tag['code']}"))
    assert location.startswith("https://shop.example.com/soon?x=1&")
    rows = await scans(engine)
    assert [row["outcome"] for row in rows] == ["fallback"]
    assert dict(query(location))["pcid"] == rows[0]["click_id"]


async def test_campaign_ended_redirects_to_its_fallback(
    client: httpx.AsyncClient, org: Org
) -> None:
    now = dt.datetime.now(dt.UTC)
    campaign = await make_campaign(
        client,
        org,
        starts_at=(now - dt.timedelta(days=10)).isoformat(),
        ends_at=(now - dt.timedelta(days=1)).isoformat(),
        fallback_url="https://shop.example.com/over",
    )
    tag = await make_tag(client, org, campaign["id"])
    assert assert_redirect(await client.get(f"/s/{tag['code']}")).startswith(
        "https://shop.example.com/over?"
    )


@pytest.mark.parametrize("when", ["not-started", "ended", "archived"])
async def test_campaign_off_schedule_without_fallback_is_a_410_page(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, when: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    overrides: dict[str, Any] = {
        "not-started": {"starts_at": (now + dt.timedelta(hours=1)).isoformat()},
        "ended": {
            "ends_at": (now - dt.timedelta(seconds=1)).isoformat(),
            "starts_at": (now - dt.timedelta(days=1)).isoformat(),
        },
        "archived": {},
    }[when]
    campaign = await make_campaign(client, org, **overrides)
    tag = await make_tag(client, org, campaign["id"])
    if when == "archived":
        await client.patch(
            f"/v1/campaigns/{campaign['id']}", json={"archived": True}, headers=org.headers
        )
    assert_page(await client.get(f"/s/{tag['code']}"), 410)
    assert await scans(engine) == []


async def test_scan_of_a_campaign_that_starts_now_is_live_again(
    client: httpx.AsyncClient, org: Org
) -> None:
    now = dt.datetime.now(dt.UTC)
    campaign = await make_campaign(client, org, starts_at=(now + dt.timedelta(days=1)).isoformat())
    tag = await make_tag(client, org, campaign["id"])
    assert_page(await client.get(f"/s/{tag['code']}"), 410)
    await client.patch(
        f"/v1/campaigns/{campaign['id']}",
        json={"starts_at": (now - dt.timedelta(minutes=1)).isoformat()},
        headers=org.headers,
    )
    assert_redirect(await client.get(f"/s/{tag['code']}"))


async def test_redirect_is_never_permanent_and_sets_no_cookie(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    response = await client.get(f"/s/{tag['code']}")
    assert response.status_code == 302
    assert "set-cookie" not in response.headers
    assert response.headers.get("referrer-policy") == "no-referrer"


@pytest.mark.parametrize(
    ("accept_language", "lang", "title"),
    [
        (None, "en", "Code not found"),
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr", "Code introuvable"),
        ("fr-BE", "fr", "Code introuvable"),
        ("de-DE,en;q=0.5,fr;q=0.4", "en", "Code not found"),
        ("en-GB,fr;q=0.9", "en", "Code not found"),
        ("x" * 5000, "en", "Code not found"),
    ],
)
async def test_the_404_page_speaks_the_phones_language(
    client: httpx.AsyncClient, accept_language: str | None, lang: str, title: str
) -> None:
    headers = {"accept-language": accept_language} if accept_language else {}
    response = await client.get(f"/s/{links.new_code()}", headers=headers)
    assert_page(response, 404)
    assert f'<html lang="{lang}">' in response.text
    assert f"<h1>{title}</h1>" in response.text
    assert response.headers["content-language"] == lang
    assert response.headers["vary"] == "Accept-Language"


async def test_the_410_page_in_french(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"archived": True}, headers=org.headers
    )
    response = await client.get(f"/s/{tag['code']}", headers={"accept-language": "fr"})
    assert_page(response, 410)
    assert "<h1>Cette offre n&#x27;est pas disponible</h1>" in response.text
