"""``POST /v1/conversions``: attribution, idempotency (also under races), validation,
tenant isolation. Scans are made by really scanning ``/s/{code}``."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.errors import Conflict
from campaigns.models import Conversion
from campaigns.schemas import ConversionCreate
from campaigns.services.conversions import record_conversion
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.user_agents import IPHONE_SAFARI


async def scan(client: httpx.AsyncClient, code: str, user_agent: str = IPHONE_SAFARI) -> str:
    """Scan a tag like a phone does and return the click id appended to the redirect."""
    response = await client.get(f"/s/{code}", headers={"user-agent": user_agent})
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0]


async def scanned(client: httpx.AsyncClient, org: Org) -> tuple[dict[str, Any], str]:
    """A campaign's tag of ``org`` and the click id of one human scan of it."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    return tag, await scan(client, tag["code"])


def body(click_id: str, external_id: str = "order-123", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "click_id": click_id,
        "event": "purchase",
        "value": {"amount_minor": 4990, "currency": "EUR"},
        "external_id": external_id,
        "occurred_at": "2026-11-20T14:30:00+01:00",
    }
    data.update(overrides)
    return data


async def count_conversions(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Conversion))).scalar_one())


async def test_attributed_conversion(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    tag, click_id = await scanned(client, org)
    response = await client.post("/v1/conversions", json=body(click_id), headers=org.headers)
    assert response.status_code == 201, response.text
    data = response.json()
    async with engine.connect() as conn:
        scan_id = (
            await conn.execute(text("SELECT id FROM scans WHERE click_id = :c"), {"c": click_id})
        ).scalar_one()
        row = (await conn.execute(text("SELECT * FROM conversions"))).mappings().one()
    assert data["attributed"] is True
    assert data["scan_id"] == scan_id
    assert data["tag_id"] == tag["id"]
    assert data["campaign_id"] == tag["campaign_id"]
    assert data["click_id"] == click_id
    assert data["event"] == "purchase"
    assert data["external_id"] == "order-123"
    assert data["value"] == {"amount_minor": 4990, "currency": "EUR"}
    assert dt.datetime.fromisoformat(data["occurred_at"]) == dt.datetime(
        2026, 11, 20, 13, 30, tzinfo=dt.UTC
    )
    assert row["id"] == data["id"]
    assert row["organization_id"] == org.id
    assert (row["scan_id"], row["campaign_id"], row["tag_id"]) == (
        scan_id,
        tag["campaign_id"],
        tag["id"],
    )
    assert (row["value_amount_minor"], row["value_currency"]) == (4990, "EUR")
    assert len(row["fingerprint"]) == 32


async def test_occurred_at_defaults_to_receive_time_and_value_is_optional(
    client: httpx.AsyncClient, org: Org
) -> None:
    _, click_id = await scanned(client, org)
    before = dt.datetime.now(dt.UTC)
    response = await client.post(
        "/v1/conversions",
        json={"click_id": click_id, "event": "signup", "external_id": "lead-1"},
        headers=org.headers,
    )
    after = dt.datetime.now(dt.UTC)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["value"] is None
    assert data["attributed"] is True
    assert before <= dt.datetime.fromisoformat(data["occurred_at"]) <= after

    # A retry without occurred_at is the same request, although time has passed.
    replay = await client.post(
        "/v1/conversions",
        json={"click_id": click_id, "event": "signup", "external_id": "lead-1"},
        headers=org.headers,
    )
    assert replay.status_code == 200, replay.text
    assert replay.json() == data


async def test_idempotent_replay(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    _, click_id = await scanned(client, org)
    first = await client.post("/v1/conversions", json=body(click_id), headers=org.headers)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/conversions", json=body(click_id), headers=org.headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # The same instant and currency spelled differently is the same request.
    equivalent = body(
        click_id,
        value={"amount_minor": 4990, "currency": "eur"},
        occurred_at="2026-11-20T13:30:00Z",
    )
    third = await client.post("/v1/conversions", json=equivalent, headers=org.headers)
    assert third.status_code == 200, third.text
    assert third.json()["id"] == first.json()["id"]
    assert await count_conversions(engine) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"value": {"amount_minor": 5990, "currency": "EUR"}},
        {"value": {"amount_minor": 4990, "currency": "USD"}},
        {"value": None},
        {"event": "refund"},
        {"occurred_at": "2026-11-20T14:31:00+01:00"},
        {"click_id": "another-click-id"},
    ],
)
async def test_conflicting_replay(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, change: dict[str, Any]
) -> None:
    _, click_id = await scanned(client, org)
    first = await client.post("/v1/conversions", json=body(click_id), headers=org.headers)
    assert first.status_code == 201, first.text
    before = await table_snapshot(engine, "conversions", "scans")
    response = await client.post(
        "/v1/conversions", json={**body(click_id), **change}, headers=org.headers
    )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "conversion_conflict"
    assert problem["status"] == 409
    assert await table_snapshot(engine, "conversions", "scans") == before


async def test_occurred_at_absent_then_present_conflicts(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    _, click_id = await scanned(client, org)
    without = {k: v for k, v in body(click_id).items() if k != "occurred_at"}
    first = await client.post("/v1/conversions", json=without, headers=org.headers)
    assert first.status_code == 201, first.text
    # Even the very time it was stored with: the bodies differ.
    with_time = body(click_id, occurred_at=first.json()["occurred_at"])
    response = await client.post("/v1/conversions", json=with_time, headers=org.headers)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "conversion_conflict"
    assert await count_conversions(engine) == 1


async def test_concurrent_identical_requests_store_one_row(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    _, click_id = await scanned(client, org)
    responses = await asyncio.gather(
        *(
            client.post("/v1/conversions", json=body(click_id), headers=org.headers)
            for _ in range(6)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_conversions(engine) == 1


async def test_racing_insert_waits_for_the_first_transaction(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    """Deterministic race: the second insert blocks on the unique key until the first
    transaction ends, then answers the committed row (same body) or a conflict."""
    _, click_id = await scanned(client, org)
    same = ConversionCreate.model_validate(body(click_id, "race-1"))
    other = ConversionCreate.model_validate(body(click_id, "race-1", event="refund"))

    async with sessionmaker() as first, sessionmaker() as second, sessionmaker() as third:
        created = await record_conversion(first, organization_id=org.id, data=same)
        assert created.created
        waiting = asyncio.create_task(record_conversion(second, organization_id=org.id, data=same))
        clashing = asyncio.create_task(record_conversion(third, organization_id=org.id, data=other))
        await asyncio.sleep(0.3)
        assert not waiting.done() and not clashing.done()  # blocked on the unique key
        await first.commit()
        replay = await waiting
        assert not replay.created
        assert replay.conversion.id == created.conversion.id
        with pytest.raises(Conflict) as info:
            await clashing
        assert info.value.code == "conversion_conflict"
        await second.commit()
        await third.rollback()
    assert await count_conversions(engine) == 1


async def test_racing_insert_proceeds_when_the_first_rolls_back(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    _, click_id = await scanned(client, org)
    data = ConversionCreate.model_validate(body(click_id, "race-2"))
    async with sessionmaker() as first, sessionmaker() as second:
        await record_conversion(first, organization_id=org.id, data=data)
        waiting = asyncio.create_task(record_conversion(second, organization_id=org.id, data=data))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await first.rollback()
        result = await waiting
        assert result.created
        await second.commit()
    assert await count_conversions(engine) == 1


async def test_unknown_click_id_is_stored_unattributed(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await scanned(client, org)
    response = await client.post(
        "/v1/conversions", json=body("no-such-click-id"), headers=org.headers
    )
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["attributed"] is False
    assert (data["scan_id"], data["campaign_id"], data["tag_id"]) == (None, None, None)
    assert data["click_id"] == "no-such-click-id"
    assert await count_conversions(engine) == 1


async def test_other_organizations_click_id_is_unknown(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    _, click_id = await scanned(client, org)
    response = await client.post("/v1/conversions", json=body(click_id), headers=other_org.headers)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["attributed"] is False
    assert (data["scan_id"], data["campaign_id"], data["tag_id"]) == (None, None, None)
    # external_id is unique per organization: the owner's own order is independent.
    mine = await client.post("/v1/conversions", json=body(click_id), headers=org.headers)
    assert mine.status_code == 201, mine.text
    assert mine.json()["attributed"] is True
    assert mine.json()["id"] != data["id"]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT organization_id, scan_id FROM conversions ORDER BY id"))
        ).all()
    assert rows[0] == (other_org.id, None)
    assert rows[1][0] == org.id and rows[1][1] is not None


@pytest.mark.parametrize(
    "change",
    [
        {"value": {"amount_minor": 100, "currency": "EUX"}},
        {"value": {"amount_minor": 100, "currency": "EURO"}},
        {"value": {"amount_minor": 100, "currency": "€"}},
        {"value": {"amount_minor": -1, "currency": "EUR"}},
        {"value": {"amount_minor": 1.5, "currency": "EUR"}},
        {"value": {"amount_minor": 100}},
        {"occurred_at": "2026-11-20T14:30:00"},
        {"occurred_at": "yesterday"},
        {"external_id": ""},
        {"click_id": ""},
        {"click_id": "has spaces"},
        {"event": "   "},
        {"unexpected": 1},
    ],
)
async def test_invalid_body_is_rejected_and_nothing_stored(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, change: dict[str, Any]
) -> None:
    _, click_id = await scanned(client, org)
    before = await table_snapshot(engine, "conversions")
    response = await client.post(
        "/v1/conversions", json={**body(click_id, "order-bad"), **change}, headers=org.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"]
    assert await table_snapshot(engine, "conversions") == before


@pytest.mark.parametrize("missing", ["external_id", "click_id", "event"])
async def test_missing_field_is_rejected(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, missing: str
) -> None:
    _, click_id = await scanned(client, org)
    data = body(click_id)
    del data[missing]
    response = await client.post("/v1/conversions", json=data, headers=org.headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any(e["loc"] == ["body", missing] for e in problem["errors"])
    assert await count_conversions(engine) == 0


async def test_occurred_at_far_in_the_future_is_rejected(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    _, click_id = await scanned(client, org)
    now = dt.datetime.now(dt.UTC)
    late = body(click_id, "order-late", occurred_at=(now + dt.timedelta(hours=25)).isoformat())
    response = await client.post("/v1/conversions", json=late, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "occurred_at_in_future"
    assert await count_conversions(engine) == 0
    # Clock skew within the allowance is accepted.
    skewed = body(click_id, "order-skew", occurred_at=(now + dt.timedelta(hours=2)).isoformat())
    response = await client.post("/v1/conversions", json=skewed, headers=org.headers)
    assert response.status_code == 201, response.text


async def test_requires_an_api_key(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    _, click_id = await scanned(client, org)
    response = await client.post("/v1/conversions", json=body(click_id))
    assert response.status_code == 401
    response = await client.post(
        "/v1/conversions", json=body(click_id), headers={"Authorization": "Bearer psk_nope"}
    )
    assert response.status_code == 401
    assert await count_conversions(engine) == 0
