from __future__ import annotations

from collections.abc import Iterator

import pytest

from campaigns import migrate
from tests.e2e.harness import PrivateCluster


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A private, migrated PostgreSQL that the test may stop and start."""
    pg = PrivateCluster()
    try:
        pg.start()
        migrate.ensure_database(pg.url)
        migrate.upgrade(pg.url)
        yield pg
    finally:
        pg.destroy()


def seed(pg: PrivateCluster, destination: str = "https://shop.example.com/p") -> tuple[int, str]:
    """One organization, campaign and active QR tag; returns (campaign id, code)."""
    import psycopg

    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            "INSERT INTO organizations (name) VALUES ('e2e') RETURNING id"
        ).fetchone()
        assert row is not None
        org = row[0]
        row = conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url) "
            "VALUES (%s, 'e2e', 'e2e', %s) RETURNING id",
            (org, destination),
        ).fetchone()
        assert row is not None
        campaign = row[0]
        conn.execute(
            "INSERT INTO tags (organization_id, campaign_id, code, kind, label) "
            "VALUES (%s, %s, 'E2E7CD9X', 'qr', 'door')",
            (org, campaign),
        )
    return campaign, "E2E7CD9X"
