"""The audit trail of writes made outside the API keys' routes' ORM flushes: privacy
erasures (counts only, never the erased id), purges (by the system), webhooks, and the
dashboard's writes (by the signed-in user)."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.services import retention
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.journeys import insert_scan


async def audit(engine: AsyncEngine) -> list[tuple[str, str, str, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT actor_type, action, resource_type, rows, actor_label"
                " FROM audit_events ORDER BY id"
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_an_erasure_is_audited_by_counts_without_the_erased_id(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    click = await insert_scan(engine, org, tag, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    erased = await client.delete(f"/v1/privacy/scans?click_id={click}", headers=org.headers)
    assert erased.status_code == 200, erased.text
    events = [e for e in await audit(engine) if e[1] == "privacy_erase_scans"]
    assert [(e[0], e[2], e[3]) for e in events] == [("api_key", "scans", 1)]
    async with engine.connect() as conn:
        dumped = await conn.scalar(
            text("SELECT string_agg(audit_events::text, ' ') FROM audit_events")
        )
    assert click not in (dumped or "")


async def test_a_purge_is_audited_by_the_system(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    now = dt.datetime.now(dt.UTC)
    await insert_scan(engine, org, tag, now - dt.timedelta(days=400))
    await insert_scan(engine, org, tag, now - dt.timedelta(days=1))
    report = await retention.purge(engine, now=now)
    assert report.by_organization[org.id]["scans"] == 1
    assert await retention.audit_purge(engine, report) == 1
    assert [e for e in await audit(engine) if e[1] == "purge"] == [
        ("system", "purge", "scans", 1, None)
    ]


async def test_webhook_writes_are_audited(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/a", "events": ["scan.created"]},
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    deleted = await client.delete(f"/v1/webhooks/{created.json()['id']}", headers=org.headers)
    assert deleted.status_code == 204, deleted.text
    assert [(e[0], e[1], e[2]) for e in await audit(engine) if e[2] == "webhooks"] == [
        ("api_key", "webhooks_create", "webhooks"),
        ("api_key", "webhooks_delete", "webhooks"),
    ]
