"""Internal scans (issue 11): a phone signed into the dashboard scans as staff. Its scans
are stored with ``internal: true``, left out of every figure and counted apart as
``internal_scans``. Units of the token and the step: tests/scanning/test_internal.py."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.scanning.installers import INSTALLER_COOKIE, installer_token
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.dashboard import csrf_of, make_user, sign_in
from tests.fixtures.journeys import convert, eur, insert_scan
from tests.fixtures.user_agents import IPHONE_SAFARI

PHONE = {"User-Agent": IPHONE_SAFARI}
HOUR = dt.timedelta(hours=1)


async def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """``(click_id, internal)`` of every scan, in id order."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT click_id, internal FROM scans ORDER BY id"))
        return [tuple(row) for row in rows]


async def stats(client: httpx.AsyncClient, org: Org, campaign_id: int) -> dict[str, Any]:
    response = await client.get(f"/v1/campaigns/{campaign_id}/stats", headers=org.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def installer_set_cookie(response: httpx.Response) -> str:
    return next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(f"{INSTALLER_COOKIE}=")
    )


@pytest.fixture
async def poster(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    """A tag of a campaign of ``org`` (its ``campaign_id`` included)."""
    campaign = await make_campaign(client, org)
    return await make_tag(client, org, campaign["id"])


async def test_a_phone_signed_into_the_dashboard_scans_as_staff(
    client: httpx.AsyncClient,
    org: Org,
    poster: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    await make_user(sessionmaker, org, "installer@acme.example", "viewer")
    signed = await sign_in(client, "installer@acme.example")
    assert signed.status_code == 303
    cookie = installer_set_cookie(signed)
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    lifetime = min(settings.dashboard_session_idle_s, 86_400)
    assert attributes == {
        "httponly",
        "path=/",
        "samesite=lax",
        "secure",
        f"max-age={lifetime}",
    } | {a for a in attributes if a.startswith("expires=")}

    # The session cookie (Path=/app) is not sent to /s/; the installer cookie is, under
    # every prefix and case (QR codes upper-case the path).
    campaign_id = poster["campaign_id"]
    assert (await client.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    assert (await client.get(f"/S/{poster['code'].upper()}", headers=PHONE)).status_code == 302
    assert [internal for _, internal in await stored(engine)] == [True, True]

    figures = await stats(client, org, campaign_id)
    assert (figures["scans"], figures["unique_visitors"], figures["internal_scans"]) == (0, 0, 2)
    assert figures["bot_scans"] == figures["burst_scans"] == 0
    assert figures["breakdowns"]["channel"] == []
    assert [(t["scans"], t["internal_scans"]) for t in figures["by_tag"]] == [(0, 2)]

    # A customer's phone (no cookies at all) scans the same poster.
    customer = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with customer:
        assert (await customer.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    assert [internal for _, internal in await stored(engine)] == [True, True, False]
    figures = await stats(client, org, campaign_id)
    assert (figures["scans"], figures["unique_visitors"], figures["internal_scans"]) == (1, 1, 2)
    assert [(row["key"], row["scans"]) for row in figures["breakdowns"]["channel"]] == [("qr", 1)]

    # The scans listing shows the flag; the stores report and the CSV leave them out.
    listing = await client.get(f"/v1/campaigns/{campaign_id}/scans", headers=org.headers)
    assert [scan["internal"] for scan in listing.json()["items"]] == [False, True, True]
    by_store = await client.get(f"/v1/campaigns/{campaign_id}/stats/locations", headers=org.headers)
    assert [row["scans"] for row in by_store.json()["rows"]] == [1]
    csv = (await client.get(f"/v1/campaigns/{campaign_id}/stats.csv", headers=org.headers)).text
    header, _tag, total = csv.splitlines()
    columns = header.split(",")
    assert dict(zip(columns, total.split(","), strict=False))["internal_scans"] == "2"
    assert dict(zip(columns, total.split(","), strict=False))["scans"] == "1"

    # The campaign page shows them apart and keeps the installer mark alive.
    page = await client.get(f"/app/campaigns/{campaign_id}")
    assert page.status_code == 200
    assert 'data-counter="internal_scans" data-value="2"' in page.text
    assert 'data-counter="scans" data-value="1"' in page.text
    assert installer_set_cookie(page)


async def test_signing_out_ends_the_installer_mark(
    client: httpx.AsyncClient,
    org: Org,
    poster: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    await make_user(sessionmaker, org, "installer@acme.example", "editor")
    await sign_in(client, "installer@acme.example")
    page = await client.get("/app/campaigns")
    out = await client.post("/app/sign-out", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    cleared = installer_set_cookie(out)
    assert cleared.startswith(f'{INSTALLER_COOKIE}="";') and "max-age=0" in cleared.lower()
    assert "path=/;" in cleared.lower() + ";"
    assert INSTALLER_COOKIE not in client.cookies
    assert (await client.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    assert [internal for _, internal in await stored(engine)] == [False]


async def test_another_organizations_forged_or_expired_tokens_scan_as_customers(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    poster: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    # Signed into another organization's dashboard: a customer of this one.
    await make_user(sessionmaker, other_org, "someone@globex.example", "admin")
    assert (await sign_in(client, "someone@globex.example")).status_code == 303
    assert INSTALLER_COOKIE in client.cookies
    assert (await client.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    client.cookies.clear()

    now = dt.datetime.now(dt.UTC)
    valid = installer_token(
        settings.keyring, organization_id=org.id, user_id=1, expires_at=now + HOUR
    )
    head, _, mac = valid.rpartition(".")
    tokens = [
        installer_token(settings.keyring, organization_id=org.id, user_id=1, expires_at=now),
        installer_token(
            "another service's key" * 2, organization_id=org.id, user_id=1, expires_at=now + HOUR
        ),
        f"{head}0.{mac}",
        "garbage",
    ]
    for token in tokens:
        response = await client.get(
            f"/s/{poster['code']}", headers={**PHONE, "Cookie": f"{INSTALLER_COOKIE}={token}"}
        )
        assert response.status_code == 302
    # Anonymous.
    assert (await client.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    assert [internal for _, internal in await stored(engine)] == [False] * 6
    # The same request with the valid token is staff's.
    await client.get(
        f"/s/{poster['code']}", headers={**PHONE, "Cookie": f"a=b; {INSTALLER_COOKIE}={valid}"}
    )
    assert [internal for _, internal in await stored(engine)] == [False] * 6 + [True]
    figures = await stats(client, org, poster["campaign_id"])
    assert (figures["scans"], figures["internal_scans"]) == (6, 1)


async def test_attribution_and_crediting_ignore_internal_scans(
    client: httpx.AsyncClient, org: Org, poster: dict[str, Any], engine: AsyncEngine
) -> None:
    """Visitor A: a staff scan of t1 at 08:00, then a customer scan of t2 at 12:00 (the
    click of C1): C1's journey is t2 alone. C2's click id is the staff scan: C2 is not
    credited and is unattributed."""
    campaign_id = poster["campaign_id"]
    t2 = await make_tag(client, org, campaign_id, label="window-2")
    d0 = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(hour=0, minute=0)
    visitor, cookie = b"A" * 16, uuid.uuid4()
    staff = await insert_scan(
        engine, org, poster, d0 + 8 * HOUR, visitor=visitor, cookie=cookie, internal=True
    )
    click = await insert_scan(engine, org, t2, d0 + 12 * HOUR, visitor=visitor, cookie=cookie)
    c1 = await convert(client, org, click, "C1", d0 + 13 * HOUR, eur(1000))
    c2 = await convert(client, org, staff, "C2", d0 + 13 * HOUR, eur(500))
    assert (c1["attributed"], c1["tag_id"]) == (True, t2["id"])
    assert (c2["attributed"], c2["scan_id"], c2["campaign_id"]) == (False, None, None)

    for model in ("first_touch", "linear", "last_touch"):
        response = await client.get(
            f"/v1/campaigns/{campaign_id}/attribution",
            params={"model": model},
            headers=org.headers,
        )
        data = response.json()
        assert data["rows"] == [{"tag_id": t2["id"], "conversions": 1.0, "revenue": [eur(1000)]}], (
            model
        )
        assert data["unattributed"] == {"conversions": 1, "revenue": [eur(500)]}
    figures = await stats(client, org, campaign_id)
    assert (figures["scans"], figures["internal_scans"], figures["conversions"]) == (1, 1, 1)
    assert figures["revenue"] == [eur(1000)]
