"""Durable, batched scan writer (group commit) with a local spool for outages.

A redirect is answered only once its scan is durable: committed to PostgreSQL, or
appended and ``fsync``'d to this process's spool file when the database is unreachable,
slow, or failing. While the database is healthy, scans that arrive during one commit
are written together by the next (``COPY``), so throughput grows with load while each
scan waits for at most one commit plus ``max_delay_s``.

The spool (``<spool_dir>/scans-<pid>-<n>.jsonl``) is replayed in order when the
database is back, with ``INSERT ... ON CONFLICT (click_id) DO NOTHING`` so a batch that
committed although its commit reported an error is not stored twice. Spool files left
by a killed process are replayed by the next process that starts; ``flock`` keeps two
live processes from replaying the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import psycopg
import psycopg.errors

log = logging.getLogger(__name__)

SCAN_COLUMNS = (
    "click_id",
    "organization_id",
    "campaign_id",
    "tag_id",
    "scanned_at",
    "channel",
    "method",
    "outcome",
    "destination",
    "user_agent",
    "device_type",
    "os",
    "browser",
    "is_bot",
    "ip_truncated",
    "visitor_id",
)
_COPY_SQL = f"COPY scans ({', '.join(SCAN_COLUMNS)}) FROM STDIN"
_INSERT_SQL = (
    f"INSERT INTO scans ({', '.join(SCAN_COLUMNS)}) "  # noqa: S608 - constant column list
    f"SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
    f"%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    f"%s::text[], %s::text[], %s::text[], %s::bool[], %s::inet[], %s::bytea[]) "
    f"ON CONFLICT (click_id) DO NOTHING"
)


#: A conversion may arrive while its scan sits in a spool (the merchant's page loaded
#: during an outage); it was stored unattributed. Once the scan is replayed, credit it.
_ATTRIBUTE_LATE_SQL = (
    "UPDATE conversions AS c SET scan_id = s.id, campaign_id = s.campaign_id, tag_id = s.tag_id "
    "FROM scans AS s WHERE s.click_id = ANY(%s) AND c.click_id = s.click_id "
    "AND c.organization_id = s.organization_id AND c.scan_id IS NULL"
)

#: Errors about the rows themselves (not the connection): retried row by row.
_ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


class ScanRecord(NamedTuple):
    """One scan row, in ``SCAN_COLUMNS`` order. ``ip_truncated`` is a /24 or /48 network
    address as text; ``visitor_id`` 16 bytes; ``scanned_at`` aware UTC."""

    click_id: str
    organization_id: int
    campaign_id: int
    tag_id: int
    scanned_at: dt.datetime
    channel: str
    method: str
    outcome: str
    destination: str
    user_agent: str | None
    device_type: str | None
    os: str | None
    browser: str | None
    is_bot: bool
    ip_truncated: str | None
    visitor_id: bytes | None

    def to_json(self) -> str:
        """One spool line (no newline)."""
        values = list(self)
        values[4] = self.scanned_at.isoformat()
        values[15] = self.visitor_id.hex() if self.visitor_id is not None else None
        return json.dumps(values, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> ScanRecord:
        """Parse a spool line. Raises ``ValueError`` on a torn or foreign line."""
        values: list[Any] = json.loads(line)
        if len(values) != len(SCAN_COLUMNS):
            raise ValueError("spool line has the wrong number of fields")
        values[4] = dt.datetime.fromisoformat(values[4])
        values[15] = bytes.fromhex(values[15]) if values[15] is not None else None
        return cls(*values)


@dataclass
class WriterStats:
    """Counters exported as metrics."""

    committed: int = 0
    spooled: int = 0
    replayed: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)

    def observe(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.batch_sizes.append(size)
        self.commit_seconds.append(seconds)
        if len(self.batch_sizes) > 4096:  # metrics drain these; keep memory bounded
            del self.batch_sizes[:2048], self.commit_seconds[:2048]


class ScanWriter:
    """Per-process group-commit writer.

    ``conninfo`` is a libpq URL; ``spool_dir`` is created if missing. Call :meth:`start`
    inside the event loop, :meth:`submit` per scan, :meth:`stop` at shutdown (drains).
    """

    def __init__(
        self,
        conninfo: str,
        spool_dir: Path,
        *,
        batch_size: int = 500,
        max_delay_s: float = 0.002,
        commit_timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._conninfo = conninfo
        self._spool_dir = spool_dir
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._commit_timeout_s = commit_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retry_interval_s = retry_interval_s
        self._queue: asyncio.Queue[tuple[ScanRecord, asyncio.Future[None]]] = asyncio.Queue()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._spool: IO[str] | None = None
        self._spool_path: Path | None = None
        self._spool_seq = 0
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._db_back = asyncio.Event()
        self._stopping = False
        self.stats = WriterStats()

    # -- public ---------------------------------------------------------------------------

    @property
    def database_ok(self) -> bool:
        """False while the writer is spooling because the database failed."""
        return self._down_since is None

    @property
    def running(self) -> bool:
        """True while the batching task runs (scans are accepted)."""
        return not self._stopping and self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Scans waiting for the next batch."""
        return self._queue.qsize()

    def spool_depth(self) -> int:
        """Scans in spool files of this directory not yet replayed (approximate: lines)."""
        total = 0
        for path in self._spool_dir.glob("scans-*.jsonl"):
            with contextlib.suppress(OSError), path.open("rb") as fh:
                total += sum(1 for _ in fh)
        return total

    async def start(self) -> None:
        """Create the spool directory and start the batching task."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="scan-writer")

    async def submit(self, record: ScanRecord) -> None:
        """Return once ``record`` is committed or spooled. Raises ``RuntimeError`` when
        the writer is stopped, ``OSError`` when neither the database nor the disk took it."""
        if not self.running:
            raise RuntimeError("scan writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        await future

    async def stop(self) -> None:
        """Write everything queued, then close the connection and the spool."""
        self._stopping = True
        if self._task is not None:
            self._queue.put_nowait((None, None))  # type: ignore[arg-type]  # wake-up sentinel
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._probe is not None:
            self._probe.cancel()
        await self._close_conn()
        self._close_spool()

    async def replay_spools(self) -> int:
        """Replay every spool file of the directory not held by a live process.

        Returns the number of scans inserted (duplicates are skipped). Raises
        ``psycopg.Error`` when the database fails midway; the file then stays for later.
        """
        conn = await self._connection()
        inserted = 0
        for path in sorted(self._spool_dir.glob("scans-*.jsonl")):
            if path == self._spool_path:
                continue
            with path.open("r+", encoding="utf-8") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                inserted += await self._replay_file(conn, fh, path)
        return inserted

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.replay_spools()
        except (psycopg.Error, OSError) as exc:
            log.warning("database unavailable at start, spooling scans: %s", exc)
            await self._mark_down()
        while True:
            batch = await self._next_batch()
            stop = any(item[0] is None for item in batch)
            batch = [item for item in batch if item[0] is not None]
            if self._down_since is not None and self._db_back.is_set():
                await self._recover()
            if batch:
                await self._write(batch)
            if stop and self._queue.empty():
                return

    async def _next_batch(self) -> list[tuple[ScanRecord, asyncio.Future[None]]]:
        # While down, wake up now and then to notice the probe found the database again.
        timeout = 0.2 if self._down_since is not None else None
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return []
        batch = [first]
        self._drain(batch)
        if len(batch) < self._batch_size and self._max_delay_s > 0 and first[0] is not None:
            await asyncio.sleep(self._max_delay_s)
            self._drain(batch)
        return batch

    def _drain(self, batch: list[tuple[ScanRecord, asyncio.Future[None]]]) -> None:
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _write(self, batch: list[tuple[ScanRecord, asyncio.Future[None]]]) -> None:
        records = [record for record, _ in batch]
        error: BaseException | None = None
        if self._down_since is None:
            started = time.perf_counter()
            try:
                try:
                    await asyncio.wait_for(self._copy(records), self._commit_timeout_s)
                except _ROW_ERRORS as exc:
                    # One bad row must not fail the others nor stop the writer.
                    log.error("group commit refused (%s); inserting row by row", exc)
                    conn = await self._connection()
                    await asyncio.wait_for(
                        self._insert_rows(conn, records), self._commit_timeout_s * 4
                    )
                self.stats.observe(len(records), time.perf_counter() - started)
                self.stats.committed += len(records)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("scan commit failed, spooling %d scans: %s", len(records), exc)
                await self._mark_down()
                error = exc
            else:
                self._resolve(batch, None)
                return
        try:
            await asyncio.to_thread(self._append_spool, records)
            self.stats.spooled += len(records)
            self._resolve(batch, None)
        except OSError as exc:
            log.error(
                "scan spool failed, %d scans not durable: %s (after %s)", len(records), exc, error
            )
            self._resolve(batch, exc)

    @staticmethod
    def _resolve(
        batch: list[tuple[ScanRecord, asyncio.Future[None]]], exc: BaseException | None
    ) -> None:
        for _, future in batch:
            if not future.done():
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)

    async def _copy(self, records: list[ScanRecord]) -> None:
        conn = await self._connection()
        async with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
            for record in records:
                await copy.write_row(record)

    async def _mark_down(self) -> None:
        """Switch to spooling and start probing for the database in the background, so
        that no redirect ever waits on a connection attempt."""
        await self._close_conn()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._db_back.clear()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_database(), name="scan-writer-probe")

    async def _probe_database(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval_s)
            try:
                conn = await self._open()
            except (psycopg.Error, OSError) as exc:
                log.info("database still unavailable: %s", exc)
                continue
            self._conn = conn
            self._db_back.set()
            return

    async def _recover(self) -> None:
        """The probe reached the database: replay every spool (ours included), then
        leave spooling mode. On failure, go back to spooling and probing."""
        self._close_spool()
        try:
            replayed = await self.replay_spools()
        except (psycopg.Error, OSError) as exc:
            log.warning("replay failed, still spooling: %s", exc)
            await self._mark_down()
            return
        down_for = time.monotonic() - (self._down_since or time.monotonic())
        log.warning("database back after %.1f s; replayed %d spooled scans", down_for, replayed)
        self._down_since = None

    # -- database -------------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await self._open()
        return self._conn

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            connect_timeout=max(1, round(self._connect_timeout_s)),
            autocommit=True,
            application_name="passerelle-scan-writer",
        )

    async def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _replay_file(
        self, conn: psycopg.AsyncConnection[Any], fh: IO[str], path: Path
    ) -> int:
        records: list[ScanRecord] = []
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line: its scan never got a redirect
            try:
                records.append(ScanRecord.from_json(line))
            except (ValueError, TypeError, IndexError):
                log.error("skipping unreadable spool line in %s", path)
        inserted = 0
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            inserted += await self._insert_rows(conn, chunk)
            await conn.execute(_ATTRIBUTE_LATE_SQL, ([r.click_id for r in chunk],))
        await asyncio.to_thread(path.unlink)
        self.stats.replayed += inserted
        return inserted

    async def _insert_rows(
        self, conn: psycopg.AsyncConnection[Any], records: list[ScanRecord]
    ) -> int:
        """Insert idempotently (``ON CONFLICT (click_id) DO NOTHING``); when the database
        refuses the chunk for its data, retry row by row and move refused rows to the
        dead-letter file ``rejected-<pid>.jsonl`` (kept for an operator, never dropped).
        Returns the rows inserted. Raises ``psycopg.Error`` for connection problems."""
        try:
            return await self._insert_chunk(conn, records)
        except _ROW_ERRORS:
            if len(records) == 1:
                log.error("scan %s refused by the database; dead-lettered", records[0].click_id)
                await asyncio.to_thread(self._append_dead_letter, records[0])
                return 0
        inserted = 0
        for record in records:
            inserted += await self._insert_rows(conn, [record])
        return inserted

    @staticmethod
    async def _insert_chunk(conn: psycopg.AsyncConnection[Any], records: list[ScanRecord]) -> int:
        columns = [list(col) for col in zip(*records, strict=True)]
        async with conn.transaction():
            cur = await conn.execute(_INSERT_SQL, columns)
            return max(cur.rowcount, 0)

    def _append_dead_letter(self, record: ScanRecord) -> None:
        path = self._spool_dir / f"rejected-{os.getpid()}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # -- spool ----------------------------------------------------------------------------

    def _append_spool(self, records: list[ScanRecord]) -> None:
        if self._spool is None:
            self._spool_seq += 1
            path = self._spool_dir / f"scans-{os.getpid()}-{self._spool_seq:06d}.jsonl"
            spool = path.open("a", encoding="utf-8")
            fcntl.flock(spool, fcntl.LOCK_EX)
            self._spool, self._spool_path = spool, path
        self._spool.write("".join(record.to_json() + "\n" for record in records))
        self._spool.flush()
        os.fsync(self._spool.fileno())

    def _close_spool(self) -> None:
        if self._spool is not None:
            with contextlib.suppress(OSError):
                self._spool.close()  # closing releases the flock
            self._spool = None
            self._spool_path = None
