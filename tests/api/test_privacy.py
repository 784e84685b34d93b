"""Privacy: retention (``passerelle purge`` and its daily run), access and erasure
requests (``/v1/privacy/scans``), and no full client address anywhere."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import served_app
from campaigns.services import retention
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.http import assert_problem
from tests.fixtures.journeys import convert, insert_scan
from tests.fixtures.privacy import column, pg_dump, set_retention
from tests.fixtures.user_agents import IPHONE_SAFARI

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
#: Counts of the holders a test without webhooks, live feed batches or consents touches.
NO_HOLDER_ROWS = {"feed_batches": 0, "visitor_cookie_consents": 0, "webhook_deliveries": 0}


async def add_fix(engine: AsyncEngine, org: Org, click_id: str, at: dt.datetime) -> None:
    """A consented GPS fix for ``click_id`` recorded at ``at``."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO scan_locations (click_id, organization_id, position, accuracy_m,"
                " recorded_at) VALUES (:click, :org,"
                " ST_SetSRID(ST_MakePoint(2.3376, 48.8606), 4326)::geography, 12.5, :at)"
            ),
            {"click": click_id, "org": org.id, "at": at},
        )


# --- retention ------------------------------------------------------------------------


async def test_purge_at_the_retention_edge(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=30, precise=7)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    theirs = await make_tag(client, other_org, (await make_campaign(client, other_org))["id"])
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    horizon = now - 30 * DAY
    kept = await insert_scan(engine, org, tag, horizon + SECOND)
    past = await insert_scan(engine, org, tag, horizon - SECOND)
    await insert_scan(engine, org, tag, horizon - 100 * DAY)
    # The other organization keeps 395 days: its 31-day-old scan stays.
    their_scan = await insert_scan(engine, other_org, theirs, horizon - SECOND)
    # GPS fixes: the precise term is 7 days.
    await add_fix(engine, org, kept, now - 7 * DAY + SECOND)
    recent = await insert_scan(engine, org, tag, now - DAY)
    await add_fix(engine, org, recent, now - DAY)
    await add_fix(engine, org, past, horizon - SECOND)
    coarse = await insert_scan(engine, org, tag, now - 8 * DAY)
    await add_fix(engine, org, coarse, now - 7 * DAY - SECOND)
    # A conversion on a purged scan stays, unattributed.
    conversion = await convert(client, org, past, "order-1", now - 29 * DAY)
    assert conversion["attributed"] is True

    report = await retention.purge(engine, now=now, batch_size=1)
    assert report.as_dict() == {
        "counts": {"scan_locations": 2, "scans": 2, **NO_HOLDER_ROWS},
        "organizations": 2,
        # This organization's days of the purged scans: their rollups were built first.
        "sealed_days": 2,
        "skipped_batches": 0,
    }
    remaining = await column(engine, "SELECT click_id FROM scans ORDER BY id")
    assert remaining == [kept, their_scan, recent, coarse]
    assert await column(engine, "SELECT click_id FROM scan_locations ORDER BY 1") == sorted(
        [recent, kept]
    )
    # The coarsened scan keeps its own (placement or IP) position of record.
    sources = await column(
        engine, "SELECT geo_source FROM scan_positions WHERE click_id = :c", c=coarse
    )
    assert sources == [None]
    listed = (await client.get("/v1/conversions", headers=org.headers)).json()["items"]
    assert [(c["click_id"], c["attributed"], c["scan_id"]) for c in listed] == [(past, False, None)]
    # A second purge at the same time finds nothing.
    again = await retention.purge(engine, now=now)
    assert again.as_dict()["counts"] == {"scan_locations": 0, "scans": 0, **NO_HOLDER_ROWS}
    assert again.sealed_days == 0


async def test_a_purged_fix_keeps_the_store_it_fell_in(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """Past its term a consented fix is reduced to its store (PRIVACY.md): the position
    and accuracy go, the scan's store of record stays the fix's, and the position falls
    back to the scan's own."""
    await set_retention(client, org, scans=30, precise=7)
    store = await client.post(
        "/v1/locations",
        json={"name": "Rivoli", "point": {"type": "Point", "coordinates": [2.3376, 48.8606]}},
        headers=org.headers,
    )
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    click = await insert_scan(engine, org, tag, now - 8 * DAY)
    await add_fix(engine, org, click, now - 8 * DAY)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE scan_locations SET location_id = :store WHERE click_id = :c"),
            {"store": store.json()["id"], "c": click},
        )
    read = "SELECT geo_source, location_id FROM scan_positions WHERE click_id = :c"
    async with engine.connect() as conn:
        assert (await conn.execute(text(read), {"c": click})).one() == ("gps", store.json()["id"])

    report = await retention.purge(engine, now=now)
    assert report.as_dict()["counts"]["scan_locations"] == 1
    async with engine.connect() as conn:
        assert (await conn.execute(text(read), {"c": click})).one() == (None, store.json()["id"])
        fix = await conn.execute(
            text("SELECT position, accuracy_m FROM scan_locations WHERE click_id = :c"),
            {"c": click},
        )
        assert fix.one() == (None, None)
    # Nothing precise is left to give in an access request, nor to purge again.
    held = await client.get(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert held.status_code == 200, held.text
    assert held.json()["positions"] == []
    again = await retention.purge(engine, now=now)
    assert again.as_dict()["counts"]["scan_locations"] == 0


async def test_a_locked_batch_is_skipped_not_waited_for(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=1, precise=1)
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    old = await insert_scan(engine, org, tag, dt.datetime.now(dt.UTC) - 2 * DAY)
    async with engine.connect() as locker:
        await locker.execute(text("SELECT 1 FROM scans WHERE click_id = :c FOR UPDATE"), {"c": old})
        report = await retention.purge(engine)
        await locker.rollback()
    assert report.as_dict() == {
        "counts": {"scan_locations": 0, "scans": 0, **NO_HOLDER_ROWS},
        "organizations": 1,
        "sealed_days": 1,
        "skipped_batches": 1,
    }
    assert (await retention.purge(engine)).as_dict()["counts"]["scans"] == 1


async def test_the_daily_run_is_once_a_day_and_under_one_lock(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=1, precise=1)
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    now = dt.datetime.now(dt.UTC)
    await insert_scan(engine, org, tag, now - 2 * DAY)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM maintenance_runs"))
    # Another process holds the lock: this one does nothing.
    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": retention.PURGE_LOCK_KEY})
        await holder.commit()
        assert await retention.run_if_due(engine, now=now) is None
        await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": retention.PURGE_LOCK_KEY})
        await holder.commit()
    assert await column(engine, "SELECT count(*) FROM scans") == [1]
    first = await retention.run_if_due(engine, now=now)
    assert first is not None
    assert first.as_dict()["counts"]["scans"] == 1
    # Not due again within the day, due after it.
    assert await retention.run_if_due(engine, now=now + DAY - SECOND) is None
    assert await retention.run_if_due(engine, now=now + DAY) is not None
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT last_run_at, result FROM maintenance_runs WHERE name = 'purge'")
            )
        ).one()
    assert row.last_run_at == now + DAY
    assert row.result["counts"] == {"scan_locations": 0, "scans": 0, **NO_HOLDER_ROWS}
    # Two processes at once: one runs, the other finds the lock taken or the run done.
    results = await asyncio.gather(
        retention.run_if_due(engine, now=now + 3 * DAY),
        retention.run_if_due(engine, now=now + 3 * DAY),
    )
    assert sum(r is not None for r in results) == 1


async def test_reports_say_what_they_cover(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await set_retention(client, org, scans=100, precise=30)
    campaign = await make_campaign(client, org)
    before = dt.datetime.now(dt.UTC)
    report = await client.get(f"/v1/campaigns/{campaign['id']}/attribution", headers=org.headers)
    heatmap = await client.get(f"/v1/campaigns/{campaign['id']}/heatmap", headers=org.headers)
    after = dt.datetime.now(dt.UTC)
    assert report.status_code == heatmap.status_code == 200
    expected = {retention.horizon_day(before, 100), retention.horizon_day(after, 100)}
    for body in (report.json(), heatmap.json()):
        assert dt.datetime.fromisoformat(body["data_since"]) in expected


def test_horizon_day_is_the_next_midnight() -> None:
    at = dt.datetime(2026, 12, 6, 15, 30, tzinfo=dt.UTC)
    assert retention.horizon_day(at, 395) == dt.datetime(2025, 11, 7, tzinfo=dt.UTC)
    midnight = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    assert retention.horizon_day(midnight, 1) == dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    assert retention.horizon_day(midnight + SECOND, 1) == midnight


# --- access and erasure ---------------------------------------------------------------


async def test_access_shows_everything_held(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    at = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    click = await insert_scan(engine, org, tag, at, visitor=b"v" * 16)
    await add_fix(engine, org, click, at + SECOND)
    conversion = await convert(client, org, click, "order-1", at + DAY)
    response = await client.get(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["click_id"], body["visitor"], body["other"]) == (
        click,
        None,
        {"visitor_cookie_consents": [], "webhook_deliveries": []},
    )
    (scan,) = body["scans"]
    assert scan["click_id"] == click
    assert scan["tag_id"] == tag["id"]
    assert scan["visitor_id"] == (b"v" * 16).hex()
    assert scan["scanned_at"] == "2026-12-01T10:00:00Z"
    assert body["positions"] == [
        {
            "click_id": click,
            "lat": 48.8606,
            "lon": 2.3376,
            "accuracy_m": 12.5,
            "recorded_at": "2026-12-01T10:00:01Z",
        }
    ]
    assert [c["id"] for c in body["conversions"]] == [conversion["id"]]
    assert body["conversions"][0]["attributed"] is True
    # Another organization's click id is unknown to this one.
    response = await client.get(f"/v1/privacy/scans?click_id={click}", headers=other_org.headers)
    assert_problem(response, 404, "privacy_subject_not_found")


async def test_access_and_erasure_by_visitor_cookie(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    at = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    cookie = uuid.uuid4()
    first = await insert_scan(engine, org, tag, at, cookie=cookie)
    second = await insert_scan(engine, org, tag, at + 3 * DAY, cookie=cookie)
    stranger = await insert_scan(engine, org, tag, at + DAY, cookie=uuid.uuid4())
    await convert(client, org, second, "order-2", at + 3 * DAY + SECOND)
    response = await client.get(f"/v1/privacy/scans?visitor={cookie}", headers=org.headers)
    assert response.status_code == 200, response.text
    assert [s["click_id"] for s in response.json()["scans"]] == [first, second]
    assert [s["cookie_id"] for s in response.json()["scans"]] == [str(cookie)] * 2
    assert len(response.json()["conversions"]) == 1
    response = await client.delete(f"/v1/privacy/scans?visitor={cookie}", headers=org.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "click_id": None,
        "visitor": str(cookie),
        "counts": {"conversions": 1, "scan_locations": 0, "scans": 2, **NO_HOLDER_ROWS},
    }
    assert await column(engine, "SELECT click_id FROM scans") == [stranger]
    response = await client.get(f"/v1/privacy/scans?visitor={cookie}", headers=org.headers)
    assert_problem(response, 404, "privacy_subject_not_found")


@pytest.mark.parametrize(
    "query",
    ["", "?click_id=abc&visitor=0b1f2d4e-7c4b-4d54-9d3c-6a7c9b1f2d4e", "?visitor=not-a-uuid"],
)
async def test_bad_privacy_queries(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, query: str
) -> None:
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    await insert_scan(engine, org, tag, dt.datetime.now(dt.UTC))
    before = await table_snapshot(engine, "scans", "conversions")
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/v1/privacy/scans{query}", headers=org.headers)
        assert_problem(response, 422, "invalid_privacy_query")
    assert await table_snapshot(engine, "scans", "conversions") == before


async def test_unknown_and_foreign_subjects_are_404(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    click = await insert_scan(engine, org, tag, dt.datetime.now(dt.UTC))
    await convert(client, org, click, "order-1", dt.datetime.now(dt.UTC))
    before = await table_snapshot(engine, "scans", "conversions")
    for who, query in (
        (org, "click_id=nope"),
        (org, f"visitor={uuid.uuid4()}"),
        (other_org, f"click_id={click}"),
    ):
        for method in ("GET", "DELETE"):
            response = await client.request(
                method, f"/v1/privacy/scans?{query}", headers=who.headers
            )
            assert_problem(response, 404, "privacy_subject_not_found")
    assert await table_snapshot(engine, "scans", "conversions") == before
    assert (await client.get(f"/v1/privacy/scans?click_id={click}")).status_code == 401


async def test_erasure_unlinks_conversions_and_leaves_no_trace(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, database_url: str
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC)
    click = await insert_scan(engine, org, tag, now - DAY, visitor=b"w" * 16)
    other = await insert_scan(engine, org, tag, now - DAY)
    await add_fix(engine, org, click, now - DAY + SECOND)
    conversion = await convert(
        client, org, click, "order-1", now - SECOND, {"amount_minor": 4990, "currency": "EUR"}
    )
    await convert(client, org, other, "order-2", now - SECOND)
    assert click in pg_dump(database_url)

    response = await client.delete(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "click_id": click,
        "visitor": None,
        "counts": {"conversions": 1, "scan_locations": 1, "scans": 1, **NO_HOLDER_ROWS},
    }
    assert click not in pg_dump(database_url)
    # The conversion stays, unlinked and unattributed; the other one is untouched.
    listed = (await client.get("/v1/conversions", headers=org.headers)).json()["items"]
    by_id = {c["id"]: c for c in listed}
    erased = by_id[conversion["id"]]
    assert (erased["click_id"], erased["attributed"], erased["scan_id"]) == (None, False, None)
    assert (erased["campaign_id"], erased["tag_id"]) == (None, None)
    assert erased["value"] == {"amount_minor": 4990, "currency": "EUR"}
    assert sorted(c["click_id"] or "" for c in listed) == ["", other]
    # Reports stay consistent: the erased conversion is unattributed.
    cid = campaign["id"]
    attribution = await client.get(f"/v1/campaigns/{cid}/attribution", headers=org.headers)
    assert attribution.status_code == 200, attribution.text
    assert attribution.json()["totals"]["conversions"] == 1.0
    assert attribution.json()["unattributed"] == {
        "conversions": 1,
        "revenue": [{"currency": "EUR", "amount_minor": 4990}],
    }
    for path in (
        f"/v1/campaigns/{cid}/attribution.csv",
        f"/v1/campaigns/{cid}/attribution.csv?group_by=day",
        f"/v1/campaigns/{cid}/stats",
        f"/v1/campaigns/{cid}/stats.csv",
        f"/v1/campaigns/{cid}/stats?interval=day&breakdown=os",
        f"/v1/campaigns/{cid}/scans?format=csv",
        "/v1/conversions?limit=1",
    ):
        response = await client.get(path, headers=org.headers)
        assert response.status_code == 200, (path, response.text)
    # Erasing again: nothing is held any more.
    response = await client.delete(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert_problem(response, 404, "privacy_subject_not_found")


# --- addresses end to end -------------------------------------------------------------

IPV4 = "203.0.113.77"
IPV6 = "2001:db8:85a3:8d3:1319:8a2e:370:7348"


async def test_no_full_address_is_kept_anywhere(
    app: FastAPI,
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    campaign = await make_campaign(client, org, precise_location="ask")
    cid = campaign["id"]
    tag = await make_tag(client, org, cid)
    plain = await make_tag(
        client, org, (await make_campaign(client, org, slug="plain"))["id"], label="plain"
    )
    # Scans through a trusted proxy (127.0.0.1 and ::1 are trusted by default), and a
    # direct one from the IPv4 address (the test client's own peer address).
    for peer, address in (("127.0.0.1", IPV4), ("::1", IPV6)):
        transport = httpx.ASGITransport(app=served_app(app), client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
            for code in (tag["code"], plain["code"]):
                response = await c.get(
                    f"/s/{code}",
                    headers={"User-Agent": IPHONE_SAFARI, "X-Forwarded-For": address},
                )
                assert response.status_code in (200, 302), response.text
            response = await c.get("/s/ZZZZZZZZ", headers={"X-Forwarded-For": address})
            assert response.status_code == 404
    assert (
        await client.get(f"/s/{plain['code']}", headers={"User-Agent": IPHONE_SAFARI})
    ).status_code == 302
    clicks = await column(engine, "SELECT click_id FROM scans WHERE tag_id = :t", t=tag["id"])
    assert len(clicks) == 2
    location = await client.post(
        f"/s/{clicks[0]}/location", json={"lat": 48.86, "lon": 2.33, "accuracy_m": 10}
    )
    assert location.status_code == 204
    stored = await column(engine, "SELECT host(ip_truncated) FROM scans ORDER BY id")
    assert sorted(set(stored)) == ["2001:db8:85a3::", "203.0.113.0"]
    await convert(client, org, clicks[0], "order-1", dt.datetime.now(dt.UTC))

    exports = [
        f"/v1/campaigns/{cid}/scans?format=csv",
        f"/v1/campaigns/{cid}/scans?format=geojson",
        f"/v1/campaigns/{cid}/scans",
        f"/v1/campaigns/{cid}/stats.csv",
        f"/v1/campaigns/{cid}/stats.csv?interval=day",
        f"/v1/campaigns/{cid}/stats?breakdown=country",
        f"/v1/campaigns/{cid}/attribution.csv",
        f"/v1/campaigns/{cid}/heatmap",
        f"/v1/campaigns/{cid}/stats/locations",
        f"/v1/privacy/scans?click_id={clicks[0]}",
        "/v1/conversions",
    ]
    texts = []
    for path in exports:
        response = await client.get(path, headers=org.headers)
        assert response.status_code == 200, (path, response.text)
        texts.append(response.text)
    texts.append((await client.get("/metrics")).text)
    texts.append(await asyncio.to_thread(pg_dump, database_url))
    texts.append(caplog.text)
    texts.extend(str(record.args) for record in caplog.records)
    for address in (IPV4, IPV6, IPV6.upper()):
        for number, blob in enumerate(texts):
            assert address not in blob, (address, number)
