"""The scan path: resolve a code from memory, record the scan durably, build the redirect.

One :class:`ScanService` per server process owns the tag cache, the change listener,
the daily visitor salt and the scan writer. Nothing here waits on the database except
:meth:`ScanService.record`, which waits for the group commit (or the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from campaigns.scanning.cache import NOTIFY_CHANNEL, CampaignEntry, TagCache, TagEntry
from campaigns.scanning.device import parse_device
from campaigns.scanning.links import build_destination, new_click_id, normalize_code
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.writer import ScanWriter, WriterOptions
from geo.ip import truncate_ip

log = logging.getLogger(__name__)

_WARM_UP_AGENT = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/131.0 Mobile"

#: How often the cache is checked for rows deleted behind its back (seconds).
PRUNE_INTERVAL_S = 600.0


@dataclass(frozen=True, slots=True)
class Resolution:
    """How to answer a scan. ``outcome`` is ``redirect`` (live campaign), ``fallback``
    (outside its schedule or archived, with a fallback URL) or ``gone`` (same, without one:
    answer 410)."""

    tag: TagEntry
    campaign: CampaignEntry
    outcome: str
    destination: str | None


class ScanService:
    """Per-process scan runtime. ``conninfo`` is a libpq URL; ``data_dir`` holds the spool
    (``spool/``) and the tag snapshot (``tags.snapshot.json``)."""

    def __init__(
        self,
        *,
        conninfo: str,
        data_dir: Path,
        secret_key: str,
        batch_size: int = 500,
        max_delay_s: float = 0.002,
        reconcile_interval_s: float = 30.0,
        writer_options: WriterOptions | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._secret = secret_key.encode()
        self._snapshot_path = data_dir / "tags.snapshot.json"
        self._reconcile_interval_s = reconcile_interval_s
        self.cache = TagCache()
        self.writer = ScanWriter(
            conninfo,
            data_dir / "spool",
            batch_size=batch_size,
            max_delay_s=max_delay_s,
            **(writer_options or {}),
        )
        self._salts: dict[dt.date, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = False
        self._subscribed = asyncio.Event()
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._reader_lock = asyncio.Lock()
        self._snapshot_saved_at = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """True when scans can be answered: tags are in memory (from the database or a
        snapshot) and the writer accepts scans (it spools while the database is away)."""
        loaded = self.cache.loaded_from_db or self.cache.loaded_from_snapshot
        return loaded and self.writer.running

    @property
    def ready(self) -> bool:
        """True when the tag cache came from the database and the database answers."""
        return self.cache.loaded_from_db and self._listening and self.writer.database_ok

    async def start(self) -> None:
        """Load the cache (from the database, else from the snapshot), start the writer,
        the listener and the reconcile loop. Never raises for a database outage."""
        # ua-parser and crawlerdetect compile their patterns on first use (about a
        # second): pay it now rather than in the first phone's redirect.
        parse_device(_WARM_UP_AGENT)
        try:
            async with await self._connect() as conn:
                await self.cache.load_all(conn)
                await self._refresh_salts(conn)
            await asyncio.to_thread(self._save_snapshot)
        except (psycopg.Error, OSError) as exc:
            loaded = await asyncio.to_thread(self.cache.load_snapshot, self._snapshot_path)
            log.warning(
                "database unavailable at start (%s); serving %s",
                exc,
                f"snapshot of {len(self.cache)} tags" if loaded else "no tags",
            )
        await self.writer.start()
        self._tasks = [
            asyncio.create_task(self._listen(), name="tag-cache-listener"),
            asyncio.create_task(self._reconcile_loop(), name="tag-cache-reconcile"),
        ]
        if self.cache.loaded_from_db:
            # Let the listener subscribe before the app takes traffic, so /health/ready is
            # true from the first request; a slow database only delays this by 2 s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def stop(self) -> None:
        """Stop background tasks and drain the writer."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_reader()
        await self.writer.stop()

    # -- the hot path -------------------------------------------------------------------

    def resolve(self, raw_code: str, *, now: dt.datetime) -> Resolution | None:
        """The resolution of a scanned code, or None for an unknown, malformed or
        disabled code. Pure memory; never raises."""
        code = normalize_code(raw_code)
        if code is None:
            return None
        hit = self.cache.lookup(code)
        if hit is None:
            return None
        tag, campaign = hit
        if campaign.is_live(now):
            return Resolution(
                tag, campaign, "redirect", tag.destination_url or campaign.destination_url
            )
        if campaign.fallback_url:
            return Resolution(tag, campaign, "fallback", campaign.fallback_url)
        return Resolution(tag, campaign, "gone", None)

    async def record(
        self,
        resolution: Resolution,
        *,
        now: dt.datetime,
        channel: str,
        method: str,
        ip: str | None,
        user_agent: str | None,
    ) -> tuple[str, ScanRecord]:
        """Record the scan durably; return the URL to redirect to (with UTM parameters
        and the click id) and the stored record. Raises ``OSError`` when neither the
        database nor the spool took it."""
        assert resolution.destination is not None
        tag, campaign = resolution.tag, resolution.campaign
        click_id = new_click_id()
        # A value the campaign sets wins over the computed default; the tag's label is
        # more specific than a campaign-wide content default.
        defaults = campaign.utm
        utm = {
            "source": defaults.get("source") or "passerelle",
            "medium": defaults.get("medium") or channel,
            "campaign": defaults.get("campaign") or campaign.slug,
            "content": tag.label or defaults.get("content") or tag.code,
            "term": defaults.get("term", ""),
        }
        url = build_destination(resolution.destination, utm=utm, click_id=click_id)
        device = parse_device(user_agent)
        record = ScanRecord(
            click_id=click_id,
            organization_id=campaign.organization_id,
            campaign_id=campaign.id,
            tag_id=tag.id,
            scanned_at=now,
            channel=channel,
            method=method,
            outcome=resolution.outcome,
            destination=url,
            # PostgreSQL text cannot hold NUL; 1 KiB is more than any real agent.
            user_agent=user_agent.replace("\x00", "")[:1024] if user_agent else None,
            device_type=device.device_type,
            os=device.os,
            browser=device.browser,
            # HEAD requests come from link checkers and prefetchers, never a person.
            is_bot=device.is_bot or method != "GET",
            ip_truncated=truncate_ip(ip) if ip else None,
            visitor_id=self.visitor_id(ip or "", user_agent or "", campaign.id, now.date()),
        )
        await self.writer.submit(record)
        return url, record

    def visitor_id(self, ip: str, user_agent: str, campaign_id: int, day: dt.date) -> bytes:
        """16-byte keyed BLAKE2b (RFC 7693 keyed mode, a MAC) of (ip, user agent, campaign)
        under the day's salt.

        The salt is random per UTC day, shared by all processes through the
        ``visitor_salts`` table and deleted after two days, so ids cannot be linked across
        days nor reversed once the salt is gone (the approach Plausible documents). If the
        database never gave a salt for the day, one derived from the secret key is used.
        """
        salt = self._salts.get(day)
        if salt is None:
            salt = hmac.new(self._secret, f"visitor-salt:{day}".encode(), hashlib.sha256).digest()
        message = f"{ip}\x00{user_agent}\x00{campaign_id}".encode()
        return hashlib.blake2b(message, key=salt, digest_size=16).digest()

    # -- background -----------------------------------------------------------------------

    async def reload(
        self, *, tag_ids: Iterable[int] = (), campaign_ids: Iterable[int] = ()
    ) -> None:
        """Re-read rows this process just changed (read-your-writes before the NOTIFY)."""
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
        a fresh connection. ``bulk``: a statement changed too many rows to list them, so
        catch up by ``updated_at`` and look for deleted rows. Raises ``psycopg.Error``."""
        async with self._reader_lock:
            for attempt in (1, 2):
                try:
                    if self._reader is None or self._reader.closed:
                        self._reader = await self._connect()
                    if bulk:
                        await self.cache.reconcile(self._reader)
                        await self.cache.prune(self._reader)
                    await self.cache.reload(
                        self._reader, tag_ids=tag_ids, campaign_ids=campaign_ids
                    )
                    return
                except (psycopg.Error, OSError):
                    await self._close_reader()
                    if attempt == 2:
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
            async for notify in conn.notifies(timeout=0.05):
                bulk |= _parse_notify(notify.payload, pending)
            if not pending and not bulk:
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
            try:
                async with await self._connect() as conn:
                    await self.cache.reconcile(conn)
                    if time.monotonic() - pruned_at > PRUNE_INTERVAL_S:
                        await self.cache.prune(conn)
                        pruned_at = time.monotonic()
                    await self._refresh_salts(conn)
                if time.monotonic() - self._snapshot_saved_at > 300:
                    await asyncio.to_thread(self._save_snapshot)
            except (psycopg.Error, OSError) as exc:
                log.info("reconcile skipped: %s", exc)

    def _save_snapshot(self) -> None:
        self.cache.save_snapshot(self._snapshot_path)
        self._snapshot_saved_at = time.monotonic()

    async def _refresh_salts(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Make sure today's and tomorrow's salts exist, load them, forget old ones."""
        today = dt.datetime.now(dt.UTC).date()
        days = [today, today + dt.timedelta(days=1)]
        for day in days:
            await conn.execute(
                "INSERT INTO visitor_salts (day, salt) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (day, secrets.token_bytes(32)),
            )
        await conn.execute(
            "DELETE FROM visitor_salts WHERE day < %s", (today - dt.timedelta(days=1),)
        )
        rows = await (
            await conn.execute("SELECT day, salt FROM visitor_salts WHERE day = ANY(%s)", (days,))
        ).fetchall()
        self._salts = {day: bytes(salt) for day, salt in rows}


def _parse_notify(payload: str, into: dict[str, set[int]]) -> bool:
    """Add the ids of ``"<table>:<id>,<id>,..."`` to ``into[table]``. Returns True for
    ``"<table>:*"``: a statement changed too many rows to list (see the migration)."""
    table, _, raw_ids = payload.partition(":")
    if raw_ids == "*":
        return True
    with contextlib.suppress(ValueError):
        into[table].update(int(raw_id) for raw_id in raw_ids.split(","))
    return False
