"""``GET /v1/campaigns/{id}/stats``: figures on a fixture of human and bot scans (really
scanned) on several tags, conversions in two currencies, time windows, tenant isolation."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import served_app
from campaigns.db import unit_of_work
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures import factories
from tests.fixtures.user_agents import FACEBOOK_PREVIEW, IPHONE_SAFARI


@asynccontextmanager
async def phone(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client from another address: visitor ids are keyed on (IP, user agent, campaign)."""
    transport = httpx.ASGITransport(app=served_app(app), client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        yield c


async def scan(
    client: httpx.AsyncClient, code: str, user_agent: str = IPHONE_SAFARI, method: str = "GET"
) -> str:
    """Scan a tag and return the click id appended to the redirect."""
    response = await client.request(method, f"/s/{code}", headers={"user-agent": user_agent})
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0]


async def convert(
    client: httpx.AsyncClient,
    org: Org,
    click_id: str,
    external_id: str,
    *,
    event: str = "purchase",
    value: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"click_id": click_id, "event": event, "external_id": external_id}
    if value is not None:
        data["value"] = value
    if occurred_at is not None:
        data["occurred_at"] = occurred_at.isoformat()
    response = await client.post("/v1/conversions", json=data, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def stats(
    client: httpx.AsyncClient, org: Org, campaign_id: int, **params: str
) -> httpx.Response:
    return await client.get(
        f"/v1/campaigns/{campaign_id}/stats", params=params, headers=org.headers
    )


def reasons(**counts: int) -> dict[str, int]:
    """``bot_scans_by_reason`` with every reason present: the given counts, else 0."""
    every = ("head", "prefetch", "previewer", "scanner", "crawler", "no_user_agent")
    return {reason: counts.get(reason, 0) for reason in every}


def eur(amount: int) -> dict[str, Any]:
    return {"currency": "EUR", "amount_minor": amount}


def usd(amount: int) -> dict[str, Any]:
    return {"currency": "USD", "amount_minor": amount}


@dataclass
class Fixture:
    campaign_id: int
    tags: list[dict[str, Any]]  # window-1, window-2, unused
    base: dt.datetime  # occurred_at of the first conversion (10 days ago, on the hour)
    started: dt.datetime  # just before the first scan
    clicks: dict[str, str]


@pytest.fixture
async def fixture(client: httpx.AsyncClient, org: Org, app: FastAPI) -> Fixture:
    """Campaign "summer" with three tags:

    - window-1: visitor A twice, visitor B once (humans), one Facebook preview (bot);
    - window-2: visitor A once, visitor C once (humans), one ``HEAD`` (bot);
    - unused: nothing.

    So 5 human scans, 2 bot scans, 3 unique visitors (A counts once for the campaign, once
    per tag). Conversions: window-1 4990 EUR (at ``base``) and 1000 USD (``base + 1h``);
    window-2 2500 EUR and a value-less signup (now). Noise that must not count: a
    conversion with an unknown click id, and a scan and conversion of another campaign.
    """
    started = dt.datetime.now(dt.UTC)
    # Rows through the services (HTTP creation is tested elsewhere), then into this
    # process's tag cache as a request's commit would put them.
    async with unit_of_work(app.state.sessionmaker) as session:
        summer = await factories.make_campaign(session, organization_id=org.id, slug="summer")
        rows = [
            await factories.make_tag(
                session, organization_id=org.id, campaign_id=summer.id, label=label
            )
            for label in ("window-1", "window-2", "unused")
        ]
    await app.state.scans.reload(tag_ids=[t.id for t in rows], campaign_ids=[summer.id])
    campaign = {"id": summer.id}
    tags = [{"id": t.id, "code": t.code, "label": t.label} for t in rows]
    one, two = tags[0]["code"], tags[1]["code"]
    clicks: dict[str, str] = {}
    async with phone(app, "198.51.100.10") as a, phone(app, "198.51.100.20") as b:
        async with phone(app, "198.51.100.30") as c:
            clicks["a1"] = await scan(a, one)
            clicks["a1-again"] = await scan(a, one)
            clicks["b1"] = await scan(b, one)
            clicks["bot1"] = await scan(a, one, FACEBOOK_PREVIEW)
            clicks["a2"] = await scan(a, two)
            clicks["c2"] = await scan(c, two)
            clicks["head2"] = await scan(c, two, method="HEAD")

    base = (started - dt.timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    await convert(client, org, clicks["a1"], "o-1", value=eur(4990), occurred_at=base)
    await convert(
        client, org, clicks["b1"], "o-2", value=usd(1000), occurred_at=base + dt.timedelta(hours=1)
    )
    await convert(client, org, clicks["c2"], "o-3", value=eur(2500))
    await convert(client, org, clicks["c2"], "lead-1", event="signup")
    await convert(client, org, "unknown-click", "o-4", value=eur(100_000))

    other = await make_campaign(client, org, slug="winter")
    other_tag = await make_tag(client, org, other["id"])
    clicks["winter"] = await scan(client, other_tag["code"])
    await convert(client, org, clicks["winter"], "o-5", value=eur(777))
    return Fixture(campaign["id"], tags, base, started, clicks)


async def test_totals_and_by_tag(client: httpx.AsyncClient, org: Org, fixture: Fixture) -> None:
    response = await stats(client, org, fixture.campaign_id)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["campaign_id"] == fixture.campaign_id
    assert data["scans"] == 5
    assert data["bot_scans"] == 2
    assert data["bot_scans_by_reason"] == reasons(previewer=1, head=1)
    assert data["burst_scans"] == 0
    assert data["unique_visitors"] == 3
    assert data["conversions"] == 4
    assert data["revenue"] == [eur(4990 + 2500), usd(1000)]
    assert data["conversion_rate"] == pytest.approx(4 / 5)
    one, two, unused = fixture.tags
    assert data["by_tag"] == [
        {
            "tag_id": one["id"],
            "code": one["code"],
            "label": "window-1",
            "scans": 3,
            "bot_scans": 1,
            "bot_scans_by_reason": reasons(previewer=1),
            "burst_scans": 0,
            "replayed_taps": 0,
            "invalid_taps": 0,
            "internal_scans": 0,
            "unique_visitors": 2,
            "conversions": 2,
            "revenue": [eur(4990), usd(1000)],
            "conversion_rate": pytest.approx(2 / 3),
        },
        {
            "tag_id": two["id"],
            "code": two["code"],
            "label": "window-2",
            "scans": 2,
            "bot_scans": 1,
            "bot_scans_by_reason": reasons(head=1),
            "burst_scans": 0,
            "replayed_taps": 0,
            "invalid_taps": 0,
            "internal_scans": 0,
            "unique_visitors": 2,
            "conversions": 2,
            "revenue": [eur(2500)],
            "conversion_rate": 1.0,
        },
        {
            "tag_id": unused["id"],
            "code": unused["code"],
            "label": "unused",
            "scans": 0,
            "bot_scans": 0,
            "bot_scans_by_reason": reasons(),
            "burst_scans": 0,
            "replayed_taps": 0,
            "invalid_taps": 0,
            "internal_scans": 0,
            "unique_visitors": 0,
            "conversions": 0,
            "revenue": [],
            "conversion_rate": 0.0,
        },
    ]


async def test_bot_scans_by_reason_follow_the_first_reason_that_applies(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    code = tag["code"]
    headers_by_scan: list[dict[str, str]] = [
        {"user-agent": IPHONE_SAFARI, "sec-purpose": "prefetch;prerender"},
        {"user-agent": IPHONE_SAFARI, "x-moz": "prefetch"},
        {"user-agent": FACEBOOK_PREVIEW, "purpose": "prefetch"},  # prefetch comes first
        {"user-agent": "Mozilla/5.0 (compatible; Google-Safety; +http://www.google.com/bot.html)"},
        {"user-agent": "Microsoft Office Protocol Discovery"},
        {"user-agent": "curl/8.5.0"},
        {"user-agent": "x"},
        {"user-agent": IPHONE_SAFARI},
    ]
    for headers in headers_by_scan:
        response = await client.get(f"/s/{code}", headers=headers)
        assert response.status_code == 302  # every one redirected
    data = (await stats(client, org, campaign["id"])).json()
    expected = reasons(prefetch=3, scanner=2, crawler=1, no_user_agent=1)
    assert (data["scans"], data["bot_scans"], data["bot_scans_by_reason"]) == (1, 7, expected)
    assert data["by_tag"][0]["bot_scans_by_reason"] == expected


async def test_window_bounds_for_conversions(
    client: httpx.AsyncClient, org: Org, fixture: Fixture
) -> None:
    base, hour = fixture.base, dt.timedelta(hours=1)
    # [base, base + 1h): the first conversion (from is inclusive), not the second (to is
    # exclusive), and no scans: the rate is 0.0 by definition.
    data = (
        await stats(
            client,
            org,
            fixture.campaign_id,
            **{"from": base.isoformat(), "to": (base + hour).isoformat()},
        )
    ).json()
    assert (data["scans"], data["bot_scans"], data["unique_visitors"]) == (0, 0, 0)
    assert data["conversions"] == 1
    assert data["revenue"] == [eur(4990)]
    assert data["conversion_rate"] == 0.0
    assert [t["conversions"] for t in data["by_tag"]] == [1, 0, 0]
    assert [t["revenue"] for t in data["by_tag"]] == [[eur(4990)], [], []]
    assert dt.datetime.fromisoformat(data["from"]) == base
    assert dt.datetime.fromisoformat(data["to"]) == base + hour

    # The same window written in another offset.
    paris = dt.timezone(dt.timedelta(hours=2))
    same = (
        await stats(
            client,
            org,
            fixture.campaign_id,
            **{
                "from": base.astimezone(paris).isoformat(),
                "to": (base + hour).astimezone(paris).isoformat(),
            },
        )
    ).json()
    assert same["conversions"] == 1 and same["revenue"] == [eur(4990)]

    # From base + 1h on: the USD conversion and today's, plus every scan.
    data = (
        await stats(client, org, fixture.campaign_id, **{"from": (base + hour).isoformat()})
    ).json()
    assert data["conversions"] == 3
    assert data["revenue"] == [eur(2500), usd(1000)]
    assert data["scans"] == 5 and data["unique_visitors"] == 3
    assert data["conversion_rate"] == pytest.approx(3 / 5)

    # Until the start of the fixture: the two old conversions, no scans.
    data = (await stats(client, org, fixture.campaign_id, to=fixture.started.isoformat())).json()
    assert (data["scans"], data["conversions"]) == (0, 2)
    assert data["revenue"] == [eur(4990), usd(1000)]


async def test_window_bounds_for_scans(
    client: httpx.AsyncClient, org: Org, fixture: Fixture, engine: AsyncEngine
) -> None:
    """Scans are placed by ``scanned_at``: move B's scan and the preview to an exact time."""
    moment = fixture.base + dt.timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE scans SET scanned_at = :t WHERE click_id IN (:b, :bot)"),
            {"t": moment, "b": fixture.clicks["b1"], "bot": fixture.clicks["bot1"]},
        )
    window = {"from": moment.isoformat(), "to": (moment + dt.timedelta(seconds=1)).isoformat()}
    data = (await stats(client, org, fixture.campaign_id, **window)).json()
    assert (data["scans"], data["bot_scans"], data["unique_visitors"]) == (1, 1, 1)
    assert [t["scans"] for t in data["by_tag"]] == [1, 0, 0]
    ending = {"from": (moment - dt.timedelta(hours=1)).isoformat(), "to": moment.isoformat()}
    data = (await stats(client, org, fixture.campaign_id, **ending)).json()
    assert (data["scans"], data["bot_scans"]) == (0, 0)
    data = (
        await stats(client, org, fixture.campaign_id, **{"from": fixture.started.isoformat()})
    ).json()
    assert (data["scans"], data["bot_scans"], data["unique_visitors"]) == (4, 1, 2)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    ],
)
async def test_to_not_after_from_is_rejected(
    client: httpx.AsyncClient, org: Org, fixture: Fixture, params: dict[str, str]
) -> None:
    response = await stats(client, org, fixture.campaign_id, **params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_window"


@pytest.mark.parametrize(
    "params",
    [{"from": "2026-11-01T00:00:00"}, {"to": "2026-11-01"}, {"from": "last week"}],
)
async def test_naive_or_malformed_times_are_rejected(
    client: httpx.AsyncClient, org: Org, fixture: Fixture, params: dict[str, str]
) -> None:
    response = await stats(client, org, fixture.campaign_id, **params)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_campaign_without_anything(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    data = (await stats(client, org, campaign["id"])).json()
    assert data == {
        "campaign_id": campaign["id"],
        "from": None,
        "to": None,
        "scans": 0,
        "bot_scans": 0,
        "bot_scans_by_reason": reasons(),
        "burst_scans": 0,
        "replayed_taps": 0,
        "invalid_taps": 0,
        "internal_scans": 0,
        "unique_visitors": 0,
        "conversions": 0,
        "revenue": [],
        "conversion_rate": 0.0,
        "by_tag": [],
        "timezone": "UTC",
        "interval": None,
        "series": None,
        "cost": None,
        "roas": None,
        "breakdowns": {"channel": [], "device_type": [], "os": [], "country": []},
    }


async def test_tenant_isolation(
    client: httpx.AsyncClient, org: Org, other_org: Org, fixture: Fixture
) -> None:
    before = (await stats(client, org, fixture.campaign_id)).json()

    # Another organization cannot read the campaign's stats...
    response = await stats(client, other_org, fixture.campaign_id)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "campaign_not_found"
    # ...nor credit it with a conversion by replaying one of its click ids.
    stolen = await convert(client, other_org, fixture.clicks["a1"], "x-1", value=eur(9999))
    assert stolen["attributed"] is False
    assert (stolen["scan_id"], stolen["campaign_id"], stolen["tag_id"]) == (None, None, None)
    assert (await stats(client, org, fixture.campaign_id)).json() == before

    # Its own campaign sees none of this organization's scans or conversions.
    own = await make_campaign(client, other_org)
    await make_tag(client, other_org, own["id"])
    data = (await stats(client, other_org, own["id"])).json()
    assert (data["scans"], data["bot_scans"], data["conversions"]) == (0, 0, 0)
    assert data["revenue"] == []

    # And this organization cannot read the other's.
    response = await stats(client, org, own["id"])
    assert response.status_code == 404
    assert response.json()["code"] == "campaign_not_found"


async def test_unknown_or_deleted_campaign_and_auth(
    client: httpx.AsyncClient, org: Org, fixture: Fixture
) -> None:
    response = await stats(client, org, 999_999)
    assert response.status_code == 404
    assert response.json()["code"] == "campaign_not_found"
    response = await client.get(f"/v1/campaigns/{fixture.campaign_id}/stats")
    assert response.status_code == 401
    deleted = await client.delete(f"/v1/campaigns/{fixture.campaign_id}", headers=org.headers)
    assert deleted.status_code == 204
    response = await stats(client, org, fixture.campaign_id)
    assert response.status_code == 404
    assert response.json()["code"] == "campaign_not_found"
