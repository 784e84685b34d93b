"""``GET /v1/conversions`` (list) and ``POST /v1/conversions/{id}/refunds``: idempotency,
the value ceiling under concurrent requests, bad input, tenant isolation."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.journeys import convert, eur, insert_scan

HOUR = dt.timedelta(hours=1)


async def refund(
    client: httpx.AsyncClient, org: Org, conversion_id: int, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/conversions/{conversion_id}/refunds", json=body, headers=org.headers
    )


@pytest.fixture
async def order(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    """A 10.00 EUR conversion two hours ago (its click id names no scan: refunds do not
    need one)."""
    at = dt.datetime.now(dt.UTC) - 2 * HOUR
    return await convert(client, org, "some-click", "order-1", at, eur(1000))


async def test_refund_then_replay(
    client: httpx.AsyncClient, org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    response = await refund(client, org, order["id"], amount_minor=250, external_id="re_1")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["conversion_id"] == order["id"]
    assert (body["amount_minor"], body["currency"], body["external_id"]) == (250, "EUR", "re_1")
    refunded_at = dt.datetime.fromisoformat(body["refunded_at"])
    assert abs(refunded_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # The same body again: the stored refund, counted once.
    before = await table_snapshot(engine, "refunds")
    again = await refund(client, org, order["id"], amount_minor=250, external_id="re_1")
    assert again.status_code == 200
    assert again.json() == body
    assert await table_snapshot(engine, "refunds") == before


async def test_conflicting_reuse_of_an_external_id(
    client: httpx.AsyncClient, org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    at = dt.datetime.now(dt.UTC) - HOUR
    first = await refund(
        client, org, order["id"], amount_minor=100, external_id="re_1", refunded_at=at.isoformat()
    )
    assert first.status_code == 201
    other = await convert(client, org, "some-click", "order-2", at - HOUR, eur(500))
    before = await table_snapshot(engine, "refunds")
    for conversion_id, body in [
        (order["id"], {"amount_minor": 101, "external_id": "re_1", "refunded_at": at.isoformat()}),
        (order["id"], {"amount_minor": 100, "external_id": "re_1"}),  # time not sent: differs
        (other["id"], {"amount_minor": 100, "external_id": "re_1", "refunded_at": at.isoformat()}),
    ]:
        response = await refund(client, org, conversion_id, **body)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "refund_conflict"
    assert await table_snapshot(engine, "refunds") == before


async def test_refunds_never_exceed_the_value(
    client: httpx.AsyncClient, org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    assert (
        await refund(client, org, order["id"], amount_minor=600, external_id="a")
    ).status_code == 201
    before = await table_snapshot(engine, "refunds")
    too_much = await refund(client, org, order["id"], amount_minor=401, external_id="b")
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "refund_exceeds_value"
    assert "400" in too_much.json()["detail"]
    assert await table_snapshot(engine, "refunds") == before
    assert (
        await refund(client, org, order["id"], amount_minor=400, external_id="c")
    ).status_code == 201
    # Fully refunded: a replay of the last one is still a replay, anything more is refused.
    assert (
        await refund(client, org, order["id"], amount_minor=400, external_id="c")
    ).status_code == 200
    response = await refund(client, org, order["id"], amount_minor=1, external_id="d")
    assert response.json()["code"] == "refund_exceeds_value"


async def test_concurrent_refunds_are_checked_one_after_the_other(
    client: httpx.AsyncClient, org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    responses = await asyncio.gather(
        *(refund(client, org, order["id"], amount_minor=300, external_id=f"r{i}") for i in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 201, 201, 422, 422, 422, 422, 422]
    rows = (await table_snapshot(engine, "refunds"))["refunds"]
    assert len(rows) == 3


async def test_conversion_without_value(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    signup = await convert(client, org, "some-click", "signup-1", dt.datetime.now(dt.UTC))
    response = await refund(client, org, signup["id"], amount_minor=1, external_id="x")
    assert response.status_code == 422
    assert response.json()["code"] == "refund_exceeds_value"
    assert (await table_snapshot(engine, "refunds"))["refunds"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"amount_minor": 0, "external_id": "x"}, "validation_error"),
        ({"amount_minor": -5, "external_id": "x"}, "validation_error"),
        ({"amount_minor": "5", "external_id": "x"}, "validation_error"),
        ({"amount_minor": 1.5, "external_id": "x"}, "validation_error"),
        ({"amount_minor": 5}, "validation_error"),
        ({"amount_minor": 5, "external_id": ""}, "validation_error"),
        ({"amount_minor": 5, "external_id": "x", "currency": "EUR"}, "validation_error"),
        (
            {"amount_minor": 5, "external_id": "x", "refunded_at": "2026-11-01T00:00"},
            "validation_error",
        ),
        (
            {"amount_minor": 5, "external_id": "x", "refunded_at": "1969-12-31T00:00:00Z"},
            "validation_error",
        ),
        (
            {"amount_minor": 5, "external_id": "x", "refunded_at": "3026-01-01T00:00:00Z"},
            "refunded_at_in_future",
        ),
    ],
)
async def test_bad_bodies(
    client: httpx.AsyncClient,
    org: Org,
    order: dict[str, Any],
    engine: AsyncEngine,
    body: dict[str, Any],
    code: str,
) -> None:
    before = await table_snapshot(engine, "refunds", "conversions")
    response = await refund(client, org, order["id"], **body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert await table_snapshot(engine, "refunds", "conversions") == before


async def test_refund_times(
    client: httpx.AsyncClient, org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    occurred = dt.datetime.fromisoformat(order["occurred_at"])
    before = await table_snapshot(engine, "refunds")
    early = await refund(
        client,
        org,
        order["id"],
        amount_minor=5,
        external_id="x",
        refunded_at=(occurred - dt.timedelta(seconds=1)).isoformat(),
    )
    assert early.status_code == 422
    assert early.json()["code"] == "refunded_before_conversion"
    future = await refund(
        client,
        org,
        order["id"],
        amount_minor=5,
        external_id="x",
        refunded_at=(dt.datetime.now(dt.UTC) + 25 * HOUR).isoformat(),
    )
    assert future.status_code == 422
    assert future.json()["code"] == "refunded_at_in_future"
    assert await table_snapshot(engine, "refunds") == before
    at = occurred + HOUR
    ok = await refund(
        client, org, order["id"], amount_minor=5, external_id="x", refunded_at=at.isoformat()
    )
    assert ok.status_code == 201
    assert dt.datetime.fromisoformat(ok.json()["refunded_at"]) == at


async def test_refund_tenant_isolation(
    client: httpx.AsyncClient, org: Org, other_org: Org, order: dict[str, Any], engine: AsyncEngine
) -> None:
    before = await table_snapshot(engine, "refunds")
    for conversion_id, key in ((order["id"], other_org), (999_999, org), (2**63, org)):
        response = await refund(client, key, conversion_id, amount_minor=5, external_id="x")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "conversion_not_found"
    assert await table_snapshot(engine, "refunds") == before


async def test_list_conversions(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    click = await insert_scan(engine, org, tag, now - 5 * HOUR)
    made = [
        await convert(client, org, click, "o-1", now - 4 * HOUR, eur(100)),
        await convert(client, org, "unknown", "o-2", now - 3 * HOUR, eur(200)),
        await convert(client, org, click, "o-3", now - 2 * HOUR),
    ]
    await convert(client, other_org, "unknown", "theirs", now - 2 * HOUR, eur(1))

    async def ids(**params: Any) -> list[int]:
        response = await client.get("/v1/conversions", params=params, headers=org.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == [c["id"] for c in reversed(made)]
    assert await ids(campaign_id=campaign["id"]) == [made[2]["id"], made[0]["id"]]
    window = {"from": (now - 4 * HOUR).isoformat(), "to": (now - 2 * HOUR).isoformat()}
    assert await ids(**window) == [made[1]["id"], made[0]["id"]]
    # Paging: two, then the last one, then nothing more.
    first = (await client.get("/v1/conversions?limit=2", headers=org.headers)).json()
    assert [c["id"] for c in first["items"]] == [made[2]["id"], made[1]["id"]]
    assert first["limit"] == 2
    second = (
        await client.get(
            "/v1/conversions",
            params={"limit": 2, "cursor": first["next_cursor"]},
            headers=org.headers,
        )
    ).json()
    assert [c["id"] for c in second["items"]] == [made[0]["id"]]
    assert second["next_cursor"] is None
    assert second["items"][0]["value"] == eur(100)
    assert second["items"][0]["attributed"] is True
    # Another organization sees only its own; this organization's campaign id matches
    # nothing for it.
    theirs = await client.get(
        "/v1/conversions", params={"campaign_id": campaign["id"]}, headers=other_org.headers
    )
    assert theirs.json()["items"] == []
    assert (
        len((await client.get("/v1/conversions", headers=other_org.headers)).json()["items"]) == 1
    )


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "nonsense"}, "invalid_cursor"),
        ({"limit": 0}, "validation_error"),
        ({"limit": 201}, "validation_error"),
        ({"campaign_id": "x"}, "validation_error"),
        ({"campaign_id": 2**63}, "validation_error"),
        ({"from": "2026-11-01T00:00:00"}, "validation_error"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "invalid_window"),
    ],
)
async def test_list_bad_parameters(
    client: httpx.AsyncClient, org: Org, params: dict[str, Any], code: str
) -> None:
    response = await client.get("/v1/conversions", params=params, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
