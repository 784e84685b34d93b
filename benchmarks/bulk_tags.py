"""Bulk tags: how long ``create_tags_bulk`` takes for S stores x L labels (default 2,000
x 5 = 10,000 tags), first creating them, then repeating the call (idempotent: nothing
new), then through the HTTP route ``POST /v1/campaigns/{id}/tags/bulk`` (the app in
process over ASGI: validation, the same service, commit, cache reload, 10,000 tags
serialised as JSON).

    python benchmarks/bulk_tags.py [--stores 2000] [--labels 5]

Creates a throwaway database on PASSERELLE_TEST_DATABASE_URL (or the local server) and
drops it at the end. Prints seconds and tags/s for each pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app
from campaigns import migrate
from campaigns.db import make_engine, make_sessionmaker, unit_of_work
from campaigns.schemas import CampaignCreate
from campaigns.services.campaigns import create_campaign
from campaigns.services.locations import import_locations
from campaigns.services.organizations import create_organization
from campaigns.services.tags import create_tags_bulk
from campaigns.settings import Settings

SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ORIGIN = "https://go.example.com"


def stores_csv(count: int) -> str:
    """``count`` stores scattered over metropolitan France."""
    rng = random.Random(1)
    lines = ["name,external_id,lat,lon"]
    lines += [
        f"Store {i},S-{i:06d},{rng.uniform(43.0, 50.5):.6f},{rng.uniform(-1.5, 7.5):.6f}"
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def report(what: str, tags: int, created: int, elapsed: float) -> None:
    print(f"{what}: {tags} tags ({created} created) in {elapsed:.2f} s = {tags / elapsed:,.0f}/s")


async def run(url: str, stores: int, labels: list[str]) -> None:
    engine = make_engine(url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessionmaker) as session:
            organization, issued = await create_organization(session, name="Benchmark")
            organization_id = organization.id
            await import_locations(
                session, organization_id=organization_id, content=stores_csv(stores), fmt="csv"
            )
            campaign_ids = [
                (
                    await create_campaign(
                        session,
                        organization_id=organization_id,
                        data=CampaignCreate.model_validate(
                            {"name": f"Roll-out {n}", "destination_url": "https://shop.example/"}
                        ),
                        short_link_origin=ORIGIN,
                    )
                ).id
                for n in (1, 2)
            ]
        for what in ("service, create", "service, repeat"):
            start = time.perf_counter()
            async with unit_of_work(sessionmaker) as session:
                result = await create_tags_bulk(
                    session,
                    organization_id=organization_id,
                    campaign_id=campaign_ids[0],
                    kind="qr",
                    location_ids="all",
                    labels=labels,
                )
            report(what, len(result.tags), result.created, time.perf_counter() - start)
    finally:
        await engine.dispose()

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            environment="test",
            database_url=url,
            base_url=ORIGIN,
            secret_key=secrets.token_urlsafe(32),
            data_dir=Path(data_dir),
            rate_limit_enabled=False,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
                for what in ("HTTP, create", "HTTP, repeat"):
                    start = time.perf_counter()
                    response = await client.post(
                        f"/v1/campaigns/{campaign_ids[1]}/tags/bulk",
                        json={"kind": "qr", "location_ids": "all", "labels": labels},
                        headers={"Authorization": f"Bearer {issued.secret}"},
                        timeout=600,
                    )
                    elapsed = time.perf_counter() - start
                    response.raise_for_status()
                    body = response.json()
                    report(
                        f"{what} ({response.status_code})",
                        len(body["tags"]),
                        body["created"],
                        elapsed,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", type=int, default=2_000)
    parser.add_argument("--labels", type=int, default=5, help="labels per store (1 to 100)")
    args = parser.parse_args()
    name = f"passerelle_bench_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        labels = [f"label-{n}" for n in range(1, args.labels + 1)]
        asyncio.run(run(url, args.stores, labels))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
