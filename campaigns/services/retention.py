"""Retention: what is past its term is deleted or coarsened (``passerelle purge`` and a
daily run inside the service).

Per organization, with ``now`` the time of the run:

- consented GPS fixes (``scan_locations``) recorded before ``now -
  precise_location_retention_days`` are deleted: the scan keeps its matched store
  (``location_id``) and city, and ``scan_positions`` falls back to the scan's placement
  or IP position;
- scans before ``now - scan_retention_days`` are deleted, and with them, in the same
  transaction, what every registered holder (:mod:`campaigns.personal_data`) keeps
  about their click ids; conversions stay (their ``scan_id`` becomes null through the
  foreign key);
- every holder's own ``purge`` runs too.

Stats totals and series stay unchanged: before deleting any scan of an organization,
:func:`campaigns.services.rollups.seal_before_purge` makes the rollups of every day the
purge touches complete (recomputed from the raw rows where missing or dirty, even if the
rollup worker is off or behind) and permanent (those days are frozen: no later pass or
rebuild recomputes them from what is left).

Never in the way of the scan path: batches of ``batch_size`` rows, each its own short
transaction under ``lock_timeout`` and ``statement_timeout``; a batch that meets a
lock gives up and the next run takes it again (counted in ``skipped_batches``). Scans
are deleted campaign by campaign through ``ix_scans_campaign_id_scanned_at``.

The in-service run (:func:`run_if_due`) takes one PostgreSQL advisory lock
(:data:`PURGE_LOCK_KEY`), so one process purges at a time, and runs at most once a
day: the ``maintenance_runs`` row ``purge`` records the last run and its report.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from campaigns.errors import NotFound
from campaigns.models import AuditEvent, Organization
from campaigns.personal_data import HOLDERS, Horizons, Purge
from campaigns.services.rollups import seal_before_purge

log = logging.getLogger(__name__)

#: ``pg_try_advisory_lock`` key of the purge (``b"pspurge"`` as a big-endian integer).
PURGE_LOCK_KEY: Final = 0x7073707572676500
#: ``maintenance_runs.name`` of the purge.
RUN_NAME: Final = "purge"
#: The purge runs at most once in this interval.
RUN_INTERVAL: Final = dt.timedelta(days=1)
DEFAULT_BATCH_SIZE: Final = 1000
#: Per batch: how long a statement may wait for a lock, and run, in milliseconds.
LOCK_TIMEOUT_MS: Final = 1000
STATEMENT_TIMEOUT_MS: Final = 30_000


@dataclass
class PurgeReport:
    """What a purge removed: ``counts`` rows per table (``scans``, ``scan_locations``,
    and each holder's name), ``organizations`` visited, ``skipped_batches`` that met a
    lock (retried at the next run), ``sealed_days`` (campaign, UTC day) rollups
    recomputed before their scans were deleted."""

    counts: Counter[str] = field(default_factory=Counter)
    #: The same counts per organization (for the audit trail).
    by_organization: dict[int, Counter[str]] = field(default_factory=dict)
    organizations: int = 0
    skipped_batches: int = 0
    sealed_days: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"counts": {table: rows}, "organizations": n, "sealed_days": n,
        "skipped_batches": n}`` (every known table listed, zeros included)."""
        counts = {name: 0 for name in ("scans", *HOLDERS)}
        counts.update(self.counts)
        return {
            "counts": dict(sorted(counts.items())),
            "organizations": self.organizations,
            "sealed_days": self.sealed_days,
            "skipped_batches": self.skipped_batches,
        }


def horizons(organization: Organization, now: dt.datetime) -> Horizons:
    """The organization's horizons at ``now`` (UTC)."""
    return Horizons(
        scans=now - dt.timedelta(days=organization.scan_retention_days),
        precise_locations=now - dt.timedelta(days=organization.precise_location_retention_days),
    )


def horizon_day(now: dt.datetime, retention_days: int) -> dt.datetime:
    """The first UTC midnight at or after ``now - retention_days``: from then on every
    scan is retained (a purge deletes only what is older than its own horizon, which is
    earlier), and the value holds for a whole day, so two reports of the same day agree."""
    horizon = now.astimezone(dt.UTC) - dt.timedelta(days=retention_days)
    midnight = horizon.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == horizon else midnight + dt.timedelta(days=1)


async def data_since(
    session: AsyncSession, *, organization_id: int, now: dt.datetime | None = None
) -> dt.datetime:
    """Since when reports of the organization cover every scan (UTC):
    :func:`horizon_day` of ``now`` and its ``scan_retention_days``; older scans are
    purged, or will be at the next daily run. Raises :class:`NotFound` for an unknown
    organization."""
    days = await session.scalar(
        text("SELECT scan_retention_days FROM organizations WHERE id = :org"),
        {"org": organization_id},
    )
    if days is None:
        raise NotFound(f"Organization {organization_id} not found", code="organization_not_found")
    return horizon_day(now or dt.datetime.now(dt.UTC), int(days))


async def _batch_begin(conn: AsyncConnection) -> None:
    await conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
    await conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))


def _lock_refused(exc: DBAPIError) -> bool:
    # 55P03 lock_not_available, 57014 query_canceled (statement_timeout).
    return getattr(exc.orig, "sqlstate", None) in ("55P03", "57014")


_DELETE_SCANS = text(
    "DELETE FROM scans WHERE id IN ("
    " SELECT id FROM scans WHERE campaign_id = :campaign AND organization_id = :org"
    " AND scanned_at < :before ORDER BY scanned_at LIMIT :limit)"
    " RETURNING click_id"
)


async def purge(
    engine: AsyncEngine,
    *,
    now: dt.datetime | None = None,
    organization_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str, int], None] | None = None,
) -> PurgeReport:
    """Delete or coarsen what is past its term (module docstring) for every organization
    (or only ``organization_id``), as of ``now`` (default: the current time, UTC).
    ``progress(table, rows)`` is called after each batch that removed rows. Returns the
    :class:`PurgeReport`; never raises for a batch that met a lock (it is skipped)."""
    now = now or dt.datetime.now(dt.UTC)
    report = PurgeReport()
    async with engine.connect() as conn:
        query = "SELECT id, scan_retention_days, precise_location_retention_days FROM organizations"
        params: dict[str, Any] = {}
        if organization_id is not None:
            query += " WHERE id = :org"
            params["org"] = organization_id
        orgs = (await conn.execute(text(query + " ORDER BY id"), params)).all()
        await conn.rollback()
    for org_id, scan_days, precise_days in orgs:
        report.organizations += 1
        before = Counter(report.counts)
        horizon = Horizons(
            scans=now - dt.timedelta(days=scan_days),
            precise_locations=now - dt.timedelta(days=precise_days),
        )
        for holder in HOLDERS.values():
            if holder.purge is not None:
                own = functools.partial(
                    _holder_batch, holder.purge, holder.name, org_id, horizon, batch_size
                )
                await _batches(engine, report, holder.name, progress, batch_size, own)
        async with engine.connect() as conn:
            campaign_ids = list(
                await conn.scalars(
                    text("SELECT id FROM campaigns WHERE organization_id = :org ORDER BY id"),
                    {"org": org_id},
                )
            )
            await conn.rollback()
        # Rollups first: the figures of every day about to lose scans are complete and
        # frozen before the first batch (rollups.seal_before_purge).
        report.sealed_days += await seal_before_purge(
            engine, organization_id=org_id, scans_before=horizon.scans
        )
        for campaign_id in campaign_ids:

            async def delete_scans(
                conn: AsyncConnection,
                campaign: int = campaign_id,
                org: int = org_id,
                before: dt.datetime = horizon.scans,
            ) -> Counter[str]:
                click_ids = list(
                    await conn.scalars(
                        _DELETE_SCANS,
                        {
                            "campaign": campaign,
                            "org": org,
                            "before": before,
                            "limit": batch_size,
                        },
                    )
                )
                rows = Counter({"scans": len(click_ids)})
                for holder in HOLDERS.values():
                    rows[holder.name] += (
                        await holder.erase(conn, org, click_ids) if click_ids else 0
                    )
                return rows

            await _batches(engine, report, "scans", progress, batch_size, delete_scans)
        report.by_organization[org_id] = report.counts - before
    return report


async def _holder_batch(
    purge: Purge,
    name: str,
    organization_id: int,
    horizon: Horizons,
    limit: int,
    conn: AsyncConnection,
) -> Counter[str]:
    return Counter({name: await purge(conn, organization_id, horizon, limit)})


async def _batches(
    engine: AsyncEngine,
    report: PurgeReport,
    table: str,
    progress: Callable[[str, int], None] | None,
    batch_size: int,
    batch: Callable[[AsyncConnection], Awaitable[Counter[str]]],
) -> None:
    """Run ``batch`` (returns rows removed per table), one short transaction each, until
    it removes fewer than ``batch_size`` rows of ``table`` or meets a lock; counts are
    added to ``report`` once their transaction committed."""
    while True:
        try:
            async with engine.begin() as conn:
                await _batch_begin(conn)
                removed = await batch(conn)
        except DBAPIError as exc:
            if not _lock_refused(exc):
                raise
            report.skipped_batches += 1
            log.warning("purge: a %s batch met a lock; the next run takes it again", table)
            return
        report.counts.update(removed)
        rows = removed[table]
        if rows and progress is not None:
            progress(table, rows)
        if rows < batch_size:
            return


async def audit_purge(engine: AsyncEngine, report: PurgeReport) -> int:
    """Record a purge in the audit trail, as the ``system`` actor: one event per
    organization and table with the rows purged (``action`` ``purge``). Returns the
    events stored."""
    events = [
        AuditEvent(
            organization_id=org_id,
            actor_type="system",
            action="purge",
            resource_type=table,
            rows=rows,
        )
        for org_id, tables in sorted(report.by_organization.items())
        for table, rows in sorted(tables.items())
        if rows
    ]
    if events:
        async with AsyncSession(engine) as session, session.begin():
            session.add_all(events)
    return len(events)


async def run_if_due(
    engine: AsyncEngine, *, now: dt.datetime | None = None, force: bool = False
) -> PurgeReport | None:
    """Run :func:`purge` if this process gets the advisory lock and the last run (row
    ``maintenance_runs.purge``) is a day old or more (or ``force``); record the run.
    Returns the report, or None when another process holds the lock or it is not due."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.connect() as lock_conn:
        lock_conn = await lock_conn.execution_options(isolation_level="AUTOCOMMIT")
        got = await lock_conn.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PURGE_LOCK_KEY}
        )
        if not got:
            return None
        try:
            last = await lock_conn.scalar(
                text("SELECT last_run_at FROM maintenance_runs WHERE name = :name"),
                {"name": RUN_NAME},
            )
            if not force and last is not None and now - last < RUN_INTERVAL:
                return None
            report = await purge(engine, now=now)
            await lock_conn.execute(
                text(
                    "INSERT INTO maintenance_runs (name, last_run_at, result)"
                    " VALUES (:name, :now, CAST(:result AS jsonb))"
                    " ON CONFLICT (name) DO UPDATE"
                    " SET last_run_at = EXCLUDED.last_run_at, result = EXCLUDED.result"
                ),
                {"name": RUN_NAME, "now": now, "result": _json(report.as_dict())},
            )
            await audit_purge(engine, report)
            return report
        finally:
            await lock_conn.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": PURGE_LOCK_KEY}
            )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


async def purge_loop(engine: AsyncEngine, *, interval_s: float, first_delay_s: float) -> None:
    """The in-service schedule: after ``first_delay_s``, then every ``interval_s``
    seconds, :func:`run_if_due`. Errors are logged (without parameters) and retried at
    the next check; cancelled at shutdown."""
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            report = await run_if_due(engine)
        except Exception as exc:  # a failed run is retried next time
            log.warning("purge failed: %s", type(exc).__name__)
        else:
            if report is not None:
                log.info("purge: %s", report.as_dict())
        await asyncio.sleep(interval_s)
