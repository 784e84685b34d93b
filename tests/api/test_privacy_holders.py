"""The personal data holders besides scans (campaigns/personal_data.py): webhook
deliveries, live feed batches and visitor cookie consents, in access and erasure
requests and in ``passerelle purge``."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.journeys import convert, eur
from tests.fixtures.privacy import column, pg_dump, set_retention
from tests.fixtures.user_agents import IPHONE_SAFARI

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.timedelta(days=1)


async def create_webhook(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    # http to 127.0.0.1 is allowed in the test environment (settings fixture).
    response = await client.post(
        "/v1/webhooks",
        json={
            "url": "http://127.0.0.1:9/hooks",
            "events": ["scan.created", "conversion.created"],
        },
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def scan(client: httpx.AsyncClient, code: str) -> str:
    """A person's scan through the scan path; its click id (stored when answered)."""
    response = await client.get(f"/s/{code}", headers={"user-agent": IPHONE_SAFARI})
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0]


async def consent(engine: AsyncEngine, org: Org, click_id: str, cookie: uuid.UUID) -> None:
    """The visitor's "yes" on the consent page shown by the scan ``click_id``."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO visitor_cookie_consents (click_id, organization_id, cookie_id)"
                " VALUES (:click, :org, :cookie)"
            ),
            {"click": click_id, "org": org.id, "cookie": cookie},
        )


async def event_ids(engine: AsyncEngine) -> list[str]:
    return await column(engine, "SELECT event_id FROM webhook_deliveries ORDER BY id")


async def fed_click_ids(engine: AsyncEngine) -> list[str]:
    return await column(
        engine, "SELECT c FROM feed_batches, unnest(click_ids) AS c WHERE kind = 'scan' ORDER BY 1"
    )


async def test_access_and_erasure_cover_deliveries_feed_batches_and_consents(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine, database_url: str
) -> None:
    webhook = await create_webhook(client, org)
    await create_webhook(client, other_org)
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    click = await scan(client, tag["code"])
    stranger = await scan(client, tag["code"])
    cookie = uuid.uuid4()
    await consent(engine, org, click, cookie)
    conversion = await convert(client, org, click, "order-1", dt.datetime.now(dt.UTC), eur(4990))
    # The outbox holds the two scans' events and the conversion's; the feed their clicks.
    assert await event_ids(engine) == [
        f"evt_scan_{click}",
        f"evt_scan_{stranger}",
        f"evt_conversion_{conversion['id']}",
    ]
    assert await fed_click_ids(engine) == sorted([click, stranger])

    # Access, by click id and by the visitor cookie given on the consent page.
    for query in (f"click_id={click}", f"visitor={cookie}"):
        response = await client.get(f"/v1/privacy/scans?{query}", headers=org.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [s["click_id"] for s in body["scans"]] == [click]
        assert [c["id"] for c in body["conversions"]] == [conversion["id"]]
        (given,) = body["other"]["visitor_cookie_consents"]
        assert (given["click_id"], given["cookie_id"]) == (click, str(cookie))
        held = body["other"]["webhook_deliveries"]
        assert [(d["event_id"], d["webhook_id"], d["click_id"]) for d in held] == [
            (f"evt_scan_{click}", webhook["id"], click),
            (f"evt_conversion_{conversion['id']}", webhook["id"], click),
        ]
        assert held[0]["payload"]["data"]["click_id"] == click
        assert held[1]["payload"]["data"]["value"] == eur(4990)
    # Another organization's request sees nothing of it.
    response = await client.get(f"/v1/privacy/scans?visitor={cookie}", headers=other_org.headers)
    assert response.status_code == 404

    response = await client.delete(f"/v1/privacy/scans?visitor={cookie}", headers=org.headers)
    assert response.status_code == 200, response.text
    assert response.json()["counts"] == {
        "conversions": 1,
        "feed_batches": 1,
        "scan_locations": 0,
        "scans": 1,
        "visitor_cookie_consents": 1,
        "webhook_deliveries": 2,
    }
    assert await event_ids(engine) == [f"evt_scan_{stranger}"]
    assert await fed_click_ids(engine) == [stranger]
    assert await column(engine, "SELECT count(*) FROM visitor_cookie_consents") == [0]
    assert click not in await asyncio.to_thread(pg_dump, database_url)
    # The other person's scan, delivery and feed entry are untouched.
    assert await column(engine, "SELECT click_id FROM scans") == [stranger]


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PASSERELLE_")}
    env.update(PASSERELLE_DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_purge_command_removes_old_deliveries(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, database_url: str
) -> None:
    await set_retention(client, org, scans=1, precise=1)
    await create_webhook(client, org)
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    old = await scan(client, tag["code"])
    recent = await scan(client, tag["code"])
    # The first scan and its event are two days old: past the one-day term.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE scans SET scanned_at = now() - interval '2 days' WHERE click_id = :c"),
            {"c": old},
        )
        await conn.execute(
            text(
                "UPDATE webhook_deliveries SET created_at = now() - interval '2 days'"
                " WHERE event_id = :e"
            ),
            {"e": f"evt_scan_{old}"},
        )
    assert await event_ids(engine) == [f"evt_scan_{old}", f"evt_scan_{recent}"]
    result = await asyncio.to_thread(_cli, database_url, "purge")
    assert result.returncode == 0, result.stderr
    assert "webhook_deliveries: 1 row(s) purged" in result.stdout
    assert "scans: 1 row(s) purged" in result.stdout
    assert await event_ids(engine) == [f"evt_scan_{recent}"]
    assert await column(engine, "SELECT click_id FROM scans") == [recent]


async def test_erasure_of_a_purged_click_reaches_its_conversion_event(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await create_webhook(client, org)
    tag = await make_tag(client, org, (await make_campaign(client, org))["id"])
    click = await scan(client, tag["code"])
    conversion = await convert(client, org, click, "order-1", dt.datetime.now(dt.UTC))
    # The scan is gone (purged, say); the conversion still names the click id.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM scans WHERE click_id = :c"), {"c": click})
    assert await event_ids(engine) == [f"evt_scan_{click}", f"evt_conversion_{conversion['id']}"]
    response = await client.delete(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert response.status_code == 200, response.text
    counts = response.json()["counts"]
    assert (counts["scans"], counts["conversions"], counts["webhook_deliveries"]) == (0, 1, 2)
    assert await event_ids(engine) == []
    # The conversion's day was marked dirty before it was unlinked.
    assert await column(engine, "SELECT count(*) FROM rollup_dirty") == [1]
