"""Durable, batched scan writer (group commit) with a local spool for outages.

A redirect is answered only once its scan is durable: committed to PostgreSQL, or
appended and ``fsync``'d to this process's spool file when the database is unreachable,
slow, or failing. While the database is healthy, scans that arrive during one commit
are written together by the next (``COPY``), so throughput grows with load while each
scan waits for at most one commit (``commit_timeout_s``, also the server-side
``statement_timeout`` of the writer's connection) plus ``max_delay_s``.

The spool (``<spool_dir>/scans-<pid>-<n>.jsonl``, format in
``campaigns.scanning.record``) is replayed by a background task, never by the loop that
answers scans: the database counts as back only once that task has connected, taken the
table's insert lock (``lock_timeout``) and replayed the closed spool files with
``statement_timeout`` and ``lock_timeout`` set; live scans keep going to the spool
meanwhile. Replay is ``INSERT ... ON CONFLICT (click_id) DO NOTHING``, so a batch that
committed although its commit reported an error is not stored twice, and credits the
conversions that arrived before their scan (``campaigns.crediting``). Spool files left
by a killed process are replayed by the next process that starts; ``flock`` keeps two
live processes from replaying the same file, and a file replayed and removed by another
process meanwhile is skipped. Lines the database refuses, or written by a newer version,
go to the dead-letter file ``rejected-<pid>.jsonl`` for an operator, never dropped.

NTAG 424 DNA taps: a record with a :attr:`~ScanRecord.counter_to_accept` (an authentic
SUN message whose replay verdict is not decided) gets its verdict in the transaction that
stores it, so the counter is accepted if and only if the scan is stored, and of two
processes offering one counter at the same moment exactly one gets ``valid``. The group
commit copies its taps as ``valid`` and judges them in the round trip of its ``COMMIT``
(``passerelle_judge_taps``, which marks the replayed ones; see
:mod:`campaigns.scanning.nfc`), so the tags' row locks are never held across a round
trip to this process; the spool replay and the row-by-row retry judge before their
``INSERT`` (:func:`campaigns.scanning.nfc.judge_taps`). :meth:`ScanWriter.submit`
returns the record as stored, with that verdict; a spooled tap keeps none until replay,
which judges the spooled taps of a file in (tag, counter) order.

Webhooks: in the same transaction as the ``COPY`` (or the replay's ``INSERT``),
:func:`campaigns.webhooks.outbox.write_scan_events` writes the outbox rows of the batch's
scans whose organization has a ``scan.created`` webhook (``hooked``); none at all, not
even a statement, when no organization of the batch has one.

Live feed: each group commit (and each replayed chunk) also writes one ``feed_batches``
row in its transaction (:mod:`campaigns.feed.store`; the group commit sends it with its
``COMMIT``, one round trip), and :attr:`ScanWriter.on_commit` tells the process's feed hub
after the commit.

Load shedding: past ``queue_max`` waiting scans, or with the database away and
``spool_max_bytes`` on disk, :meth:`ScanWriter.submit` raises :class:`WriterOverloaded`
(answer 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypedDict

import psycopg
import psycopg.errors

from campaigns.crediting import credit_conversions
from campaigns.feed.store import record_scans, scan_batch_statement
from campaigns.scanning.hooked import HookedOrganizations
from campaigns.scanning.nfc import (
    judge_stored_taps,
    judge_taps,
    provisionally_valid,
    stored_taps_statement,
    taps_to_judge,
    with_verdicts,
)
from campaigns.scanning.record import (
    COPY_SQL,
    INSERT_SQL,
    NewerSpoolFormat,
    ScanRecord,
    column_lists,
    row,
)
from campaigns.services.credits import late_scans_conversions
from campaigns.services.rollups import MARK_REPLAYED_SQL
from campaigns.webhooks.outbox import scan_event_click_ids, write_scan_events

log = logging.getLogger(__name__)

#: Errors about the rows themselves (not the connection): retried row by row.
_ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)

#: Scans per replay statement.
_REPLAY_CHUNK = 1000

_Pending = tuple[ScanRecord, "asyncio.Future[ScanRecord]"]

_INSERT_RETURNING_SQL = INSERT_SQL + " RETURNING click_id, campaign_id"


async def _feed(conn: psycopg.AsyncConnection[Any], stored: list[ScanRecord]) -> None:
    """The live feed's batch row, in the group commit's transaction (one per batch)."""
    await record_scans(conn, [r.click_id for r in stored], [r.campaign_id for r in stored])


class WriterOverloaded(RuntimeError):
    """:meth:`ScanWriter.submit` refused a scan to shed load: the queue holds
    ``queue_max`` scans, or the database is away and the spool holds ``spool_max_bytes``.
    Answer 503 with ``Retry-After: retry_after_s`` (seconds)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class WriterOptions(TypedDict, total=False):
    """The tuning keywords of :class:`ScanWriter` set from ``campaigns.settings``."""

    queue_max: int
    connections: int
    spool_max_bytes: int
    replay_timeout_s: float
    stop_timeout_s: float


@dataclass
class _Lane:
    """One group-commit loop of a :class:`ScanWriter`: its connection (None until first
    use or after a failure), whether a batch committed on it, and its batch in flight."""

    name: str
    conn: psycopg.AsyncConnection[Any] | None = None
    proven: bool = False
    inflight: list[_Pending] = field(default_factory=list)


@dataclass
class WriterStats:
    """Counters exported as metrics."""

    committed: int = 0
    spooled: int = 0
    replayed: int = 0
    #: Scans refused by :class:`WriterOverloaded`.
    shed: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)

    def observe(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.batch_sizes.append(size)
        self.commit_seconds.append(seconds)
        if len(self.batch_sizes) > 4096:  # metrics drain these; keep memory bounded
            del self.batch_sizes[:2048], self.commit_seconds[:2048]


class FailureLog:
    """One log line per kind of failure, not one per occurrence: the first failure of a
    kind is logged at WARNING, repeats are only counted until :meth:`recovered`, which
    logs the recovery with the count. Keeps an outage from flooding the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._repeats: dict[str, int] = {}

    def failed(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log ``message % args`` (with the traceback if ``exc_info``) unless ``kind`` is
        already failing."""
        if kind in self._repeats:
            self._repeats[kind] += 1
            return
        self._repeats[kind] = 0
        self._log.warning(message, *args, exc_info=True if exc_info else None)

    def recovered(self, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` with the repeats counted, if ``kind`` was failing."""
        repeats = self._repeats.pop(kind, None)
        if repeats is not None:
            self._log.warning(message + " (%d repeated failures not logged)", *args, repeats)

    def failing(self, kind: str) -> bool:
        """True while ``kind`` has failed and not recovered."""
        return kind in self._repeats


class ScanWriter:
    """Per-process group-commit writer.

    ``conninfo`` is a libpq URL; ``spool_dir`` is created if missing. Times are seconds.
    ``connections`` group commits may be in flight at once, each on its own connection
    (a *lane*): while one batch waits for PostgreSQL, the next one is already sent, so the
    process keeps its CPU busy instead of every waiting phone queueing behind one commit.
    ``queue_max`` bounds the scans waiting for a batch, ``spool_max_bytes`` the spool
    files on disk; ``replay_timeout_s`` is the ``statement_timeout`` and ``lock_timeout``
    of replay; ``stop_timeout_s`` bounds :meth:`stop`'s drain. Call :meth:`start` inside
    the event loop, :meth:`submit` per scan, :meth:`stop` at shutdown.
    """

    def __init__(
        self,
        conninfo: str,
        spool_dir: Path,
        *,
        batch_size: int = 500,
        max_delay_s: float = 0.001,
        commit_timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        retry_interval_s: float = 1.0,
        queue_max: int = 10_000,
        connections: int = 2,
        spool_max_bytes: int = 1 << 30,
        replay_timeout_s: float = 5.0,
        stop_timeout_s: float = 5.0,
        hooked: HookedOrganizations | None = None,
    ) -> None:
        self._conninfo = conninfo
        #: Organizations with a webhook: their scans get outbox rows in the same commit.
        self._hooked = hooked
        self._spool_dir = spool_dir
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._commit_timeout_s = commit_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retry_interval_s = retry_interval_s
        self._queue_max = queue_max
        self._spool_max_bytes = spool_max_bytes
        self._replay_timeout_s = replay_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._lanes = [_Lane(f"passerelle-scan-writer-{n}") for n in range(connections)]
        self._replay_conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._replay_wanted = asyncio.Event()
        self._db_back = asyncio.Event()
        self._spool: IO[str] | None = None
        self._spool_path: Path | None = None
        self._spool_seq = 0
        # A cancelled append may still run in its thread when stop() spools the leftovers.
        self._spool_lock = threading.RLock()
        self._spool_bytes = 0
        self._spool_failed = False
        self._down_since: float | None = None
        self._stopping = False
        self._failures = FailureLog(log)
        self.stats = WriterStats()
        #: Called (on the loop, must not block) after each commit that stored scans or
        #: credited conversions: the live feed tells the other processes.
        self.on_commit: Callable[[], None] | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def database_ok(self) -> bool:
        """False while the writer is spooling because the database failed."""
        return self._down_since is None

    @property
    def storable(self) -> bool:
        """False when a scan submitted now could be stored nowhere: the database is away
        and the spool is failing too (its last append or directory check failed, its
        directory is not writable) or full. ``/health/scans`` answers 503 then."""
        if self._down_since is None:
            return True
        return (
            not self._spool_failed
            and self._spool_bytes < self._spool_max_bytes
            and os.access(self._spool_dir, os.W_OK)
        )

    @property
    def running(self) -> bool:
        """True while the batching task runs (scans are accepted)."""
        return not self._stopping and self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Scans waiting for the next batch."""
        return self._queue.qsize()

    def can_accept(self) -> bool:
        """True when :meth:`submit` would take a scan now (not shedding load)."""
        return self._refusal() is None

    def spool_depth(self) -> int:
        """Scans in spool files of this directory not yet replayed (approximate: lines)."""
        total = 0
        for path in self._spool_dir.glob("scans-*.jsonl"):
            with contextlib.suppress(OSError), path.open("rb") as fh:
                total += sum(1 for _ in fh)
        return total

    async def start(self) -> None:
        """Create the spool directory, start the batching task, and replay in the
        background the spool files left by earlier processes."""
        try:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            self._refresh_spool_bytes()
        except OSError as exc:
            self._spool_failed = True
            self._failures.failed("spool", "scan spool directory unusable: %s", exc)
        self._task = asyncio.create_task(self._run_lanes(), name="scan-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="scan-writer-replay")
        self._replay_wanted.set()

    async def submit(self, record: ScanRecord) -> ScanRecord:
        """Return once ``record`` is committed or spooled: the record as stored. A record
        with a :attr:`~ScanRecord.counter_to_accept` comes back committed with its
        ``nfc_verification`` decided (``valid`` or ``replayed``), or spooled with it
        still None (decided at replay). Raises
        :class:`WriterOverloaded` to shed load (at once, or when the spool filled up
        meanwhile), ``RuntimeError`` when the writer is stopped, ``OSError`` when neither
        the database nor the disk took it."""
        if not self.running:
            raise RuntimeError("scan writer is not running")
        refusal = self._refusal()
        if refusal is not None:
            self.stats.shed += 1
            raise refusal
        future: asyncio.Future[ScanRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return await future

    async def stop(self) -> None:
        """Write everything queued, within ``stop_timeout_s``; what is not committed by
        then is spooled (every waiting :meth:`submit` returns or raises). Then close the
        connections and the spool."""
        self._stopping = True
        if self._task is not None:
            for _ in self._lanes:  # one stop mark per lane, after every queued scan
                self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._stop_timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                await self._spool_leftovers()
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        for lane in self._lanes:
            await self._close_conn(lane)
        await self._close_replay_conn()
        self._close_spool()

    async def replay_spools(self) -> int:
        """Replay every spool file of the directory not held by a live process.

        First checks that scans can be inserted now (takes the table's insert lock
        within ``replay_timeout_s``). Returns the number of scans inserted (duplicates
        are skipped). Raises ``psycopg.Error`` or ``TimeoutError`` when the database
        fails or is blocked midway; the file then stays for later.
        """
        conn = await self._replay_connection()
        async with conn.transaction():
            await self._set_timeouts(conn, self._replay_timeout_s)
            # What INSERT takes: fails within lock_timeout while another session holds a
            # conflicting lock (ACCESS EXCLUSIVE for a migration), and on a standby.
            await conn.execute("LOCK TABLE scans IN ROW EXCLUSIVE MODE")
        inserted = 0
        for path in sorted(self._spool_dir.glob("scans-*.jsonl")):
            if path != self._spool_path:
                inserted += await self._replay_path(conn, path)
        with contextlib.suppress(OSError):
            self._refresh_spool_bytes()
        return inserted

    # -- the loop -----------------------------------------------------------------------

    def _refusal(self) -> WriterOverloaded | None:
        if self._queue.qsize() >= self._queue_max:
            return WriterOverloaded("scan queue full", retry_after_s=1)
        if self._down_since is not None and self._spool_bytes >= self._spool_max_bytes:
            return WriterOverloaded("database away and scan spool full", retry_after_s=10)
        return None

    async def _run_lanes(self) -> None:
        await asyncio.gather(*(self._run(lane) for lane in self._lanes))

    async def _run(self, lane: _Lane) -> None:
        """One lane's loop: take the next batch, write it, until its stop mark (the marks
        are queued after every scan, so a lane that meets one has nothing left to do)."""
        while True:
            batch, stop = await self._next_batch()
            if self._down_since is not None and self._db_back.is_set():
                self._back_up()
            if batch:
                lane.inflight = batch
                try:
                    await self._write(lane, batch)
                except Exception:
                    # A bug must not leave phones waiting for ever nor stop the writer.
                    log.exception("scan writer failed on a batch; spooling it")
                    await self._spool_batch(batch)
                lane.inflight = []
            if stop:
                return

    async def _next_batch(self) -> tuple[list[_Pending], bool]:
        """The next batch (at most ``batch_size`` scans) and whether stop was asked."""
        # While down, wake up now and then to notice the replayer found the database.
        timeout = 0.2 if self._down_since is not None else None
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        stop = self._drain(batch)
        if not stop and len(batch) < self._batch_size and self._max_delay_s > 0:
            await asyncio.sleep(self._max_delay_s)
            stop = self._drain(batch)
        return batch, stop

    def _drain(self, batch: list[_Pending]) -> bool:
        """Move queued scans into ``batch`` up to ``batch_size``; True at the stop mark."""
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    async def _write(self, lane: _Lane, batch: list[_Pending]) -> None:
        if self._down_since is None:
            records = [record for record, _ in batch]
            started = time.perf_counter()
            try:
                stored = await self._commit(lane, records)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._failures.failed(
                    "database", "scan commit failed, spooling until the database is back: %r", exc
                )
                await self._mark_down(lane)
            else:
                self.stats.observe(len(records), time.perf_counter() - started)
                self.stats.committed += len(records)
                self._resolve(batch, None, stored)
                self._committed()
                return
        await self._spool_batch(batch)

    async def _spool_batch(self, batch: list[_Pending]) -> None:
        if self._spool_bytes >= self._spool_max_bytes:
            self._failures.failed(
                "spool_full", "scan spool full (%d bytes), shedding scans", self._spool_bytes
            )
            self.stats.shed += len(batch)
            self._resolve(batch, WriterOverloaded("scan spool full", retry_after_s=10))
            return
        records = [record for record, _ in batch]
        try:
            written = await asyncio.to_thread(self._append_spool, records)
        except OSError as exc:
            self._spool_failed = True
            self._failures.failed("spool", "scan spool failed, scans not durable: %r", exc)
            self._resolve(batch, exc)
            return
        self._spool_failed = False
        self._failures.recovered("spool", "scan spool writable again")
        self._failures.recovered("spool_full", "scan spool below its bound again")
        self._spool_bytes += written
        self.stats.spooled += len(records)
        self._resolve(batch, None)

    async def _spool_leftovers(self) -> None:
        """After a cancelled drain: spool the scans still waiting (the batch in flight
        may have committed; replay skips it then)."""
        leftovers = [item for lane in self._lanes for item in lane.inflight]
        for lane in self._lanes:
            lane.inflight = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                leftovers.append(item)
        leftovers = [item for item in leftovers if not item[1].done()]
        if leftovers:
            log.warning("scan writer drain timed out; spooling %d scans", len(leftovers))
            await self._spool_batch(leftovers)

    @staticmethod
    def _resolve(
        batch: list[_Pending], exc: BaseException | None, stored: list[ScanRecord] | None = None
    ) -> None:
        """Settle the futures: with the records as stored (``stored``, in batch order; the
        submitted ones when None), or with ``exc``."""
        for index, (record, future) in enumerate(batch):
            if not future.done():
                if exc is None:
                    future.set_result(record if stored is None else stored[index])
                else:
                    future.set_exception(exc)

    async def _commit(self, lane: _Lane, records: list[ScanRecord]) -> list[ScanRecord]:
        """``COPY`` the batch in one transaction; row by row (refused rows dead-lettered)
        when the database refuses the batch for its data. Returns the records as stored
        (taps judged, :func:`~campaigns.scanning.nfc.judge_taps`), in batch order."""
        try:
            try:
                async with asyncio.timeout(self._commit_timeout_s):  # no task, as wait_for
                    stored = await self._copy(lane, records)
            except psycopg.OperationalError as exc:
                if not self._died_while_idle(lane, exc):
                    raise
                # A restart killed the connection while no batch was using it: the first
                # use tells. One retry on a new connection, not an outage.
                log.info("scan writer connection was dead (%r); reconnecting", exc)
                await self._close_conn(lane)
                async with asyncio.timeout(self._commit_timeout_s):
                    stored = await self._copy(lane, records)
        except _ROW_ERRORS as exc:
            # One bad row must not fail the others nor stop the writer.
            log.error("group commit refused (%s); inserting row by row", exc)
            conn = await self._connection(lane)
            refused: list[ScanRecord] = []
            judged: dict[str, ScanRecord] = {}
            await asyncio.wait_for(
                self._insert_rows(conn, records, self._commit_timeout_s, refused, judged),
                self._commit_timeout_s * 4,
            )
            await self._dead_letter([record.to_json().encode() for record in refused])
            stored = [judged.get(record.click_id, record) for record in records]
        lane.proven = True
        return stored

    @staticmethod
    def _died_while_idle(lane: _Lane, exc: psycopg.OperationalError) -> bool:
        conn = lane.conn
        return (
            lane.proven
            and conn is not None
            and (conn.closed or conn.broken)
            and not isinstance(exc, psycopg.errors.QueryCanceled)
        )

    async def _copy(self, lane: _Lane, records: list[ScanRecord]) -> list[ScanRecord]:
        """One transaction in as few round trips as the protocol allows: ``BEGIN``, the
        ``COPY`` (two: it starts, then the rows and its end), the webhooks' outbox when an
        organization of the batch has one, then the live feed's batch row with the
        taps' verdicts and the ``COMMIT`` (one simple query). Four round trips for a
        batch without webhooks, taps or not.

        Taps (:func:`~campaigns.scanning.nfc.taps_to_judge`) are copied as ``valid`` and
        judged at the end (``passerelle_judge_taps`` marks the replayed ones), so the
        tags' row locks are held from the last round trip to the commit only
        (:mod:`campaigns.scanning.nfc`). With an outbox to write (it reads the stored
        verdicts), or a click id that cannot be written into the query, they are judged
        in a round trip of their own before it."""
        conn = await self._connection(lane)
        taps = taps_to_judge(records)
        stored = provisionally_valid(records) if taps else records
        try:
            await conn.execute(b"BEGIN")
            await self._copy_rows(conn, stored)
            batch_row = scan_batch_statement(
                [r.click_id for r in stored], [r.campaign_id for r in stored]
            )
            judge = stored_taps_statement(taps) if taps else None
            events = scan_event_click_ids(stored, self._hooked)
            if taps and (judge is None or batch_row is None or events):
                stored = await judge_stored_taps(conn, stored, taps)
                judge = None
            # The webhooks' outbox (only for organizations having one) and the live
            # feed's batch row commit with the scans.
            await write_scan_events(conn, events)
            if batch_row is None:
                await _feed(conn, stored)
                await conn.execute(b"COMMIT")
            elif judge is not None:
                cur = await conn.execute(judge + b"; " + batch_row + b"; COMMIT")
                verdicts = await cur.fetchone()
                assert verdicts is not None
                stored = with_verdicts(stored, taps, verdicts[0])
            else:
                await conn.execute(batch_row + b"; COMMIT")
        except Exception:
            await self._rollback(conn)
            raise
        return stored

    @staticmethod
    async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
        """End a failed group commit's transaction so the connection can be used again
        (the row-by-row retry uses it); a connection that cannot roll back is closed."""
        if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            await conn.execute(b"ROLLBACK")
        except Exception:
            with contextlib.suppress(Exception):
                await conn.close()

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    @staticmethod
    async def _copy_rows(conn: psycopg.AsyncConnection[Any], records: list[ScanRecord]) -> None:
        async with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
            for record in records:
                await copy.write_row(row(record))

    async def _mark_down(self, lane: _Lane) -> None:
        """Switch to spooling; the replayer looks for the database in the background, so
        that no redirect ever waits on a connection attempt or a replay. (The other lanes
        find the writer down at their next batch and spool it; a batch of theirs in flight
        commits or fails on its own.)"""
        await self._close_conn(lane)
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._db_back.clear()
        self._replay_wanted.set()

    def _back_up(self) -> None:
        """The replayer replayed the spool: write to the database again, and have the
        spool file written meanwhile replayed."""
        self._close_spool()
        down_for = time.monotonic() - (self._down_since or time.monotonic())
        self._failures.recovered("database", "database back after %.1f s", down_for)
        self._down_since = None
        self._db_back.clear()
        self._replay_wanted.set()

    async def _replay_loop(self) -> None:
        """Replay whenever asked (start, outage, recovery), retrying every
        ``retry_interval_s`` until a pass succeeds; a success while down means the
        database is back."""
        while True:
            await self._replay_wanted.wait()
            self._replay_wanted.clear()
            try:
                replayed = await self.replay_spools()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._failures.failed("replay", "spool replay failed, will retry: %r", exc)
                if self._down_since is None and not any(lane.proven for lane in self._lanes):
                    # Nothing committed yet (start): the database is away until a replay
                    # pass succeeds. A proven live connection decides for itself.
                    self._down_since = time.monotonic()
                    self._db_back.clear()
                await self._close_replay_conn()
                if self._spool_failed and await asyncio.to_thread(self._probe_spool):
                    self._spool_failed = False
                    self._failures.recovered("spool", "scan spool writable again")
                self._replay_wanted.set()
                await asyncio.sleep(self._retry_interval_s)
                continue
            except Exception:
                # A bug: keep the files (retried later) and the writer's loop alive.
                self._failures.failed(
                    "replay_bug", "spool replay failed unexpectedly, will retry", exc_info=True
                )
                await self._close_replay_conn()
                self._replay_wanted.set()
                await asyncio.sleep(self._retry_interval_s)
                continue
            # Replays are rare: no idle connection per process between them.
            await self._close_replay_conn()
            self._failures.recovered("replay", "spool replay works again")
            self._failures.recovered("replay_bug", "spool replay works again")
            if replayed:
                log.warning("replayed %d spooled scans", replayed)
            if self._down_since is not None:
                self._db_back.set()

    # -- database -------------------------------------------------------------------------

    async def _connection(self, lane: _Lane) -> psycopg.AsyncConnection[Any]:
        if lane.conn is None or lane.conn.closed:
            lane.conn = await self._open(lane.name, self._commit_timeout_s)
            lane.proven = False
        return lane.conn

    async def _replay_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._replay_conn is None or self._replay_conn.closed:
            self._replay_conn = await self._open("passerelle-scan-replay", self._replay_timeout_s)
        return self._replay_conn

    async def _open(self, name: str, statement_timeout_s: float) -> psycopg.AsyncConnection[Any]:
        # The server gives up on a statement too (statement_timeout), so a writer that
        # gave up waiting does not leave a backend queued behind a lock.
        # (A SET, not the startup "options", which connection poolers may refuse.)
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo,
            connect_timeout=max(1, round(self._connect_timeout_s)),
            autocommit=True,
            application_name=name,
        )
        try:
            ms = str(max(1, round(statement_timeout_s * 1000)))
            await conn.execute("SELECT set_config('statement_timeout', %s, false)", (ms,))
        except BaseException:
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _close_conn(lane: _Lane) -> None:
        if lane.conn is not None:
            with contextlib.suppress(Exception):
                await lane.conn.close()
            lane.conn = None

    async def _close_replay_conn(self) -> None:
        if self._replay_conn is not None:
            with contextlib.suppress(Exception):
                await self._replay_conn.close()
            self._replay_conn = None

    @staticmethod
    async def _set_timeouts(conn: psycopg.AsyncConnection[Any], seconds: float) -> None:
        """``SET LOCAL statement_timeout`` and ``lock_timeout`` (one round trip)."""
        ms = str(max(1, round(seconds * 1000)))
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, true), "
            "set_config('lock_timeout', %s, true)",
            (ms, ms),
        )

    async def _replay_path(self, conn: psycopg.AsyncConnection[Any], path: Path) -> int:
        """Replay one file unless another process holds it or already replayed it."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return 0  # replayed and removed by another process since the glob
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process owns it, or is replaying it
            try:
                current = os.stat(path)
            except FileNotFoundError:
                return 0
            opened = os.fstat(fh.fileno())
            if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                return 0  # replayed and removed after our open; the name is another file
            return await self._replay_file(conn, fh, path)

    async def _replay_file(
        self, conn: psycopg.AsyncConnection[Any], fh: IO[bytes], path: Path
    ) -> int:
        inserted = 0
        rejected: list[bytes] = []  # kept as they are, whatever their bytes
        chunk: list[ScanRecord] = []
        # Taps whose replay verdict is undecided are replayed last, in (tag, counter)
        # order: a tag's counter only grows, so the oldest tap is judged first.
        taps: list[ScanRecord] = []
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn last line: its scan never got a redirect
            try:
                record = ScanRecord.from_json(line.decode("utf-8"))
                (chunk if record.counter_to_accept is None else taps).append(record)
            except NewerSpoolFormat as exc:
                self._failures.failed(
                    "newer_spool", "spool line of a newer version (%s) dead-lettered", exc
                )
                rejected.append(line.rstrip(b"\n"))
            except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError included
                log.error("unreadable spool line in %s dead-lettered: %s", path, exc)
                rejected.append(line.rstrip(b"\n"))
            if len(chunk) == _REPLAY_CHUNK:
                inserted += await self._replay_chunk(conn, chunk, rejected)
                chunk = []
        if chunk:
            inserted += await self._replay_chunk(conn, chunk, rejected)
        taps.sort(key=lambda r: (r.tag_id, r.nfc_counter, r.scanned_at))
        for start in range(0, len(taps), _REPLAY_CHUNK):
            tap_chunk = taps[start : start + _REPLAY_CHUNK]
            inserted += await self._replay_chunk(conn, tap_chunk, rejected)
        # Dead letters last, so a replay that fails midway and runs again adds none twice.
        await self._dead_letter(rejected)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return inserted

    async def _replay_chunk(
        self, conn: psycopg.AsyncConnection[Any], chunk: list[ScanRecord], rejected: list[bytes]
    ) -> int:
        timeout = self._replay_timeout_s
        refused: list[ScanRecord] = []
        # The asyncio bound covers what statement_timeout cannot: a silent network.
        inserted = await asyncio.wait_for(
            self._insert_rows(conn, chunk, timeout, refused), timeout * 4
        )
        rejected.extend(record.to_json().encode() for record in refused)
        click_ids = [record.click_id for record in chunk]

        async def credit() -> None:
            async with conn.transaction():
                await self._set_timeouts(conn, timeout)
                # Late scans can enter settled journeys of their visitor: those stored
                # credits are recomputed with the newly credited conversions.
                late = await late_scans_conversions(conn, click_ids)
                await credit_conversions(conn, click_ids, recompute=late)
                # Late rows, out of the rollup worker's look-back: their days are redone.
                await conn.execute(MARK_REPLAYED_SQL, {"ids": click_ids})

        await asyncio.wait_for(credit(), timeout * 2)
        self.stats.replayed += inserted
        self._committed()
        return inserted

    async def _insert_rows(
        self,
        conn: psycopg.AsyncConnection[Any],
        records: list[ScanRecord],
        timeout_s: float,
        refused: list[ScanRecord],
        judged: dict[str, ScanRecord] | None = None,
    ) -> int:
        """Insert idempotently (``ON CONFLICT (click_id) DO NOTHING``) with
        ``statement_timeout``/``lock_timeout`` of ``timeout_s``, taps judged first in the
        same transaction (:func:`~campaigns.scanning.nfc.judge_taps`; the records as
        stored go in ``judged`` by click id); when the database refuses the chunk for its
        data, retry row by row and add refused rows to ``refused``. Returns the rows
        inserted. Raises ``psycopg.Error`` for connection problems and timeouts."""
        try:
            async with conn.transaction():
                await self._set_timeouts(conn, timeout_s)
                stored = await judge_taps(conn, records)
                cur = await conn.execute(_INSERT_RETURNING_SQL, column_lists(stored))
                new = await cur.fetchall()  # only rows not stored before: fed once
                inserted = len(new)
                await record_scans(conn, [r[0] for r in new], [r[1] for r in new])
                await write_scan_events(conn, scan_event_click_ids(stored, self._hooked))
            if judged is not None:
                judged.update((record.click_id, record) for record in stored)
            return inserted
        except _ROW_ERRORS:
            if len(records) == 1:
                log.error("scan %s refused by the database; dead-lettered", records[0].click_id)
                refused.append(records[0])
                return 0
        inserted = 0
        for record in records:
            inserted += await self._insert_rows(conn, [record], timeout_s, refused, judged)
        return inserted

    # -- spool ----------------------------------------------------------------------------

    async def _dead_letter(self, lines: list[bytes]) -> None:
        if lines:
            await asyncio.to_thread(self._append_dead_letter, lines)

    def _append_dead_letter(self, lines: list[bytes]) -> None:
        path = self._spool_dir / f"rejected-{os.getpid()}.jsonl"
        with path.open("ab") as fh:
            fh.write(b"".join(line + b"\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def _append_spool(self, records: list[ScanRecord]) -> int:
        """Append and fsync; returns the bytes written. On failure the file is closed, so
        the next append starts a new one after a possibly torn last line."""
        data = "".join(record.to_json() + "\n" for record in records)
        with self._spool_lock:
            try:
                if self._spool is None:
                    self._spool_seq += 1
                    name = f"scans-{os.getpid()}-{self._spool_seq:06d}.jsonl"
                    # Created under another name and locked before it takes its own,
                    # so a replayer never sees it unlocked (and replays it empty).
                    temp = self._spool_dir / f".{name}.new"
                    spool = temp.open("a", encoding="utf-8")
                    try:
                        fcntl.flock(spool, fcntl.LOCK_EX)
                        temp.rename(self._spool_dir / name)
                    except OSError:
                        spool.close()
                        raise
                    self._spool, self._spool_path = spool, self._spool_dir / name
                self._spool.write(data)
                self._spool.flush()
                os.fsync(self._spool.fileno())
            except OSError:
                self._close_spool()
                raise
        return len(data.encode())

    def _close_spool(self) -> None:
        with self._spool_lock:
            if self._spool is not None:
                with contextlib.suppress(OSError):
                    self._spool.close()  # closing releases the flock
                self._spool = None
                self._spool_path = None

    def _refresh_spool_bytes(self) -> None:
        total = 0
        for path in self._spool_dir.glob("scans-*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        self._spool_bytes = total

    def _probe_spool(self) -> bool:
        """While the spool is failing: True when an fsync'd write works again."""
        probe = self._spool_dir / f".probe-{os.getpid()}"
        try:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            with probe.open("w", encoding="utf-8") as fh:
                fh.write("ok\n")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError:
            return False
        return True
