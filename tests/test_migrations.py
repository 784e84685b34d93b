"""Migrations apply, revert and re-apply on a fresh database, and create what the scan
path relies on (PostGIS, the cache NOTIFY triggers) and the stored credits' triggers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from campaigns import migrate
from campaigns.db import libpq_url
from tests.conftest import SERVER_URL


@pytest.fixture
def fresh_url() -> Iterator[str]:
    name = f"passerelle_migr_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        yield url
    finally:
        migrate.drop_database(url)


NOTIFY_TRIGGERS = {
    f"{table}_notify_cache_{event}"
    for table in ("tags", "campaigns", "locations", "redirect_rules", "webhooks", "organizations")
    for event in ("ins", "upd", "del")
} | {
    f"{table}_notify_cache_truncate"
    for table in ("locations", "redirect_rules", "webhooks", "organizations")
}
#: Stored attribution credits made stale (campaigns/services/credits.py).
CREDITS_TRIGGERS = {
    "scans_credits_stale",
    "visitor_cookie_consents_credits_stale",
    "conversions_credits_stale",
}


def _triggers(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()
    return {row[0] for row in rows}


def test_upgrade_downgrade_upgrade(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    assert _triggers(fresh_url) == NOTIFY_TRIGGERS | CREDITS_TRIGGERS
    migrate.downgrade(fresh_url, "base")
    assert _triggers(fresh_url) == set()
    migrate.upgrade(fresh_url)
    with psycopg.connect(libpq_url(fresh_url)) as conn:
        version = conn.execute("SELECT postgis_lib_version()").fetchone()
    assert version is not None and version[0].startswith("3.")
    assert _triggers(fresh_url) == NOTIFY_TRIGGERS | CREDITS_TRIGGERS


def test_ensure_database_is_idempotent(fresh_url: str) -> None:
    assert migrate.ensure_database(fresh_url) is False


def test_models_match_the_migrations(fresh_url: str) -> None:
    """``alembic check``: autogenerate finds nothing the migrations lack."""
    from alembic import command

    migrate.upgrade(fresh_url)
    command.check(migrate.alembic_config(fresh_url))


def test_duplicate_labels_at_a_location_are_renamed_before_the_unique_index(
    fresh_url: str,
) -> None:
    """Tags made one by one before bulk tags may share (campaign, location, label): all
    are kept (their codes are printed), every one but the oldest relabelled ``#id``."""
    migrate.upgrade(fresh_url, "3f1c9a7e5b21")
    with psycopg.connect(libpq_url(fresh_url), autocommit=True) as conn:
        conn.execute("INSERT INTO organizations (id, name) VALUES (1, 'Acme')")
        conn.execute(
            "INSERT INTO campaigns (id, organization_id, name, slug, destination_url) "
            "VALUES (1, 1, 'C', 'c', 'https://shop.example.com/')"
        )
        conn.execute(
            "INSERT INTO locations (id, organization_id, name, point) "
            "VALUES (1, 1, 'Store', 'SRID=4326;POINT(2.35 48.85)')"
        )
        for tag_id, label, location in [
            (1, "window", 1),
            (2, "window", 1),
            (3, "door", 1),
            (4, "window", 1),
            (5, "window", None),
            (6, "window", None),
        ]:
            conn.execute(
                "INSERT INTO tags (id, organization_id, campaign_id, code, kind, label, "
                "location_id) VALUES (%s, 1, 1, %s, 'qr', %s, %s)",
                (tag_id, f"CODE000{tag_id}", label, location),
            )
    migrate.upgrade(fresh_url)
    with psycopg.connect(libpq_url(fresh_url)) as conn:
        labels = conn.execute("SELECT id, label FROM tags ORDER BY id").fetchall()
    assert labels == [
        (1, "window"),
        (2, "window #2"),
        (3, "door"),
        (4, "window #4"),
        (5, "window"),
        (6, "window"),
    ]
