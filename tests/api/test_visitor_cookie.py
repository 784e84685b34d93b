"""The first-party visitor cookie on the short-link paths (issue 9, "Visitor journeys"):
its attributes, never extended, garbage replaced, off by default, the ``ask`` consent
form, HEAD, bots, NFC taps, and a journey linked across days and campaigns."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.models import utcnow
from campaigns.scanning.cookies import CookieHeaders, parse_cookie_id, read_cookies
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.journeys import convert, eur
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.user_agents import FACEBOOK_PREVIEW, IPHONE_SAFARI

#: Every attribute after the value, on an https base URL (the test settings').
ATTRIBUTES = "; Max-Age=33955200; Path=/; HttpOnly; SameSite=Lax; Secure"
REFUSAL = "passerelle_consent=no; Max-Age=15724800; Path=/; HttpOnly; SameSite=Lax; Secure"


async def enable(client: httpx.AsyncClient, org: Org, consent: str = "organization") -> None:
    response = await client.patch(
        "/v1/organization",
        json={"visitor_cookie": True, "visitor_cookie_consent": consent},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text


async def scan(
    client: httpx.AsyncClient,
    path: str,
    *,
    cookie: str | None = None,
    method: str = "GET",
    agent: str = IPHONE_SAFARI,
) -> httpx.Response:
    client.cookies.clear()  # only the Cookie header given here is sent
    headers = {"User-Agent": agent}
    if cookie is not None:
        headers["Cookie"] = cookie
    return await client.request(method, path, headers=headers)


async def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """``(click_id, cookie_id, channel)`` of every scan, in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT click_id, cookie_id, channel FROM scans ORDER BY id")
        )
        return [tuple(row) for row in rows]


def new_cookie(response: httpx.Response) -> uuid.UUID:
    """The visitor id the response sets (exactly one Set-Cookie, every attribute)."""
    (value,) = response.headers.get_list("set-cookie")
    match = re.fullmatch(r"passerelle_vid=([0-9a-f-]{36})" + re.escape(ATTRIBUTES), value)
    assert match is not None, value
    cookie_id = uuid.UUID(match[1])
    assert cookie_id.version == 4
    return cookie_id


@pytest.fixture
async def code(client: httpx.AsyncClient, org: Org) -> str:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    return str(tag["code"])


async def test_off_by_default_no_cookie_is_set_nor_read(
    client: httpx.AsyncClient, code: str, engine: AsyncEngine
) -> None:
    response = await scan(client, f"/s/{code}", cookie=f"passerelle_vid={uuid.uuid4()}")
    assert response.status_code == 302
    assert "set-cookie" not in response.headers
    assert [row[1] for row in await stored(engine)] == [None]


async def test_the_cookie_is_set_with_every_attribute_and_stored_on_the_scan(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine
) -> None:
    await enable(client, org)
    response = await scan(client, f"/s/{code}")
    assert response.status_code == 302
    assert response.headers["location"].startswith("https://shop.example.com/summer")
    cookie_id = new_cookie(response)
    ((_, stored_id, channel),) = await stored(engine)
    assert (stored_id, channel) == (cookie_id, "qr")


async def test_the_cookie_is_not_extended_by_later_scans(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine
) -> None:
    await enable(client, org)
    cookie_id = new_cookie(await scan(client, f"/s/{code}"))
    for path in (f"/s/{code}", f"/S/{code}"):
        again = await scan(client, path, cookie=f"other=1; passerelle_vid={cookie_id}; x=y")
        assert again.status_code == 302
        assert "set-cookie" not in again.headers
    assert [row[1] for row in await stored(engine)] == [cookie_id] * 3


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        str(uuid.uuid4()).upper(),  # not the canonical form we set
        str(uuid.uuid1()),  # not a version 4 UUID
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()).replace("-", ""),
        "x" * 4000,
        "'; DROP TABLE scans; --",
    ],
    ids=["word", "empty", "upper", "v1", "braces", "hex", "long", "sql"],
)
async def test_an_invalid_cookie_is_ignored_and_replaced(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine, value: str
) -> None:
    await enable(client, org)
    response = await scan(client, f"/s/{code}", cookie=f"passerelle_vid={value}")
    assert response.status_code == 302
    cookie_id = new_cookie(response)
    assert [row[1] for row in await stored(engine)] == [cookie_id]


async def test_head_and_bots_get_no_cookie_but_a_valid_one_is_read(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine
) -> None:
    await enable(client, org)
    head = await scan(client, f"/s/{code}", method="HEAD")
    preview = await scan(client, f"/s/{code}", agent=FACEBOOK_PREVIEW)
    for response in (head, preview):
        assert response.status_code == 302
        assert "set-cookie" not in response.headers
    known = uuid.uuid4()
    carried = await scan(client, f"/s/{code}", method="HEAD", cookie=f"passerelle_vid={known}")
    assert "set-cookie" not in carried.headers
    assert [row[1] for row in await stored(engine)] == [None, None, known]


async def test_nfc_taps_get_the_cookie(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await enable(client, org)
    campaign = await make_campaign(client, org)
    device = Ntag424.random()
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        nfc={
            "uid": device.uid.hex().upper(),
            "sdm_meta_read_key": device.meta_read_key.hex().upper(),
            "sdm_file_read_key": device.file_read_key.hex().upper(),
        },
    )
    e, c = device.tap()
    response = await scan(client, f"/n/{tag['code']}?e={e}&c={c}")
    assert response.status_code == 302
    cookie_id = new_cookie(response)
    e, c = device.tap()
    again = await scan(
        client, f"/n/{tag['code']}?e={e}&c={c}", cookie=f"passerelle_vid={cookie_id}"
    )
    assert again.status_code == 302 and "set-cookie" not in again.headers
    assert [(row[1], row[2]) for row in await stored(engine)] == [(cookie_id, "nfc")] * 2


def test_secure_only_on_an_https_base_url() -> None:
    cookie_id = uuid.UUID("6f1c2a5e-8d4b-4f7a-9c3e-2b1d0a9f8e7d")
    assert CookieHeaders(secure=False).visitor(cookie_id) == (
        f"passerelle_vid={cookie_id}; Max-Age=33955200; Path=/; HttpOnly; SameSite=Lax"
    )
    assert (
        CookieHeaders(secure=True).visitor(cookie_id) == f"passerelle_vid={cookie_id}{ATTRIBUTES}"
    )
    assert CookieHeaders(secure=True).refusal == REFUSAL
    assert 33955200 == 393 * 86400  # 13 months at most, from any day


def test_reading_cookies() -> None:
    cid = "6f1c2a5e-8d4b-4f7a-9c3e-2b1d0a9f8e7d"
    assert read_cookies(None) == (None, False)
    assert read_cookies(f' a=1 ; passerelle_vid="{cid}"') == (uuid.UUID(cid), False)
    assert read_cookies("passerelle_consent=no") == (None, True)
    assert read_cookies("passerelle_consent=yes;passerelle_vid=x") == (None, False)
    # The first occurrence decides, as for the browser's most specific cookie.
    assert read_cookies(f"passerelle_vid=bad; passerelle_vid={cid}") == (None, False)
    assert parse_cookie_id(cid) == uuid.UUID(cid)


# -- visitor_cookie_consent = ask ------------------------------------------------------------


def consent_form(html: str) -> tuple[str, dict[str, str]]:
    """The form's action and hidden fields."""
    action = re.search(r'<form method="post" action="([^"]+)">', html)
    assert action is not None
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))
    return unescape(action[1]), {k: unescape(v) for k, v in fields.items()}


async def answer(
    client: httpx.AsyncClient, action: str, fields: dict[str, str], value: str
) -> httpx.Response:
    client.cookies.clear()
    return await client.post(action, data={**fields, "answer": value})


async def test_ask_shows_the_question_and_sets_the_cookie_only_on_yes(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine
) -> None:
    await enable(client, org, "ask")
    page = await scan(client, f"/s/{code}")
    assert page.status_code == 200
    assert "set-cookie" not in page.headers
    assert "form-action 'self' https://shop.example.com;" in page.headers["content-security-policy"]
    ((click_id, stored_id, _),) = await stored(engine)
    assert stored_id is None  # the scan is stored before the answer, without a cookie
    action, fields = consent_form(page.text)
    assert action == f"/s/{click_id}/consent"
    assert fields["next"].startswith("https://shop.example.com/summer?")
    assert f"pcid={click_id}" in fields["next"]

    yes = await answer(client, action, fields, "yes")
    assert yes.status_code == 303
    assert yes.headers["location"] == fields["next"]
    cookie_id = new_cookie(yes)
    async with engine.connect() as conn:
        consent = (
            await conn.execute(
                text("SELECT click_id, organization_id, cookie_id FROM visitor_cookie_consents")
            )
        ).all()
    assert [tuple(row) for row in consent] == [(click_id, org.id, cookie_id)]
    # Sent twice (a double click): the same id.
    assert new_cookie(await answer(client, action, fields, "yes")) == cookie_id

    # The next scan carries it: a plain redirect, no page, no new cookie.
    later = await scan(client, f"/s/{code}", cookie=f"passerelle_vid={cookie_id}")
    assert later.status_code == 302 and "set-cookie" not in later.headers
    assert [row[1] for row in await stored(engine)] == [None, cookie_id]


async def test_ask_no_is_remembered_and_sets_no_visitor_cookie(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine
) -> None:
    await enable(client, org, "ask")
    page = await scan(client, f"/s/{code}")
    action, fields = consent_form(page.text)
    no = await answer(client, action, fields, "no")
    assert no.status_code == 303
    assert no.headers["location"] == fields["next"]
    assert no.headers.get_list("set-cookie") == [REFUSAL]
    assert await table_snapshot(engine, "visitor_cookie_consents") == {
        "visitor_cookie_consents": []
    }
    # Not asked again: a redirect without any cookie.
    later = await scan(client, f"/s/{code}", cookie="passerelle_consent=no")
    assert later.status_code == 302 and "set-cookie" not in later.headers
    assert [row[1] for row in await stored(engine)] == [None, None]


async def test_ask_is_not_shown_to_head_nor_bots(
    client: httpx.AsyncClient, org: Org, code: str
) -> None:
    await enable(client, org, "ask")
    for response in (
        await scan(client, f"/s/{code}", method="HEAD"),
        await scan(client, f"/s/{code}", agent=FACEBOOK_PREVIEW),
    ):
        assert response.status_code == 302 and "set-cookie" not in response.headers


@pytest.mark.parametrize("tamper", ["token", "next", "click_id", "answer"])
async def test_a_forged_answer_changes_nothing(
    client: httpx.AsyncClient, org: Org, code: str, engine: AsyncEngine, tamper: str
) -> None:
    await enable(client, org, "ask")
    page = await scan(client, f"/s/{code}")
    action, fields = consent_form(page.text)
    value = "yes"
    if tamper == "token":
        fields["t"] = fields["t"][:-2] + "AA"
    elif tamper == "next":
        fields["next"] = "https://evil.example.net/"
    elif tamper == "click_id":
        action = action.replace("/s/", "/s/x", 1)
    else:
        value = "maybe"
    response = await answer(client, action, fields, value)
    expected = (422, "validation_error") if tamper == "answer" else (404, "click_not_found")
    assert (response.status_code, response.json()["code"]) == expected
    assert "set-cookie" not in response.headers
    assert await table_snapshot(engine, "visitor_cookie_consents") == {
        "visitor_cookie_consents": []
    }


# -- journeys ------------------------------------------------------------------------------


async def report(client: httpx.AsyncClient, org: Org, campaign_id: int) -> dict[str, Any]:
    response = await client.get(
        f"/v1/campaigns/{campaign_id}/attribution",
        params={"model": "linear"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def move_scan(engine: AsyncEngine, click_id: str, at: dt.datetime) -> None:
    """Stand-in for the calendar: the scan happened at ``at``."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE scans SET scanned_at = :at WHERE click_id = :c"), {"at": at, "c": click_id}
        )


@pytest.mark.parametrize("consent", ["organization", "ask"])
async def test_a_journey_crosses_days_and_campaigns_with_the_cookie(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, consent: str
) -> None:
    await enable(client, org, consent)
    metro = await make_campaign(client, org, name="Metro")
    window = await make_campaign(client, org, name="Windows")
    poster = await make_tag(client, org, metro["id"], label="poster")
    shop = await make_tag(client, org, window["id"], label="window")

    first = await scan(client, f"/s/{poster['code']}")
    if consent == "ask":  # the first scan shows the question; the visitor says yes
        action, fields = consent_form(first.text)
        cookie_id = new_cookie(await answer(client, action, fields, "yes"))
    else:
        cookie_id = new_cookie(first)
    second = await scan(client, f"/s/{shop['code']}", cookie=f"passerelle_vid={cookie_id}")
    assert second.status_code == 302
    (first_click, _, _), (second_click, second_cookie, _) = await stored(engine)
    assert second_cookie == cookie_id
    now = utcnow()
    await move_scan(engine, first_click, now - dt.timedelta(days=3))  # Monday's poster
    await move_scan(engine, second_click, now - dt.timedelta(hours=1))  # Thursday's window
    await convert(client, org, second_click, "order-1", now, eur(10000))

    for campaign, tag in ((metro, poster), (window, shop)):
        data = await report(client, org, campaign["id"])
        assert data["rows"] == [{"tag_id": tag["id"], "conversions": 0.5, "revenue": [eur(5000)]}]


async def test_the_cookie_rides_on_the_location_page_and_the_tap_again_page(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await enable(client, org)
    asking = await make_campaign(client, org, precise_location="ask")
    tag = await make_tag(client, org, asking["id"], placement=None)
    page = await scan(client, f"/s/{tag['code']}")
    assert page.status_code == 200 and "navigator.geolocation" in page.text
    first = new_cookie(page)
    # A tag of a blocking campaign whose SUN message fails: 403, the cookie all the same.
    blocking = await make_campaign(client, org, slug="blocking", nfc_invalid_tap="block")
    device = Ntag424.random()
    sun = await make_tag(
        client,
        org,
        blocking["id"],
        kind="nfc_sun",
        nfc={
            "uid": device.uid.hex().upper(),
            "sdm_meta_read_key": device.meta_read_key.hex().upper(),
            "sdm_file_read_key": device.file_read_key.hex().upper(),
        },
    )
    blocked = await scan(client, f"/n/{sun['code']}?e={'0' * 32}&c={'0' * 16}")
    assert blocked.status_code == 403
    second = new_cookie(blocked)
    assert [row[1] for row in await stored(engine)] == [first, second]


async def test_unique_visitors_still_count_daily_visitor_ids(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await enable(client, org)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    # One phone (same address and agent, same day), its cookie cleared in between: two
    # cookies, one daily visitor.
    ids = [new_cookie(await scan(client, f"/s/{tag['code']}")) for _ in range(2)]
    assert ids[0] != ids[1]
    stats = await client.get(f"/v1/campaigns/{campaign['id']}/stats", headers=org.headers)
    assert (stats.json()["scans"], stats.json()["unique_visitors"]) == (2, 1)


async def test_a_setting_changed_elsewhere_reaches_the_scan_path_by_notify(
    app: Any, client: httpx.AsyncClient, org: Org
) -> None:
    cookies = app.state.scans.cookies
    assert cookies.consent_mode(org.id) is None
    async with engine_of(app).begin() as conn:  # another process's write
        await conn.execute(
            text(
                "UPDATE organizations SET visitor_cookie = true, visitor_cookie_consent = 'ask' "
                "WHERE id = :id"
            ),
            {"id": org.id},
        )
    for _ in range(100):
        if cookies.consent_mode(org.id) == "ask":
            break
        await asyncio.sleep(0.05)
    assert cookies.consent_mode(org.id) == "ask"


def engine_of(app: Any) -> Any:
    return app.state.engine
