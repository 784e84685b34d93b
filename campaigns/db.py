"""Database engine and session factory (SQLAlchemy 2 async on psycopg 3)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

#: Seconds a new connection may take before the request fails (503
#: ``database_unavailable``), unless the URL's ``connect_timeout`` or ``PGCONNECT_TIMEOUT``
#: says otherwise. psycopg's own default is 130 s: a database host that drops packets
#: (powered off, firewalled) would hold every API request for over two minutes.
CONNECT_TIMEOUT_S = 5


def make_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``postgresql+psycopg://`` URLs.

    ``pool_pre_ping`` lets the API recover by itself after PostgreSQL restarts.
    ``hide_parameters``: statement parameters (API key hashes, URLs, names) never reach
    error messages or logs. New connections give up after :data:`CONNECT_TIMEOUT_S`
    seconds unless the URL (``?connect_timeout=``) or ``PGCONNECT_TIMEOUT`` sets one.
    """
    explicit = "connect_timeout" in make_url(database_url).query or os.environ.get(
        "PGCONNECT_TIMEOUT"
    )
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={} if explicit else {"connect_timeout": CONNECT_TIMEOUT_S},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq URL (``postgresql://...``) for raw psycopg use."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


#: ``session.info`` key of the tag and campaign ids a unit of work changed (``{"tags":
#: set[int], "campaigns": set[int]}``); the API re-reads them into its tag cache after
#: commit (``api/deps.py``).
CACHE_CHANGES = "cache_changes"


def note_cache_changes(
    session: AsyncSession | Session,
    *,
    tag_ids: Iterable[int] = (),
    campaign_ids: Iterable[int] = (),
    rule_ids: Iterable[int] = (),
    webhook_ids: Iterable[int] = (),
    organization_ids: Iterable[int] = (),
) -> None:
    """Remember rows the unit of work changed that decide redirects (tags, campaigns,
    redirect rules, organizations' visitor-cookie settings) or the scan writer's outbox
    (webhooks). ORM changes are noted by a flush hook; services that write with Core
    statements (bulk inserts) call this so the process's own tag cache sees their rows
    right after commit."""
    changed = session.info.setdefault(
        CACHE_CHANGES,
        {
            "tags": set(),
            "campaigns": set(),
            "rules": set(),
            "webhooks": set(),
            "organizations": set(),
        },
    )
    changed["tags"].update(tag_ids)
    changed["campaigns"].update(campaign_ids)
    changed["rules"].update(rule_ids)
    changed["webhooks"].update(webhook_ids)
    changed["organizations"].update(organization_ids)


#: ``session.info`` key of the rows a unit of work wrote, for its audit events:
#: ``{table: (set of ids, count of rows without an id)}``
#: (:func:`campaigns.services.audit.record_changes`).
AUDIT_ROWS = "audit_rows"


def note_written_rows(
    session: AsyncSession | Session, table: str, *, ids: Iterable[int] = (), count: int = 0
) -> None:
    """Remember rows of ``table`` the unit of work wrote, for the audit trail. ORM writes
    are noted by a flush hook (``campaigns.services.audit``); services that write with
    Core statements (bulk tags, location imports) call this with the ids they wrote, or
    with ``count`` when the statement returns none."""
    noted: dict[str, tuple[set[int], list[int]]] = session.info.setdefault(AUDIT_ROWS, {})
    known, extra = noted.setdefault(table, (set(), [0]))
    known.update(ids)
    extra[0] += count


async def flush_unique(
    session: AsyncSession, *, add: Any = None, constraint: str, conflict: Exception
) -> None:
    """Flush (adding ``add`` first) inside a savepoint. When the flush breaks the unique
    ``constraint``, only the savepoint rolls back (the session stays usable and forgets
    ``add``) and ``conflict`` is raised (a :class:`campaigns.errors.Conflict` with its
    code); any other ``IntegrityError`` propagates."""
    try:
        async with session.begin_nested():
            if add is not None:
                session.add(add)
            await session.flush()
    except IntegrityError as exc:
        if constraint in str(exc.orig):
            raise conflict from exc
        raise
