"""Bulk tags: ``POST /v1/campaigns/{id}/tags/bulk`` (one transaction, idempotent on
campaign, location and label) and the service under it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.services import tags as tag_service
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.http import assert_problem
from tests.fixtures.stores import make_stores

BASE_URL = "https://go.example.com"
TABLES = ("tags", "locations")


async def bulk(
    client: httpx.AsyncClient, org: Org, campaign_id: int, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/campaigns/{campaign_id}/tags/bulk", json=body, headers=org.headers
    )


async def tag_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, campaign_id, location_id, label, kind, status, "
                "ST_AsText(placement) FROM tags ORDER BY id"
            )
        )
        return [tuple(row) for row in rows]


async def test_one_tag_per_location_and_label_placed_at_the_location(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    ids = [store["id"] for store in stores]
    labels = ["window", "counter", "receipt"]
    response = await bulk(
        client, org, campaign["id"], kind="qr", per_location=3, location_ids=ids, labels=labels
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["existing"]) == (9, 0)
    assert [(t["location_id"], t["label"]) for t in body["tags"]] == [
        (location_id, label) for location_id in ids for label in labels
    ]
    for tag in body["tags"]:
        store = next(s for s in stores if s["id"] == tag["location_id"])
        assert tag["placement"] == store["point"]
        assert (tag["kind"], tag["status"], tag["campaign_id"]) == ("qr", "active", campaign["id"])
        assert tag["short_url"] == f"{BASE_URL}/s/{tag['code']}"
        assert len(tag["code"]) == 8
    assert len({t["code"] for t in body["tags"]}) == 9
    rows = await tag_rows(engine)
    assert sorted(row[0] for row in rows) == sorted(t["id"] for t in body["tags"])
    expected_points = {s["id"]: "POINT({} {})".format(*s["point"]["coordinates"]) for s in stores}
    assert all(row[6] == expected_points[row[2]] for row in rows)


async def test_per_location_alone_names_the_tags_1_to_n(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org, 2)
    response = await bulk(
        client, org, campaign["id"], kind="nfc", per_location=4, location_ids="all"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == 8
    assert [(t["location_id"], t["label"], t["kind"]) for t in body["tags"]] == [
        (store["id"], str(n), "nfc") for store in stores for n in range(1, 5)
    ]


async def test_a_repeated_call_creates_nothing_and_returns_the_same_tags(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    ids = [store["id"] for store in stores[:2]]
    first = await bulk(client, org, campaign["id"], per_location=2, location_ids=ids)
    assert first.status_code == 201
    before = await table_snapshot(engine, *TABLES)

    again = await bulk(client, org, campaign["id"], per_location=2, location_ids=ids)
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["existing"]) == (0, 4)
    assert again.json()["tags"] == first.json()["tags"]
    assert await table_snapshot(engine, *TABLES) == before

    # A third store and a third label: only the missing pairs are created.
    wider = await bulk(
        client, org, campaign["id"], per_location=3, location_ids=[s["id"] for s in stores]
    )
    assert wider.status_code == 201
    assert (wider.json()["created"], wider.json()["existing"]) == (5, 4)
    old = {t["id"] for t in first.json()["tags"]}
    assert old < {t["id"] for t in wider.json()["tags"]}
    assert len(await tag_rows(engine)) == 9


async def test_an_existing_single_tag_counts_as_existing(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    (store,) = await make_stores(client, org, 1)
    single = await make_tag(client, org, campaign["id"], label="window", location_id=store["id"])
    response = await bulk(
        client, org, campaign["id"], location_ids=[store["id"]], labels=["window", "door"]
    )
    assert response.status_code == 201
    assert response.json()["created"] == 1
    assert response.json()["tags"][0]["id"] == single["id"]
    # The index also guards tags created one by one.
    duplicate = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags",
        json={"label": "door", "location_id": store["id"]},
        headers=org.headers,
    )
    assert_problem(duplicate, 409, "tag_label_taken")
    moved = await client.patch(
        f"/v1/tags/{single['id']}", json={"label": "door"}, headers=org.headers
    )
    assert_problem(moved, 409, "tag_label_taken")


async def test_concurrent_identical_calls_create_each_tag_once(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    ids = [store["id"] for store in stores]

    async def call(session: AsyncSession) -> tag_service.BulkTags:
        return await tag_service.create_tags_bulk(
            session,
            organization_id=org.id,
            campaign_id=campaign["id"],
            kind="qr",
            location_ids=ids,
            labels=["a", "b"],
        )

    async with sessionmaker() as first, sessionmaker() as second:
        made = await call(first)  # not committed yet: the second call must wait for it
        waiting = asyncio.create_task(call(second))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await first.commit()
        repeated = await waiting
        await second.commit()
    assert (made.created, repeated.created) == (6, 0)
    assert [t.id for t in repeated.tags] == [t.id for t in made.tags]
    assert len(await tag_rows(engine)) == 6

    # Through HTTP, at once: one answer creates them all, the other finds them.
    answers = await asyncio.gather(
        *(bulk(client, org, campaign["id"], location_ids=ids, labels=["c", "d"]) for _ in "12")
    )
    assert sorted(a.status_code for a in answers) == [200, 201]
    assert answers[0].json()["tags"] == answers[1].json()["tags"]
    assert len(await tag_rows(engine)) == 12


async def test_a_foreign_or_unknown_location_creates_nothing(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    (foreign,) = await make_stores(client, other_org, 1)
    before = await table_snapshot(engine, *TABLES)
    for bad in (foreign["id"], 999_999, 2**63):
        response = await bulk(
            client, org, campaign["id"], per_location=2, location_ids=[stores[0]["id"], bad]
        )
        body = assert_problem(response, 404, "location_not_found")
        assert body["location_ids"] == [bad]
        assert await table_snapshot(engine, *TABLES) == before


async def test_bad_input_is_422_and_stores_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = await make_campaign(client, org)
    empty = await bulk(client, org, campaign["id"], per_location=1, location_ids="all")
    assert_problem(empty, 422, "no_locations")
    stores = await make_stores(client, org)
    ids = [store["id"] for store in stores]
    before = await table_snapshot(engine, *TABLES)

    mismatch = await bulk(
        client, org, campaign["id"], per_location=2, location_ids=ids, labels=["a"]
    )
    assert_problem(mismatch, 422, "labels_mismatch")
    invalid: list[dict[str, Any]] = [
        {"per_location": 0, "location_ids": ids},
        {"per_location": 101, "location_ids": ids},
        {"per_location": "3", "location_ids": ids},
        {"location_ids": ids},
        {"labels": [], "location_ids": ids},
        {"labels": ["a", "a"], "location_ids": ids},
        {"labels": ["a", "  "], "location_ids": ids},
        {"per_location": 1, "location_ids": []},
        {"per_location": 1, "location_ids": "some"},
        {"per_location": 1, "location_ids": ids, "kind": "nfc_sun"},
    ]
    for body in invalid:
        assert_problem(await bulk(client, org, campaign["id"], **body), 422, "validation_error")

    monkeypatch.setattr(tag_service, "MAX_BULK_TAGS", 8)
    too_many = await bulk(client, org, campaign["id"], per_location=3, location_ids="all")
    assert (
        "3 locations x 3 labels = 9 tags"
        in assert_problem(too_many, 422, "too_many_tags")["detail"]
    )
    assert await table_snapshot(engine, *TABLES) == before


async def test_tenant_isolation(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    before = await table_snapshot(engine, *TABLES)
    response = await bulk(
        client, other_org, campaign["id"], per_location=1, location_ids=[stores[0]["id"]]
    )
    assert_problem(response, 404, "campaign_not_found")
    # "all" means the caller's locations, never another organization's.
    assert_problem(
        await bulk(client, other_org, campaign["id"], per_location=1, location_ids="all"),
        404,
        "campaign_not_found",
    )
    own = await make_campaign(client, other_org)
    assert_problem(
        await bulk(client, other_org, own["id"], per_location=1, location_ids="all"),
        422,
        "no_locations",
    )
    assert await table_snapshot(engine, *TABLES) == before


async def test_bulk_created_tags_scan_at_once(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    await make_stores(client, org, 3)
    # 3 x 70 = 210 rows: more than the trigger lists, so other processes get "tags:*";
    # this process re-reads the created ids with the request's unit of work.
    response = await bulk(client, org, campaign["id"], per_location=70, location_ids="all")
    assert response.status_code == 201
    tags = response.json()["tags"]
    for tag in (tags[0], tags[-1]):
        scan = await client.get(f"/s/{tag['code']}")
        assert scan.status_code == 302, scan.text
        assert scan.headers["location"].startswith("https://shop.example.com/summer?")


async def test_codes_already_taken_are_drawn_again(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    campaign = await make_campaign(client, org)
    await make_stores(client, org, 2)
    taken = await make_tag(client, org, campaign["id"], label="poster")
    real_new_code = tag_service.new_code
    draws: list[str] = []

    def new_code() -> str:
        # The first two rows of the first chunk get the code of an existing tag.
        code = taken["code"] if len(draws) < 2 else real_new_code()
        draws.append(code)
        return code

    monkeypatch.setattr(tag_service, "new_code", new_code)
    async with sessionmaker() as session:
        result = await tag_service.create_tags_bulk(
            session,
            organization_id=org.id,
            campaign_id=campaign["id"],
            kind="qr",
            location_ids="all",
            per_location=3,
        )
        await session.commit()
    assert result.created == 6
    assert len(draws) == 8  # 6 rows, then the 2 that hit the taken code
    codes = [tag.code for tag in result.tags]
    assert len(set(codes)) == 6 and taken["code"] not in codes
