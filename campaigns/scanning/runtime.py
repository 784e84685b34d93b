"""Runtime upkeep of the scan path: what keeps the in-memory state fresh.

:class:`CacheRuntime` loads the tag cache (from the database, else from the snapshot
and the cache journal), keeps it fresh (LISTEN/NOTIFY re-reads, periodic reconcile and
prune), writes the snapshot and the journal, and keeps the visitor salts created ahead
and cached, and keeps the stores' geofences (:mod:`~campaigns.scanning.locations`),
the redirect rules (:mod:`~campaigns.scanning.rules`), the visitor-cookie settings
(:mod:`~campaigns.scanning.organizations`) and the organizations having webhooks
(:mod:`~campaigns.scanning.hooked`) fresh on the same notifications, written to
the side snapshot (:mod:`~campaigns.scanning.side_snapshot`) within a second of a change
and loaded from it when the database is down at start. All of it runs in background
tasks; nothing here is on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from campaigns.scanning.cache import NOTIFY_CHANNEL, TagCache
from campaigns.scanning.hooked import HookedOrganizations
from campaigns.scanning.journal import FLUSH_INTERVAL_S, CacheJournal, replay
from campaigns.scanning.locations import LocationCache
from campaigns.scanning.organizations import CookieSettings
from campaigns.scanning.rules import RuleCache
from campaigns.scanning.side_snapshot import (
    SIDE_SNAPSHOT_FILE,
    SideCache,
    load_side_snapshot,
    save_side_snapshot,
)
from campaigns.scanning.visitors import VisitorIds

log = logging.getLogger(__name__)

#: How often the cache is checked for rows deleted behind its back (seconds).
PRUNE_INTERVAL_S = 600.0
#: How often the snapshot is rewritten (seconds); the journal covers the time between.
SNAPSHOT_INTERVAL_S = 300.0
SNAPSHOT_FILE = "tags.snapshot.json"
JOURNAL_DIR = "cache-journal"


class CacheRuntime:
    """Upkeep of ``cache`` and ``visitors`` for one process. ``conninfo`` is a libpq
    URL; ``data_dir`` holds the snapshot and the journal."""

    def __init__(
        self,
        *,
        conninfo: str,
        data_dir: Path,
        cache: TagCache,
        visitors: VisitorIds,
        locations: LocationCache | None = None,
        rules: RuleCache | None = None,
        hooked: HookedOrganizations | None = None,
        cookies: CookieSettings | None = None,
        reconcile_interval_s: float = 30.0,
    ) -> None:
        self._conninfo = conninfo
        self.cache = cache
        self.visitors = visitors
        self.locations = LocationCache() if locations is None else locations
        self.rules = RuleCache() if rules is None else rules
        self.hooked = HookedOrganizations() if hooked is None else hooked
        self.cookies = CookieSettings() if cookies is None else cookies
        #: Notification table -> the cache re-reading its rows (whole caches, no journal:
        #: the side snapshot holds all of them).
        self._side_caches: dict[
            str, LocationCache | RuleCache | CookieSettings | HookedOrganizations
        ] = {
            "locations": self.locations,
            "redirect_rules": self.rules,
            "organizations": self.cookies,
            "webhooks": self.hooked,
        }
        self.side_snapshot_path = data_dir / SIDE_SNAPSHOT_FILE
        #: True when a side cache changed since the side snapshot was last written.
        self._side_due = False
        #: True once the side caches came from the side snapshot (database down at start).
        self.side_loaded_from_snapshot = False
        self.snapshot_path = data_dir / SNAPSHOT_FILE
        self.journal = CacheJournal(data_dir / JOURNAL_DIR)
        self._reconcile_interval_s = reconcile_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = False
        self._subscribed = asyncio.Event()
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._reader_lock = asyncio.Lock()
        self._snapshot_saved_at = 0.0
        self._snapshot_due = False
        #: None until the first snapshot write; then ``"ok"`` or ``"failed: <reason>"``.
        self.snapshot_status: str | None = None

    @property
    def listening(self) -> bool:
        """True while subscribed to change notifications."""
        return self._listening

    async def start(self) -> None:
        """Load the salts and the cache, then start the background tasks. Never raises
        for a database outage nor for a data directory that cannot be written."""
        await asyncio.to_thread(self.visitors.load_cached)
        try:
            async with await self._connect() as conn:
                await self.cache.load_all(conn)
                await self.visitors.refresh(conn)
                for side in self._side_caches.values():
                    await side.load_all(conn)
                self._side_due = True
        except (psycopg.Error, OSError) as exc:
            await asyncio.to_thread(self._load_local)
            log.warning(
                "database unavailable at start (%s); serving %s",
                exc,
                f"snapshot and journal: {len(self.cache)} tags"
                if self.cache.loaded_from_snapshot
                else "no tags",
            )
        else:
            # A failing disk must not cost the fresh copy: saving is separate from loading.
            await self.save_snapshot()
        self._tasks = [
            asyncio.create_task(self._listen(), name="tag-cache-listener"),
            asyncio.create_task(self._reconcile_loop(), name="tag-cache-reconcile"),
            asyncio.create_task(self._journal_loop(), name="tag-cache-journal"),
        ]
        if self.cache.loaded_from_db:
            # Let the listener subscribe before the app takes traffic, so /health/ready is
            # true from the first request; a slow database only delays this by 2 s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def stop(self) -> None:
        """Cancel the background tasks, flush the journal, close connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_reader()
        await self._flush_journal()
        await self.save_side_snapshot()
        await asyncio.to_thread(self.journal.close)

    def _load_local(self) -> None:
        tables = load_side_snapshot(self.side_snapshot_path, self._side_disk())
        self.side_loaded_from_snapshot = bool(tables)
        if tables:
            log.info("side snapshot: %s loaded", ", ".join(tables))
        if self.cache.load_snapshot(self.snapshot_path):
            applied = replay(
                self.journal.directory, self.cache, since=self.cache.snapshot_synced_at
            )
            log.info("cache journal: %d entries applied over the snapshot", applied)

    def _side_disk(self) -> dict[str, SideCache]:
        return dict(self._side_caches)

    async def save_side_snapshot(self) -> None:
        """Write the side snapshot (in a thread) when a side cache changed since the
        last write. A failure is logged and retried at the next flush; never raises."""
        if not self._side_due:
            return
        self._side_due = False
        try:
            await asyncio.to_thread(save_side_snapshot, self.side_snapshot_path, self._side_disk())
        except OSError as exc:
            self._side_due = True
            log.error("side snapshot not written to %s: %s", self.side_snapshot_path, exc)

    async def save_snapshot(self) -> None:
        """Rotate the journal, write the snapshot (in a thread), compact the journal;
        write the side snapshot when due. A failure is logged and kept in
        :attr:`snapshot_status`; it never raises."""
        await self.save_side_snapshot()
        synced_at = self.cache.synced_at
        try:
            await asyncio.to_thread(self.journal.rotate)
            await asyncio.to_thread(self.cache.save_snapshot, self.snapshot_path)
            if synced_at is not None:
                await asyncio.to_thread(self.journal.compact, synced_at)
        except Exception as exc:  # any failure of the disk is reported, never raised
            self.snapshot_status = f"failed: {exc}"
            log.error("tag snapshot not written to %s: %s", self.snapshot_path, exc)
        else:
            self.snapshot_status = "ok"
        self._snapshot_saved_at = time.monotonic()
        self._snapshot_due = False

    # -- re-reads ---------------------------------------------------------------------------

    async def reload(
        self,
        *,
        tag_ids: Iterable[int] = (),
        campaign_ids: Iterable[int] = (),
        rule_ids: Iterable[int] = (),
        webhook_ids: Iterable[int] = (),
        organization_ids: Iterable[int] = (),
    ) -> None:
        """Re-read rows this process just changed (read-your-writes before the NOTIFY)."""
        for table, ids in (
            ("redirect_rules", rule_ids),
            ("organizations", organization_ids),
            ("webhooks", webhook_ids),
        ):
            wanted = set(ids)
            if wanted:
                try:
                    await self._reread_side(table, wanted)
                except (psycopg.Error, OSError) as exc:
                    log.warning("%s reload failed (the listener will catch up): %s", table, exc)
        tag_ids, campaign_ids = list(tag_ids), list(campaign_ids)
        if not tag_ids and not campaign_ids:
            return
        try:
            await self._reread(tag_ids=tag_ids, campaign_ids=campaign_ids)
        except (psycopg.Error, OSError) as exc:
            log.warning("cache reload failed (the listener will catch up): %s", exc)

    async def _reread(
        self, *, tag_ids: Iterable[int], campaign_ids: Iterable[int], bulk: bool = False
    ) -> None:
        """Re-read rows on the shared reader connection (one at a time), retrying once on
        a fresh connection, and journal them. ``bulk``: a statement changed too many rows
        to list them, so catch up by ``updated_at``, look for deleted rows, and schedule a
        snapshot (the journal only holds listed rows). Raises ``psycopg.Error``."""
        async with self._reader_lock:
            for attempt in (1, 2):
                try:
                    if self._reader is None or self._reader.closed:
                        self._reader = await self._connect()
                    if bulk:
                        await self.cache.reconcile(self._reader)
                        await self.cache.prune(self._reader)
                        self._snapshot_due = True
                    changes = await self.cache.reload(
                        self._reader, tag_ids=tag_ids, campaign_ids=campaign_ids
                    )
                    self.journal.append(changes)
                    return
                except (psycopg.Error, OSError):
                    await self._close_reader()
                    if attempt == 2:
                        raise

    async def _reread_side(self, table: str, ids: set[int] | None) -> None:
        """Re-read the rows ``ids`` of ``table`` (None: all of them) into its cache, on
        the reader connection. Raises ``psycopg.Error``."""
        side = self._side_caches[table]
        async with self._reader_lock:
            if self._reader is None or self._reader.closed:
                self._reader = await self._connect()
            try:
                if ids is None:
                    await side.load_all(self._reader)
                else:
                    await side.reload(self._reader, ids)
                self._side_due = True
            except (psycopg.Error, OSError):
                await self._close_reader()
                raise

    async def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.close()
            self._reader = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=2,
            application_name="passerelle-tag-cache",
        )

    # -- background -------------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Changes made while we were not listening: catch up.
                    await self.cache.reconcile(conn)
                    self._listening = True
                    self._subscribed.set()
                    backoff = 0.5
                    await self._consume(conn)
            except asyncio.CancelledError:
                self._listening = False
                raise
            except (psycopg.Error, OSError) as exc:
                if self._listening:
                    log.warning("tag cache listener lost the database: %s", exc)
                self._listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _consume(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Apply notifications in 50 ms windows, one re-read per window (on the reader
        connection: a query on the listening one could interleave with notifications)."""
        while True:
            pending: dict[str, set[int]] = defaultdict(set)
            bulk = False
            side_bulk: set[str] = set()
            async for notify in conn.notifies(timeout=0.05):
                table = notify.payload.partition(":")[0]
                if table in self._side_caches:
                    if parse_notify(notify.payload, pending):
                        side_bulk.add(table)
                else:
                    bulk |= parse_notify(notify.payload, pending)
            for table in self._side_caches:
                if table in side_bulk or pending.get(table):
                    try:
                        await self._reread_side(
                            table, None if table in side_bulk else pending[table]
                        )
                    except (psycopg.Error, OSError) as exc:
                        log.warning("%s re-read failed: %s", table, exc)
            if not pending.get("tags") and not pending.get("campaigns") and not bulk:
                continue
            try:
                await self._reread(
                    tag_ids=pending["tags"], campaign_ids=pending["campaigns"], bulk=bulk
                )
            except (psycopg.Error, OSError) as exc:
                # Keep listening; the periodic reconcile (or the one after a reconnect)
                # applies these rows by their updated_at.
                log.warning("cache re-read failed: %s", exc)

    async def _reconcile_loop(self) -> None:
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(self._reconcile_interval_s)
            # Salts end with their day even while the database is away.
            await asyncio.to_thread(self.visitors.forget_expired)
            try:
                async with await self._connect() as conn:
                    await self.cache.reconcile(conn)
                    if time.monotonic() - pruned_at > PRUNE_INTERVAL_S:
                        await self.cache.prune(conn)
                        pruned_at = time.monotonic()
                    await self.visitors.refresh(conn)
                    for side in self._side_caches.values():
                        await side.load_all(conn)
                    self._side_due = True
            except (psycopg.Error, OSError) as exc:
                log.info("reconcile skipped: %s", exc)
                continue
            if time.monotonic() - self._snapshot_saved_at > SNAPSHOT_INTERVAL_S:
                await self.save_snapshot()

    async def _journal_loop(self) -> None:
        """Flush the journal every :data:`FLUSH_INTERVAL_S` seconds (one ``fsync``); write
        the snapshot early after a bulk change."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self._flush_journal()
            await self.save_side_snapshot()
            if self._snapshot_due and self.cache.loaded_from_db:
                await self.save_snapshot()

    async def _flush_journal(self) -> None:
        lines = self.journal.take()  # on the loop: appends happen here too
        if not lines:
            return
        try:
            await asyncio.to_thread(self.journal.write, lines)
        except OSError as exc:
            self.journal.requeue(lines)
            log.error("cache journal not written: %s", exc)


def parse_notify(payload: str, into: dict[str, set[int]]) -> bool:
    """Add the ids of ``"<table>:<id>,<id>,..."`` to ``into[table]``. Returns True for
    ``"<table>:*"``: a statement changed too many rows to list (see the migration)."""
    table, _, raw_ids = payload.partition(":")
    if raw_ids == "*":
        return True
    with contextlib.suppress(ValueError):
        into[table].update(int(raw_id) for raw_id in raw_ids.split(","))
    return False
