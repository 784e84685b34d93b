"""``GET /v1/campaigns/{id}/attribution``: journeys over real scans (inserted into
``scans`` as the writer would), every model with credits worked out by hand, the lookback
edge, bots and flagged NFC taps inside journeys, refunds, days in the campaign's time
zone, bad parameters and tenant isolation."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.journeys import convert, eur, insert_scan, usd

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@dataclass
class World:
    summer: dict[str, Any]
    t1: dict[str, Any]
    t2: dict[str, Any]
    winter_tag: dict[str, Any]
    d0: dt.datetime
    conversions: dict[str, dict[str, Any]]
    scans: dict[str, tuple[str, dt.datetime]]


@pytest.fixture
async def world(client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine) -> World:
    """Campaign "summer" (tags t1, t2, time zone Pacific/Kiritimati, UTC+14 all year) and
    campaign "winter" (tag w1). D0 is midnight UTC ten days ago.

    - C1, 100.00 EUR at D0 14:00, click on s3. Visitor id vA the same UTC day: s1 (t1,
      08:00), s2 (w1, 10:00), a bot scan (t2, 11:00), s3 (t2, 12:00, the click), and
      noise: vA the day before (another day: another visitor) and after the click.
      Journey: s1 t1, s2 w1, s3 t2.
    - C2, 100.00 USD at D0 12:00 (T2), click on k3. Cookie K: k_old (t2, T2 - 30 days -
      1 hour, just beyond the default lookback), k1 (t1, T2 - 15 d), k2 (t2, T2 - 8 d),
      a bot scan (T2 - 5 d), k3 (t1, T2 - 1 d, the click); another cookie's scan.
      Journey: k1 t1, k2 t2, k3 t1 (with lookback 31 days: k_old t2 first).
    - C3, 5.00 EUR at D0 16:00, click on a BOT scan of t2 40 days before, preceded that
      day by a human scan of the same visitor on t1 (beyond 30 days, within 90).
      Journey: the bot click alone (lookback 90: t1 then t2).
    - C4, 7.77 EUR, unknown click id; C5, 1.00 EUR, the click id of another
      organization's scan: both unattributed. C6, 9.99 EUR, a journey on winter only.
    """
    summer = await make_campaign(client, org, slug="summer", timezone="Pacific/Kiritimati")
    t1 = await make_tag(client, org, summer["id"], label="t1")
    t2 = await make_tag(client, org, summer["id"], label="t2")
    winter = await make_campaign(client, org, slug="winter")
    w1 = await make_tag(client, org, winter["id"], label="w1")
    now = dt.datetime.now(dt.UTC)
    d0 = (now - 10 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    scans: dict[str, tuple[str, dt.datetime]] = {}

    async def scan(name: str, tag: dict[str, Any], at: dt.datetime, **kw: Any) -> str:
        scans[name] = (await insert_scan(engine, org, tag, at, **kw), at)
        return scans[name][0]

    va, vb, vc = b"A" * 16, b"B" * 16, b"C" * 16
    await scan("va-day-before", t1, d0 - HOUR, visitor=va)
    await scan("s1", t1, d0 + 8 * HOUR, visitor=va)
    await scan("s2", w1, d0 + 10 * HOUR, visitor=va)
    await scan("va-bot", t2, d0 + 11 * HOUR, visitor=va, is_bot=True)
    await scan("s3", t2, d0 + 12 * HOUR, visitor=va)
    await scan("va-after", t1, d0 + 13 * HOUR, visitor=va)

    t2_at = d0 + 12 * HOUR
    k, other_cookie = uuid.uuid4(), uuid.uuid4()
    await scan("k_old", t2, t2_at - 30 * DAY - HOUR, cookie=k, visitor=b"1" * 16)
    await scan("k1", t1, t2_at - 15 * DAY, cookie=k, visitor=b"2" * 16)
    await scan("k2", t2, t2_at - 8 * DAY, cookie=k, visitor=b"3" * 16)
    await scan("k-bot", t2, t2_at - 5 * DAY, cookie=k, is_bot=True)
    await scan("other-cookie", t2, t2_at - 2 * DAY, cookie=other_cookie, visitor=b"4" * 16)
    await scan("k3", t1, t2_at - DAY, cookie=k, visitor=b"5" * 16)

    b_day = d0 + 16 * HOUR - 40 * DAY
    await scan("vb-human", t1, b_day, visitor=vb)
    await scan("vb-bot-click", t2, b_day + HOUR, visitor=vb, is_bot=True)

    await scan("vc-winter", w1, d0 + 9 * HOUR, visitor=vc)
    foreign_click = await insert_scan(engine, other_org, w1, d0 + 9 * HOUR, visitor=vc)

    conversions = {
        "C1": await convert(client, org, scans["s3"][0], "C1", d0 + 14 * HOUR, eur(10000)),
        "C2": await convert(client, org, scans["k3"][0], "C2", t2_at, usd(10000)),
        "C3": await convert(client, org, scans["vb-bot-click"][0], "C3", d0 + 16 * HOUR, eur(500)),
        "C4": await convert(client, org, "no-such-click", "C4", d0 + 18 * HOUR, eur(777)),
        "C5": await convert(client, org, foreign_click, "C5", d0 + 18 * HOUR, eur(100)),
        "C6": await convert(client, org, scans["vc-winter"][0], "C6", d0 + 18 * HOUR, eur(999)),
    }
    return World(summer, t1, t2, w1, d0, conversions, scans)


async def report(
    client: httpx.AsyncClient, org: Org, campaign_id: int, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/campaigns/{campaign_id}/attribution", params=params, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def tag_rows(world: World, t1: tuple[float, list[Any]], t2: tuple[float, list[Any]]) -> Any:
    return [
        {"tag_id": world.t1["id"], "conversions": pytest.approx(t1[0]), "revenue": t1[1]},
        {"tag_id": world.t2["id"], "conversions": pytest.approx(t2[0]), "revenue": t2[1]},
    ]


UNATTRIBUTED = {"conversions": 2, "revenue": [eur(777 + 100)]}


async def test_last_touch_is_the_default(client: httpx.AsyncClient, org: Org, world: World) -> None:
    data = await report(client, org, world.summer["id"])
    assert data["model"] == "last_touch"
    assert data["group_by"] == "tag"
    assert data["lookback_days"] == 30
    assert data["timezone"] == "Pacific/Kiritimati"
    # C2 -> k3 (t1); C1 -> s3 (t2); C3 -> its bot click (t2), kept although a bot and
    # 40 days old.
    assert data["rows"] == tag_rows(world, (1, [usd(10000)]), (2, [eur(10500)]))
    assert data["totals"] == {"conversions": 3.0, "revenue": [eur(10500), usd(10000)]}
    assert data["unattributed"] == UNATTRIBUTED


async def test_first_touch(client: httpx.AsyncClient, org: Org, world: World) -> None:
    data = await report(client, org, world.summer["id"], model="first_touch")
    # C1 -> s1 (t1), C2 -> k1 (t1: k_old is beyond 30 days), C3 -> its click (t2).
    assert data["rows"] == tag_rows(world, (2, [eur(10000), usd(10000)]), (1, [eur(500)]))
    assert data["totals"] == {"conversions": 3.0, "revenue": [eur(10500), usd(10000)]}


async def test_linear_across_campaigns(client: httpx.AsyncClient, org: Org, world: World) -> None:
    data = await report(client, org, world.summer["id"], model="linear")
    # C1: s1 t1, s2 w1 (winter: not shown), s3 t2 -> a third each; 10000 EUR -> 3334 /
    # 3333 / 3333 (the cent left to the first). The bot scan of vA, the scan of the day
    # before and the one after the click are not in the journey.
    # C2: k1 t1, k2 t2, k3 t1 -> a third each; 10000 USD -> 3334 / 3333 / 3333.
    # C3: the click alone -> t2, 500 EUR.
    assert data["rows"] == tag_rows(
        world,
        (1 / 3 + 2 / 3, [eur(3334), usd(3334 + 3333)]),
        (1 / 3 + 1 / 3 + 1, [eur(3333 + 500), usd(3333)]),
    )
    # The totals are this campaign's rows: C1's third on winter is not in them.
    assert data["totals"]["conversions"] == pytest.approx(8 / 3)
    assert data["totals"]["revenue"] == [eur(3334 + 3333 + 500), usd(10000)]
    assert data["unattributed"] == UNATTRIBUTED


async def test_position_based(client: httpx.AsyncClient, org: Org, world: World) -> None:
    data = await report(client, org, world.summer["id"], model="position_based")
    # C1: s1 t1 40 %, s2 w1 20 %, s3 t2 40 %. C2: k1 t1 40 %, k2 t2 20 %, k3 t1 40 %.
    # C3: t2 100 %.
    assert data["rows"] == tag_rows(
        world, (0.4 + 0.8, [eur(4000), usd(8000)]), (0.4 + 0.2 + 1, [eur(4000 + 500), usd(2000)])
    )
    assert data["totals"] == {
        "conversions": pytest.approx(2.8),
        "revenue": [eur(8500), usd(10000)],
    }


async def test_time_decay_window_and_half_life(
    client: httpx.AsyncClient, org: Org, world: World
) -> None:
    t2_at = world.d0 + 12 * HOUR
    window = {"from": (t2_at - HOUR).isoformat(), "to": (t2_at + HOUR).isoformat()}
    data = await report(client, org, world.summer["id"], model="time_decay", **window)
    # Only C2 occurred in the window. k1, k2, k3 are 15, 8 and 1 days old: weights 1/4,
    # 1/2, 1 -> 1/7, 2/7, 4/7 in units of 1e-15: 142857142857143, 285714285714286,
    # 571428571428571 (see tests/test_attribution.py); 10000 USD -> 1429, 2857, 5714.
    assert data["rows"] == tag_rows(
        world, (0.714285714285714, [usd(1429 + 5714)]), (0.285714285714286, [usd(2857)])
    )
    assert data["unattributed"] == {"conversions": 0, "revenue": []}
    assert data["half_life_days"] == 7
    # A 7-day half-life given explicitly is the same; 3.5 days makes the weights 1/16,
    # 1/4, 1 -> 1/21, 4/21, 16/21: 10000 USD -> 476.19, 1904.76, 7619.05 -> 476, 1905,
    # 7619 (the cent to .76).
    assert (
        await report(
            client, org, world.summer["id"], model="time_decay", half_life_days=7, **window
        )
        == data
    )
    faster = await report(
        client, org, world.summer["id"], model="time_decay", half_life_days=3.5, **window
    )
    assert faster["rows"] == tag_rows(world, (17 / 21, [usd(476 + 7619)]), (4 / 21, [usd(1905)]))


async def test_lookback_edge(client: httpx.AsyncClient, org: Org, world: World) -> None:
    t2_at = world.d0 + 12 * HOUR
    window = {"from": (t2_at - HOUR).isoformat(), "to": (t2_at + HOUR).isoformat()}
    # k_old is 30 days and 1 hour before C2: out with 30 days, in with 31.
    within30 = await report(client, org, world.summer["id"], model="first_touch", **window)
    assert within30["rows"] == [
        {"tag_id": world.t1["id"], "conversions": 1.0, "revenue": [usd(10000)]}
    ]
    within31 = await report(
        client, org, world.summer["id"], model="first_touch", lookback_days=31, **window
    )
    # t1 has touches but no credit and no revenue: no row.
    assert within31["rows"] == [
        {"tag_id": world.t2["id"], "conversions": 1.0, "revenue": [usd(10000)]}
    ]
    # Linear over 4 touches: k_old t2, k1 t1, k2 t2, k3 t1 -> half each.
    linear31 = await report(
        client, org, world.summer["id"], model="linear", lookback_days=31, **window
    )
    assert linear31["rows"] == tag_rows(world, (0.5, [usd(5000)]), (0.5, [usd(5000)]))
    # C3's click is a bot 40 days old: always its own journey; with 90 days the visitor's
    # human scan of that day (t1) joins it.
    c3_at = world.d0 + 16 * HOUR
    c3 = {"from": c3_at.isoformat(), "to": (c3_at + HOUR).isoformat()}
    alone = await report(client, org, world.summer["id"], model="linear", **c3)
    assert alone["rows"] == [{"tag_id": world.t2["id"], "conversions": 1.0, "revenue": [eur(500)]}]
    joined = await report(client, org, world.summer["id"], model="linear", lookback_days=90, **c3)
    assert joined["rows"] == tag_rows(world, (0.5, [eur(250)]), (0.5, [eur(250)]))


async def test_days_in_the_campaign_time_zone(
    client: httpx.AsyncClient, org: Org, world: World
) -> None:
    t2_at = world.d0 + 12 * HOUR
    window = {"from": (t2_at - HOUR).isoformat(), "to": (t2_at + HOUR).isoformat()}
    data = await report(client, org, world.summer["id"], model="linear", group_by="day", **window)
    # Kiritimati is UTC+14: noon UTC is 2 a.m. the next day there.
    day = lambda at: (at + dt.timedelta(hours=14)).date().isoformat()  # noqa: E731
    assert data["rows"] == [
        {"day": day(t2_at - 15 * DAY), "conversions": pytest.approx(1 / 3), "revenue": [usd(3334)]},
        {"day": day(t2_at - 8 * DAY), "conversions": pytest.approx(1 / 3), "revenue": [usd(3333)]},
        {"day": day(t2_at - DAY), "conversions": pytest.approx(1 / 3), "revenue": [usd(3333)]},
    ]
    # In UTC the same touches fall on the UTC dates.
    response = await client.patch(
        f"/v1/campaigns/{world.summer['id']}", json={"timezone": "UTC"}, headers=org.headers
    )
    assert response.status_code == 200 and response.json()["timezone"] == "UTC"
    data = await report(client, org, world.summer["id"], model="linear", group_by="day", **window)
    assert [row["day"] for row in data["rows"]] == [
        (t2_at - n * DAY).date().isoformat() for n in (15, 8, 1)
    ]


async def test_refunds_are_split_like_the_conversion(
    client: httpx.AsyncClient, org: Org, world: World
) -> None:
    c1 = world.conversions["C1"]
    refunded_at = world.d0 + 15 * HOUR
    response = await client.post(
        f"/v1/conversions/{c1['id']}/refunds",
        json={"amount_minor": 2500, "external_id": "R1", "refunded_at": refunded_at.isoformat()},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    # Linear over the whole history: C1's 2500 refund splits 834 / 833 / 833 like its
    # value (3334 / 3333 / 3333).
    data = await report(client, org, world.summer["id"], model="linear")
    assert data["rows"] == tag_rows(
        world,
        (1, [eur(3334 - 834), usd(6667)]),
        (5 / 3, [eur(3333 + 500 - 833), usd(3333)]),
    )
    # A window holding the refund but not C1: no credit, negative revenue.
    window = {
        "from": (refunded_at - 30 * dt.timedelta(minutes=1)).isoformat(),
        "to": (refunded_at + HOUR / 2).isoformat(),
    }
    data = await report(client, org, world.summer["id"], model="linear", **window)
    assert data["rows"] == tag_rows(world, (0, [eur(-834)]), (0, [eur(-833)]))
    assert data["totals"] == {"conversions": 0.0, "revenue": [eur(-1667)]}
    # Refunds of unattributed conversions lower their revenue too.
    c4 = world.conversions["C4"]
    response = await client.post(
        f"/v1/conversions/{c4['id']}/refunds",
        json={"amount_minor": 77, "external_id": "R4"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    data = await report(client, org, world.summer["id"])
    assert data["unattributed"] == {"conversions": 2, "revenue": [eur(777 + 100 - 77)]}


async def test_flagged_nfc_taps_leave_journeys(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, slug="taps")
    n1 = await make_tag(client, org, campaign["id"], kind="nfc", label="n1")
    n2 = await make_tag(client, org, campaign["id"], kind="nfc", label="n2")
    d0 = (dt.datetime.now(dt.UTC) - 3 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    visitor = b"N" * 16

    async def tap(tag: dict[str, Any], hour: int, verdict: str | None, **kw: Any) -> str:
        click = await insert_scan(engine, org, tag, d0 + hour * HOUR, visitor=visitor, **kw)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE scans SET nfc_verification = :v WHERE click_id = :c"),
                {"v": verdict, "c": click},
            )
        return click

    await tap(n1, 8, "valid")
    await tap(n2, 9, "replayed")  # a copied tag's replay: not a touch
    await tap(n1, 10, "invalid")  # a forged tap: not a touch
    replayed_click = await tap(n2, 11, "replayed")
    invalid_click = await tap(n2, 12, "invalid")
    await convert(client, org, replayed_click, "T1", d0 + 13 * HOUR, eur(1000))
    await convert(client, org, invalid_click, "T2", d0 + 13 * HOUR, eur(300))

    data = await report(client, org, campaign["id"], model="linear")
    # T1: the valid tap of n1 and the click's own (replayed) tap -> half each. T2's click
    # is an invalid tap: no journey, unattributed.
    assert data["rows"] == [
        {"tag_id": n1["id"], "conversions": 0.5, "revenue": [eur(500)]},
        {"tag_id": n2["id"], "conversions": 0.5, "revenue": [eur(500)]},
    ]
    assert data["unattributed"] == {"conversions": 1, "revenue": [eur(300)]}


@pytest.mark.parametrize(
    "params",
    [
        {"model": "data_driven"},
        {"model": ""},
        {"lookback_days": 0},
        {"lookback_days": 91},
        {"lookback_days": "30.5"},
        {"half_life_days": 0},
        {"half_life_days": -1},
        {"half_life_days": "nan"},
        {"half_life_days": 366},
        # Shorter than a second: a time-decay half-life of no microseconds (was a 500).
        {"half_life_days": 1e-300, "model": "time_decay"},
        {"half_life_days": 5e-12, "model": "time_decay"},
        {"half_life_days": 1e-6, "model": "time_decay"},
        {"half_life_days": 1e-300, "model": "linear"},
        {"group_by": "store"},
        {"from": "2026-11-01T00:00:00"},
        {"to": "yesterday"},
    ],
)
async def test_bad_parameters(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, params: dict[str, Any]
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, "campaigns", "conversions", "scans")
    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/attribution", params=params, headers=org.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"]
    assert await table_snapshot(engine, "campaigns", "conversions", "scans") == before


async def test_invalid_window(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/attribution",
        params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        headers=org.headers,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_window"


async def test_tenant_isolation(
    client: httpx.AsyncClient, org: Org, other_org: Org, world: World
) -> None:
    response = await client.get(
        f"/v1/campaigns/{world.summer['id']}/attribution", headers=other_org.headers
    )
    assert response.status_code == 404
    assert response.json()["code"] == "campaign_not_found"
    # The other organization's own campaign sees nothing of this one's conversions, and
    # its unattributed conversions are its own (none).
    theirs = await make_campaign(client, other_org, slug="theirs")
    data = await report(client, other_org, theirs["id"])
    assert data["rows"] == []
    assert data["totals"] == {"conversions": 0.0, "revenue": []}
    assert data["unattributed"] == {"conversions": 0, "revenue": []}
    missing = await client.get("/v1/campaigns/999999/attribution", headers=org.headers)
    assert missing.status_code == 404


async def test_campaign_time_zone_is_validated(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    assert campaign["timezone"] == "UTC"
    before = await table_snapshot(engine, "campaigns")
    for bad in ("Mars/Olympus", "../../etc/passwd", "", "europe/paris", None, 1):
        response = await client.patch(
            f"/v1/campaigns/{campaign['id']}", json={"timezone": bad}, headers=org.headers
        )
        assert response.status_code == 422, (bad, response.text)
        # Not a string at all is a plain validation error; a string that names no zone
        # gets the same code as a location's time zone.
        expected = {None: "timezone_required", 1: "validation_error"}.get(bad, "invalid_timezone")
        assert response.json()["code"] == expected
    response = await client.post(
        "/v1/campaigns",
        json={"name": "x", "destination_url": "https://a.example/", "timezone": "Nowhere"},
        headers=org.headers,
    )
    assert response.status_code == 422
    assert await table_snapshot(engine, "campaigns") == before
    paris = await make_campaign(client, org, slug="paris", timezone="Europe/Paris")
    assert paris["timezone"] == "Europe/Paris"
    read = await client.get(f"/v1/campaigns/{paris['id']}", headers=org.headers)
    assert read.json()["timezone"] == "Europe/Paris"


async def test_group_by_location(client: httpx.AsyncClient, org: Org, world: World) -> None:
    store = await client.post(
        "/v1/locations",
        json={"name": "Lyon", "point": {"type": "Point", "coordinates": [4.8567, 45.7607]}},
        headers=org.headers,
    )
    assert store.status_code == 201, store.text
    store_id = store.json()["id"]
    placed = await client.patch(
        f"/v1/tags/{world.t1['id']}", json={"location_id": store_id}, headers=org.headers
    )
    assert placed.status_code == 200, placed.text
    data = await report(client, org, world.summer["id"], model="linear", group_by="location")
    # t1's credit (see test_linear_across_campaigns) under its store, t2's under none.
    assert data["rows"] == [
        {
            "location_id": store_id,
            "conversions": pytest.approx(1.0),
            "revenue": [eur(3334), usd(6667)],
        },
        {
            "location_id": None,
            "conversions": pytest.approx(5 / 3),
            "revenue": [eur(3833), usd(3333)],
        },
    ]
