"""``GET /v1/campaigns/{id}/stats`` series, ROAS and breakdowns, and the CSV exports
``stats.csv`` / ``attribution.csv``: exact figures on scans stored as the writer stores
them, a campaign in Europe/Paris across both 2026 daylight saving changes (29 March, 25
October), refunds by their own time, two currencies, bad parameters, tenant isolation."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.journeys import convert, eur, insert_scan, usd

UTC = dt.UTC
TABLES = ("campaigns", "tags", "scans", "conversions", "refunds")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@dataclass
class Spring:
    campaign: dict[str, Any]
    t1: dict[str, Any]
    t2: dict[str, Any]
    clicks: dict[str, str]


@pytest.fixture
async def spring(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> Spring:
    """Campaign "paris" (Europe/Paris, cost 200.00 EUR), tags t1 and t2. Paris goes from
    +01:00 to +02:00 at 2026-03-29 01:00 UTC, so local 29 March has 23 hours.

    Human scans (UTC; local day):
    - s1 t1 28T22:30Z (28th 23:30+01) visitor v1, qr, mobile, iOS;
    - s2 t1 28T23:30Z (29th 00:30+01) visitor v1, qr, mobile, iOS;
    - s3 t2 29T21:30Z (29th 23:30+02) visitor v2, nfc, mobile, Android;
    - s4 t2 29T22:30Z (30th 00:30+02) visitor v2, qr, desktop, no OS;
    and a bot scan on t1 at 29T10:00Z (counts nowhere here).
    Conversions: C1 100.00 EUR on s2 at 29T08:00Z; C2 50.00 USD on s4 at 30T10:00Z;
    a refund of 30.00 EUR of C1 at 30T12:00Z.
    """
    campaign = await make_campaign(
        client,
        org,
        slug="paris",
        timezone="Europe/Paris",
        cost={"amount_minor": 20000, "currency": "EUR"},
    )
    t1 = await make_tag(client, org, campaign["id"], label="t1")
    t2 = await make_tag(client, org, campaign["id"], label="t2")
    v1, v2 = b"1" * 16, b"2" * 16
    clicks = {
        "s1": await insert_scan(
            engine, org, t1, at("2026-03-28T22:30Z"), visitor=v1, device_type="mobile", os="iOS"
        ),
        "s2": await insert_scan(
            engine, org, t1, at("2026-03-28T23:30Z"), visitor=v1, device_type="mobile", os="iOS"
        ),
        "s3": await insert_scan(
            engine,
            org,
            t2,
            at("2026-03-29T21:30Z"),
            visitor=v2,
            channel="nfc",
            device_type="mobile",
            os="Android",
        ),
        "s4": await insert_scan(
            engine, org, t2, at("2026-03-29T22:30Z"), visitor=v2, device_type="desktop"
        ),
        "bot": await insert_scan(engine, org, t1, at("2026-03-29T10:00Z"), is_bot=True),
    }
    c1 = await convert(client, org, clicks["s2"], "c1", at("2026-03-29T08:00Z"), eur(10000))
    await convert(client, org, clicks["s4"], "c2", at("2026-03-30T10:00Z"), usd(5000))
    response = await client.post(
        f"/v1/conversions/{c1['id']}/refunds",
        json={"amount_minor": 3000, "external_id": "r1", "refunded_at": "2026-03-30T12:00:00Z"},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    return Spring(campaign, t1, t2, clicks)


async def get(
    client: httpx.AsyncClient, org: Org, campaign_id: int, path: str = "stats", **params: str
) -> httpx.Response:
    return await client.get(
        f"/v1/campaigns/{campaign_id}/{path}", params=params, headers=org.headers
    )


def point(start: str, scans: int, visitors: int, conversions: int, *revenue: Any) -> Any:
    return {
        "start": start,
        "scans": scans,
        "unique_visitors": visitors,
        "conversions": conversions,
        "revenue": list(revenue),
    }


def money(currency: str, amount: int) -> dict[str, Any]:
    return {"currency": currency, "amount_minor": amount}


SPRING_WINDOW = {"from": "2026-03-28T00:00:00+01:00", "to": "2026-04-01T00:00:00+02:00"}


async def test_day_series_across_the_spring_change(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    response = await get(client, org, spring.campaign["id"], interval="day", **SPRING_WINDOW)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["timezone"] == "Europe/Paris" and data["interval"] == "day"
    assert data["series"] == [
        point("2026-03-28T00:00:00+01:00", 1, 1, 0),
        # 29 March is 23 hours long: 00:30+01 and 23:30+02 fall in it.
        point("2026-03-29T00:00:00+01:00", 2, 2, 1, money("EUR", 10000)),
        point("2026-03-30T00:00:00+02:00", 1, 1, 1, money("EUR", -3000), money("USD", 5000)),
        point("2026-03-31T00:00:00+02:00", 0, 0, 0),  # empty, present
    ]
    # The totals have the same definitions: the buckets add up to them.
    assert data["scans"] == 4 and data["unique_visitors"] == 2
    assert data["conversions"] == 2
    assert data["revenue"] == [money("EUR", 7000), money("USD", 5000)]
    assert [t["revenue"] for t in data["by_tag"]] == [[money("EUR", 7000)], [money("USD", 5000)]]


async def test_tz_overrides_the_campaign_time_zone(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    data = (
        await get(client, org, spring.campaign["id"], interval="day", tz="UTC", **SPRING_WINDOW)
    ).json()
    assert data["timezone"] == "UTC"
    # The window starts at 27T23:00Z: the first bucket is UTC 27 March, partly outside.
    assert data["series"] == [
        point("2026-03-27T00:00:00Z", 0, 0, 0),
        point("2026-03-28T00:00:00Z", 2, 1, 0),
        point("2026-03-29T00:00:00Z", 2, 1, 1, money("EUR", 10000)),
        point("2026-03-30T00:00:00Z", 0, 0, 1, money("EUR", -3000), money("USD", 5000)),
        point("2026-03-31T00:00:00Z", 0, 0, 0),
    ]


async def test_hour_and_week_series(client: httpx.AsyncClient, org: Org, spring: Spring) -> None:
    hours = (
        await get(
            client,
            org,
            spring.campaign["id"],
            interval="hour",
            **{"from": "2026-03-29T00:00:00+01:00", "to": "2026-03-29T04:00:00+02:00"},
        )
    ).json()["series"]
    # 02:00 local does not exist that night: 00:00, 01:00 (+01), then 03:00 (+02).
    assert hours == [
        point("2026-03-29T00:00:00+01:00", 1, 1, 0),
        point("2026-03-29T01:00:00+01:00", 0, 0, 0),
        point("2026-03-29T03:00:00+02:00", 0, 0, 0),
    ]
    weeks = (
        await get(
            client,
            org,
            spring.campaign["id"],
            interval="week",
            **{"from": "2026-03-25T12:00:00+01:00", "to": "2026-04-08T00:00:00+02:00"},
        )
    ).json()["series"]
    # ISO weeks from Monday 00:00 local; Sunday 29 March ends the first one.
    assert weeks == [
        point("2026-03-23T00:00:00+01:00", 3, 2, 1, money("EUR", 10000)),
        point("2026-03-30T00:00:00+02:00", 1, 1, 1, money("EUR", -3000), money("USD", 5000)),
        point("2026-04-06T00:00:00+02:00", 0, 0, 0),
    ]


async def test_autumn_change_hours_and_a_25_hour_day(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """Paris goes back from +02:00 to +01:00 at 2026-10-25 01:00 UTC: local 02:00 comes
    twice, and 25 October has 25 hours."""
    campaign = await make_campaign(client, org, slug="autumn", timezone="Europe/Paris")
    tag = await make_tag(client, org, campaign["id"])
    for when in ("2026-10-24T22:30Z", "2026-10-25T00:30Z", "2026-10-25T01:30Z"):
        await insert_scan(engine, org, tag, at(when))
    await insert_scan(engine, org, tag, at("2026-10-25T22:30Z"))  # 23:30+01 on the 25th
    await insert_scan(engine, org, tag, at("2026-10-25T23:30Z"))  # 00:30+01 on the 26th
    hours = (
        await get(
            client,
            org,
            campaign["id"],
            interval="hour",
            **{"from": "2026-10-25T01:00:00+02:00", "to": "2026-10-25T04:00:00+01:00"},
        )
    ).json()["series"]
    assert hours == [
        point("2026-10-25T01:00:00+02:00", 0, 0, 0),
        point("2026-10-25T02:00:00+02:00", 1, 0, 0),
        point("2026-10-25T02:00:00+01:00", 1, 0, 0),
        point("2026-10-25T03:00:00+01:00", 0, 0, 0),
    ]
    days = (
        await get(
            client,
            org,
            campaign["id"],
            interval="day",
            **{"from": "2026-10-25T00:00:00+02:00", "to": "2026-10-27T00:00:00+01:00"},
        )
    ).json()["series"]
    assert days == [
        point("2026-10-25T00:00:00+02:00", 4, 0, 0),
        point("2026-10-26T00:00:00+01:00", 1, 0, 0),
    ]


async def test_series_without_a_window_runs_from_the_first_event_to_now(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, slug="open")
    data = (await get(client, org, campaign["id"], interval="day")).json()
    assert data["series"] == []  # nothing yet: no buckets
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(UTC)
    await insert_scan(engine, org, tag, now - dt.timedelta(days=3))
    series = (await get(client, org, campaign["id"], interval="day")).json()["series"]
    first = (now - dt.timedelta(days=3)).date()
    assert [p["start"] for p in series] == [
        f"{first + dt.timedelta(days=i)}T00:00:00Z" for i in range(4)
    ]
    assert [p["scans"] for p in series] == [1, 0, 0, 0]


async def test_refunds_reduce_revenue_from_their_own_time(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    campaign_id = spring.campaign["id"]
    before = (await get(client, org, campaign_id, to="2026-03-30T00:00:00+02:00")).json()
    assert before["revenue"] == [money("EUR", 10000)] and before["conversions"] == 1
    after = (await get(client, org, campaign_id, **{"from": "2026-03-30T00:00:00+02:00"})).json()
    # The refund of the earlier conversion lands in the later window, with no conversion.
    assert after["revenue"] == [money("EUR", -3000), money("USD", 5000)]
    assert after["conversions"] == 1
    assert after["by_tag"][0]["revenue"] == [money("EUR", -3000)]


async def test_roas_with_and_without_cost(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    campaign_id = spring.campaign["id"]
    data = (await get(client, org, campaign_id, **SPRING_WINDOW)).json()
    assert data["cost"] == money("EUR", 20000)
    # Credited EUR revenue 100.00 - 30.00 over a 200.00 EUR cost; the USD is ignored.
    assert data["roas"] == 7000 / 20000
    attribution = (await get(client, org, campaign_id, "attribution", **SPRING_WINDOW)).json()
    eur_credited = [r for r in attribution["totals"]["revenue"] if r["currency"] == "EUR"]
    assert eur_credited == [money("EUR", 7000)]
    first = (await get(client, org, campaign_id, model="first_touch", **SPRING_WINDOW)).json()
    # v1's journey: s1 then s2 the same UTC day; first touch credits s1, same campaign.
    assert first["roas"] == 7000 / 20000

    patch = await client.patch(
        f"/v1/campaigns/{campaign_id}",
        json={"cost": {"amount_minor": 5000, "currency": "USD"}},
        headers=org.headers,
    )
    assert patch.status_code == 200, patch.text
    assert (await get(client, org, campaign_id, **SPRING_WINDOW)).json()["roas"] == 1.0
    await client.patch(
        f"/v1/campaigns/{campaign_id}",
        json={"cost": {"amount_minor": 0, "currency": "USD"}},
        headers=org.headers,
    )
    zero = (await get(client, org, campaign_id, **SPRING_WINDOW)).json()
    assert zero["cost"] == money("USD", 0) and zero["roas"] is None
    await client.patch(f"/v1/campaigns/{campaign_id}", json={"cost": None}, headers=org.headers)
    none = (await get(client, org, campaign_id, **SPRING_WINDOW)).json()
    assert none["cost"] is None and none["roas"] is None


async def test_breakdowns(client: httpx.AsyncClient, org: Org, spring: Spring) -> None:
    data = (await get(client, org, spring.campaign["id"], **SPRING_WINDOW)).json()

    def row(key: str | None, scans: int, conversions: int) -> dict[str, Any]:
        return {"key": key, "scans": scans, "conversions": conversions}

    assert data["breakdowns"] == {
        "channel": [row("qr", 3, 2), row("nfc", 1, 0)],
        "device_type": [row("mobile", 3, 1), row("desktop", 1, 1)],
        "os": [row("iOS", 2, 1), row(None, 1, 1), row("Android", 1, 0)],
        # Scans without a GeoIP database have no country: one null-keyed row.
        "country": [{"key": None, "scans": 4, "conversions": 2}],
    }
    # From the 30th (UTC): no scan, but C2 is credited to s4's channel, a row of 0 scans.
    later = await get(client, org, spring.campaign["id"], **{"from": "2026-03-30T00:00:00Z"})
    assert later.json()["breakdowns"]["channel"] == [row("qr", 0, 1)]


def parse(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text)))


def csv_money(row: dict[str, str]) -> list[dict[str, Any]]:
    prefix = "revenue_minor_"
    return [
        money(name.removeprefix(prefix), int(value))
        for name, value in row.items()
        if name.startswith(prefix) and value != ""
    ]


async def test_stats_csv_series_matches_the_json(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    campaign_id = spring.campaign["id"]
    params = {"interval": "day", **SPRING_WINDOW}
    response = await get(client, org, campaign_id, "stats.csv", **params)
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="campaign-{campaign_id}-stats.csv"'
    rows = parse(response)
    assert list(rows[0]) == [
        "start",
        "scans",
        "unique_visitors",
        "conversions",
        "revenue_minor_EUR",
        "revenue_minor_USD",
    ]
    series = (await get(client, org, campaign_id, **params)).json()["series"]
    assert [
        {
            "start": dt.datetime.fromisoformat(r["start"]),
            "scans": int(r["scans"]),
            "unique_visitors": int(r["unique_visitors"]),
            "conversions": int(r["conversions"]),
            "revenue": csv_money(r),
        }
        for r in rows
    ] == [{**p, "start": dt.datetime.fromisoformat(p["start"])} for p in series]
    assert rows[0]["start"] == "2026-03-28T00:00:00+01:00"


async def test_stats_csv_per_tag_matches_the_json(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    campaign_id = spring.campaign["id"]
    formula = await make_tag(client, org, campaign_id, label="=HYPERLINK(1)")
    rows = parse(await get(client, org, campaign_id, "stats.csv", **SPRING_WINDOW))
    data = (await get(client, org, campaign_id, **SPRING_WINDOW)).json()
    assert [r["row"] for r in rows] == ["tag", "tag", "tag", "total"]
    for row, tag in zip(rows, data["by_tag"], strict=False):
        assert int(row["tag_id"]) == tag["tag_id"] and row["code"] == tag["code"]
        for name in ("scans", "bot_scans", "burst_scans", "unique_visitors", "conversions"):
            assert int(row[name]) == tag[name]
        assert float(row["conversion_rate"]) == tag["conversion_rate"]
        assert csv_money(row) == tag["revenue"]
        assert row["cost_minor"] == row["roas"] == ""
    assert rows[2]["label"] == "'=HYPERLINK(1)" and int(rows[2]["tag_id"]) == formula["id"]
    total = rows[3]
    assert int(total["scans"]) == data["scans"] == 4
    assert int(total["bot_scans"]) == data["bot_scans"] == 1
    assert csv_money(total) == data["revenue"]
    assert (total["cost_minor"], total["cost_currency"]) == ("20000", "EUR")
    assert float(total["roas"]) == data["roas"] == 0.35


async def test_attribution_csv_matches_the_json(
    client: httpx.AsyncClient, org: Org, spring: Spring
) -> None:
    campaign_id = spring.campaign["id"]
    for params in (
        {"model": "linear", **SPRING_WINDOW},
        {"model": "linear", "group_by": "day", **SPRING_WINDOW},
    ):
        response = await get(client, org, campaign_id, "attribution.csv", **params)
        disposition = response.headers["content-disposition"]
        assert disposition == f'attachment; filename="campaign-{campaign_id}-attribution.csv"'
        rows = parse(response)
        report = (await get(client, org, campaign_id, "attribution", **params)).json()
        key = "day" if params.get("group_by") == "day" else "tag_id"
        assert list(rows[0])[:2] == [key, "conversions"]
        assert [r[key] for r in rows[:-2]] == [str(r[key]) for r in report["rows"]]
        assert [float(r["conversions"]) for r in rows[:-2]] == [
            r["conversions"] for r in report["rows"]
        ]
        assert [csv_money(r) for r in rows[:-2]] == [r["revenue"] for r in report["rows"]]
        total, lost = rows[-2], rows[-1]
        assert total[key] == "total" and lost[key] == "unattributed"
        assert float(total["conversions"]) == report["totals"]["conversions"] == 2.0
        assert csv_money(total) == report["totals"]["revenue"]
        assert float(lost["conversions"]) == report["unattributed"]["conversions"] == 0
        if key == "day":
            # Linear: v1's journey is s1 (28th) then s2 (29th), v2's s3 (29th) then s4
            # (30th), half a conversion each; the refund is split like the value.
            assert [(r["day"], r["conversions"], csv_money(r)) for r in rows[:-2]] == [
                ("2026-03-28", "0.5", [money("EUR", 3500)]),
                ("2026-03-29", "1.0", [money("EUR", 3500), money("USD", 2500)]),
                ("2026-03-30", "0.5", [money("USD", 2500)]),
            ]
        else:
            assert [(int(r["tag_id"]), csv_money(r)) for r in rows[:-2]] == [
                (spring.t1["id"], [money("EUR", 7000)]),
                (spring.t2["id"], [money("USD", 5000)]),
            ]


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("stats", {"interval": "month"}, "validation_error"),
        ("stats", {"interval": "day", "tz": "Mars/Olympus"}, "invalid_timezone"),
        ("stats", {"tz": "europe/paris"}, "invalid_timezone"),
        ("stats", {"tz": "localtime"}, "invalid_timezone"),
        ("stats", {"tz": "Factory"}, "invalid_timezone"),
        ("stats", {"tz": "posixrules"}, "invalid_timezone"),
        ("stats", {"tz": "posix/Europe/Paris"}, "invalid_timezone"),
        ("stats", {"tz": "right/UTC"}, "invalid_timezone"),
        ("stats.csv", {"interval": "day", "tz": "Factory"}, "invalid_timezone"),
        ("stats", {"model": "data_driven"}, "validation_error"),
        (
            "stats",
            {"interval": "hour", "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "too_many_buckets",
        ),
        ("stats", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "invalid_window"),
        ("stats.csv", {"interval": "day", "tz": "Nowhere"}, "invalid_timezone"),
        (
            "stats.csv",
            {"interval": "hour", "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "too_many_buckets",
        ),
        (
            "stats.csv",
            {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            "invalid_window",
        ),
        ("attribution.csv", {"model": "data_driven"}, "validation_error"),
        ("attribution.csv", {"lookback_days": "0"}, "validation_error"),
        (
            "attribution.csv",
            {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            "invalid_window",
        ),
    ],
)
async def test_bad_parameters(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    spring: Spring,
    path: str,
    params: dict[str, str],
    code: str,
) -> None:
    before = await table_snapshot(engine, *TABLES)
    response = await get(client, org, spring.campaign["id"], path, **params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(("interval", "step"), [("day", "days"), ("hour", "hours")])
async def test_the_bucket_cap_is_exact(
    client: httpx.AsyncClient, org: Org, spring: Spring, interval: str, step: str
) -> None:
    start = dt.datetime(2000, 1, 1, tzinfo=UTC)
    for buckets, status in ((10_000, 200), (10_001, 422)):
        end = start + dt.timedelta(**{step: buckets})
        window = {"from": start.isoformat(), "to": end.isoformat()}
        response = await get(
            client, org, spring.campaign["id"], interval=interval, tz="UTC", **window
        )
        assert response.status_code == status, response.text
        if status == 200:
            assert len(response.json()["series"]) == buckets


async def test_too_many_buckets_without_a_window(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, slug="old")
    tag = await make_tag(client, org, campaign["id"])
    # 500 days of hours is 12,000 buckets; of days, 501.
    await insert_scan(engine, org, tag, dt.datetime.now(UTC) - dt.timedelta(days=500))
    response = await get(client, org, campaign["id"], interval="hour")
    assert response.status_code == 422 and response.json()["code"] == "too_many_buckets"
    days = (await get(client, org, campaign["id"], interval="day", tz="UTC")).json()["series"]
    assert len(days) == 501 and days[0]["scans"] == 1


async def test_other_organizations_get_404(
    client: httpx.AsyncClient, org: Org, other_org: Org, spring: Spring
) -> None:
    for path, params in (
        ("stats", {"interval": "day"}),
        ("stats.csv", {}),
        ("stats.csv", {"interval": "day"}),
        ("attribution.csv", {}),
    ):
        response = await get(client, other_org, spring.campaign["id"], path, **params)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "campaign_not_found"
