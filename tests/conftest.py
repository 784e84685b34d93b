"""Test harness: a throwaway PostGIS database per run, migrated with ``alembic upgrade head``.

The server given by ``PASSERELLE_TEST_DATABASE_URL`` (default: the local PostgreSQL as
``postgres``) gets a fresh database ``passerelle_test_<random>``, dropped at the end.
The scan path commits through its own writer connection, which cannot join a test
transaction, so isolation is by ``TRUNCATE`` after each test rather than rollback.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app, served_app
from campaigns import migrate
from campaigns.db import libpq_url, make_engine, make_sessionmaker, unit_of_work
from campaigns.services.organizations import create_organization
from campaigns.settings import Settings, get_settings

SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Everything else cascades from organizations; scans and feed_batches have no foreign keys.
TABLES = (
    "organizations, visitor_salts, scans, feed_batches, rollup_dirty, rollup_state,"
    " maintenance_runs"
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a fresh, migrated database, dropped after the run."""
    from sqlalchemy.engine import make_url

    name = f"passerelle_test_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        os.environ["PASSERELLE_DATABASE_URL"] = url
        get_settings.cache_clear()
        yield url
    finally:
        migrate.drop_database(url)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the in-process app: test environment, temporary data directory."""
    return Settings(
        environment="test",
        database_url=database_url,
        base_url="https://go.example.com",
        secret_key=secrets.token_urlsafe(32),
        data_dir=Path(tmp_path_factory.mktemp("data")),
        rate_limit_enabled=False,
        # Webhook tests start dispatchers themselves (tests/api/test_webhooks.py).
        webhook_delivery_enabled=False,
        webhook_poll_interval_s=0.05,
        # Reports read raw rows unless a test builds the rollups itself.
        rollup_interval_s=0,
        # Tests store attribution credits themselves (tests/services/test_stored_credits.py).
        credits_refresh_interval_s=0,
        # Tests run the purge themselves (tests/api/test_privacy.py).
        purge_enabled=False,
    )


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine for direct checks of what is stored."""
    engine = make_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running (tag cache, listener, scan writer)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over ASGI; the database is emptied after the test."""
    transport = httpx.ASGITransport(app=served_app(app), client=("203.0.113.77", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
        yield c
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    await forget_side_caches(app)


async def forget_side_caches(app: FastAPI) -> None:
    """Re-read the app's stores, redirect rules and cookie settings after a TRUNCATE: ids
    restart, so rows of the next test would otherwise meet a stale copy before the
    TRUNCATE's notification arrives."""
    scans = app.state.scans
    conninfo = libpq_url(app.state.settings.database_url)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await scans.locations.load_all(conn)
        await scans.rules.load_all(conn)
        await scans.hooked.load_all(conn)
        await scans.cookies.load_all(conn)


@dataclass
class Org:
    """An organization created for a test, with its API key and auth headers."""

    id: int
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def make_org(sessionmaker: async_sessionmaker[AsyncSession], name: str = "Acme") -> Org:
    """Create an organization with its first key, committed."""
    async with unit_of_work(sessionmaker) as session:
        organization, issued = await create_organization(session, name=name)
        return Org(id=organization.id, api_key=issued.secret)


@pytest.fixture
async def org(client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]) -> Org:
    return await make_org(sessionmaker, "Acme")


@pytest.fixture
async def other_org(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> Org:
    return await make_org(sessionmaker, "Globex")


async def make_campaign(client: httpx.AsyncClient, org: Org, **overrides: Any) -> dict[str, Any]:
    """Create a campaign through the API and return its JSON."""
    body: dict[str, Any] = {
        "name": "Summer windows",
        "destination_url": "https://shop.example.com/summer",
    }
    body.update(overrides)
    response = await client.post("/v1/campaigns", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_tag(
    client: httpx.AsyncClient, org: Org, campaign_id: int, **overrides: Any
) -> dict[str, Any]:
    """Create a tag through the API and return its JSON."""
    body: dict[str, Any] = {"kind": "qr", "label": "window-1"}
    body.update(overrides)
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/tags", json=body, headers=org.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


_SNAPSHOT_COLUMNS = {
    "api_keys": "id, organization_id, name, prefix, secret_hash, scopes, created_at, revoked_at"
}


async def table_snapshot(engine: AsyncEngine, *tables: str) -> dict[str, list[Any]]:
    """Every row of ``tables`` (ordered by id), to prove bad input changed nothing.
    ``api_keys.last_used_at`` is left out: it is bookkeeping, written when the key is
    checked (in a transaction of its own) whatever the request then does."""
    result: dict[str, list[Any]] = {}
    async with engine.connect() as conn:
        for table in tables:
            columns = _SNAPSHOT_COLUMNS.get(table, "*")
            rows = await conn.execute(text(f"SELECT {columns} FROM {table} ORDER BY 1"))  # noqa: S608
            result[table] = [tuple(row) for row in rows]
    return result
