"""Campaign creation under concurrency, at the service level: each creation in its own
session and connection, all at once."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import select

from campaigns.db import make_engine, make_sessionmaker, unit_of_work
from campaigns.models import Campaign
from tests.fixtures.factories import make_campaign, make_org


async def test_twenty_concurrent_creations_with_one_name_all_get_distinct_slugs(
    database_url: str,
) -> None:
    engine = make_engine(database_url, pool_size=20)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessionmaker) as session:
            org = await make_org(session)

        async def create() -> str:
            async with unit_of_work(sessionmaker) as session:
                campaign = await make_campaign(session, organization_id=org.id, name="Été 2026")
                return campaign.slug

        slugs = await asyncio.gather(*(create() for _ in range(20)))
        async with sessionmaker() as session:
            stored = list(
                await session.scalars(
                    select(Campaign.slug).where(Campaign.organization_id == org.id)
                )
            )
    finally:
        await engine.dispose()
    assert len(set(slugs)) == 20
    assert sorted(stored) == sorted(slugs)
    assert "ete-2026" in slugs
    assert all(re.fullmatch(r"ete-2026(-[0-9]+|-[a-z0-9]{6})?", slug) for slug in slugs)
