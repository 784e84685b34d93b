"""The live feed's per-process hub: a reader connection, a LISTEN connection while it
serves streams, and the listeners.

Each server process runs one :class:`FeedHub` (started with the scan runtime, never on a
request's path). While some stream listens, the hub holds a cursor (a snapshot, see
:mod:`campaigns.feed.cursor`) and, on each ``passerelle_feed`` notification and every
``poll_interval_s`` as a safety net, reads in one statement the events of the watched
campaigns whose batches became visible since (:func:`campaigns.feed.store.read_new`),
encodes each event once, and hands it to every listener of its campaign.

Telling the others: a ``NOTIFY`` in the group commit would take PostgreSQL's cluster-wide
notification lock until the commit is flushed, serializing every process's commits. So
the writer's transaction only inserts its batch row, and after the commit the writer
calls :meth:`FeedHub.committed`: this process polls at once, and the hub sends
``pg_notify('passerelle_feed', '')`` on its own connection (``synchronous_commit`` off,
so that lock is held for microseconds, never across a writer's flush), at most one per
committed batch and one per :data:`NOTIFY_INTERVAL_S` (50 ms): under load one
notification covers many batches. A lost notification costs at most
``poll_interval_s``.

Slow clients: each listener has a bounded queue (``queue_max`` events). The hub never
waits for a listener; a listener whose queue is full is dropped (its stream ends, the
client reconnects with ``Last-Event-ID`` and resumes without a gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg

from campaigns.feed import store
from campaigns.feed.cursor import Position, Snapshot, advance, event_id
from campaigns.scanning.writer import FailureLog

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "passerelle_feed"
#: Least time between two notifications of one process, seconds: the latency it adds to
#: other processes' streams, against one notification transaction per batch under load.
NOTIFY_INTERVAL_S = 0.05
#: Events per page of a resume's replay.
REPLAY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Encoded:
    """An event ready to send: its batch ``xid``, ``kind`` and ``id`` (to tell what a
    resumed client already has) and its ``text/event-stream`` bytes."""

    xid: int
    kind: str
    id: int
    text: bytes


@dataclass(frozen=True, slots=True)
class Seen:
    """What a client resuming from ``position`` already has: the batches its snapshot
    sees, and in the batch ``partial_xid`` the events up to ``position``'s."""

    position: Position
    partial_xid: int | None

    def __call__(self, event: Encoded) -> bool:
        """True when ``event`` was delivered before ``position``."""
        position = self.position
        if position.snapshot.visible(event.xid):
            return True
        return event.xid == self.partial_xid and (event.kind, event.id) <= (
            position.kind or "",
            position.id,
        )


def sse_event(snapshot: Snapshot, event: store.Event) -> bytes:
    """The ``text/event-stream`` bytes of ``event`` delivered from ``snapshot`` (the
    cursor before its batch): ``event:``, ``id:`` and one ``data:`` line (the JSON has
    no line breaks)."""
    return (
        f"event: {event.kind}\nid: {event_id(snapshot, event.kind, event.id)}\n"
        f"data: {event.data}\n\n"
    ).encode()


def sse_comment(text: str) -> bytes:
    """An SSE comment line (ignored by ``EventSource``; keeps proxies from timing out)."""
    return f": {text}\n\n".encode()


class Listener:
    """One stream's side of the hub: a bounded queue of encoded events of
    ``campaign_id``. :attr:`start` is the snapshot from which the hub delivers to it
    (set when it joins; :meth:`wait_started`)."""

    def __init__(self, campaign_id: int, queue_max: int) -> None:
        self.campaign_id = campaign_id
        self.start: Snapshot | None = None
        self.dropped = False
        self.closed = False
        self._queue_max = queue_max
        self._chunks: deque[list[Encoded]] = deque()
        self._size = 0
        self._wake = asyncio.Event()
        self._started = asyncio.Event()

    def _begin(self, snapshot: Snapshot) -> None:
        self.start = snapshot
        self._started.set()

    def offer(self, chunk: list[Encoded]) -> None:
        """Queue ``chunk`` (never waits); past ``queue_max`` events the listener is
        dropped instead."""
        if self.dropped or self.closed:
            return
        if self._size + len(chunk) > self._queue_max:
            self.dropped = True
            self._chunks.clear()
            self._size = 0
        else:
            self._chunks.append(chunk)
            self._size += len(chunk)
        self._wake.set()

    def close(self) -> None:
        """End the stream (server shutdown)."""
        self.closed = True
        self._wake.set()
        self._started.set()

    async def wait_started(self) -> Snapshot | None:
        """The snapshot the hub delivers from; None when closed first."""
        await self._started.wait()
        return self.start

    async def next(self, timeout_s: float) -> list[Encoded] | None:
        """The next queued events, or ``[]`` after ``timeout_s`` seconds without any;
        None once dropped or closed."""
        if not self._chunks and not (self.dropped or self.closed):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
        if self.dropped or self.closed:
            return None
        if not self._chunks:
            return []
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        return chunk


class FeedHub:
    """The live feed of one process. ``conninfo`` is a libpq URL. Times are seconds:
    ``poll_interval_s`` the safety-net poll, ``retention_s`` how long batches are kept
    (deleted every ``prune_interval_s`` by one process); ``queue_max`` bounds each
    listener's queue in events. :meth:`start` in the event loop, :meth:`stop` at
    shutdown."""

    def __init__(
        self,
        conninfo: str,
        *,
        poll_interval_s: float = 1.0,
        retention_s: float = 86_400.0,
        prune_interval_s: float = 600.0,
        queue_max: int = 10_000,
    ) -> None:
        self._conninfo = conninfo
        self._poll_interval_s = poll_interval_s
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self.queue_max = queue_max
        #: The cursor up to which every listener has been served; None while idle.
        self.snapshot: Snapshot | None = None
        self._listeners: dict[int, set[Listener]] = defaultdict(set)
        self._joining: list[Listener] = []
        self._polling = False
        self._wake = asyncio.Event()
        self._notify_wanted = asyncio.Event()
        self._active = asyncio.Event()  # some stream is served: listen
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._reader_lock = asyncio.Lock()
        self._reader_pid: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pruned_at = time.monotonic()
        self._stopping = False
        self._failures = FailureLog(log)  # one line per kind of failure, not per retry

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks (listening, polling, notifying, pruning). Never
        raises for a database outage: the tasks retry."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="feed-listener"),
            asyncio.create_task(self._poll_loop(), name="feed-poller"),
            asyncio.create_task(self._notify_loop(), name="feed-notifier"),
        ]

    async def stop(self) -> None:
        """End every stream, cancel the tasks, close the connections."""
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._close_reader()

    def close_streams(self) -> None:
        """End every stream now (server shutdown: streams never end by themselves)."""
        self._stopping = True
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.close()
        for listener in self._joining:
            listener.close()
        self._listeners.clear()
        self._joining.clear()

    # -- the writer's side ----------------------------------------------------------------

    def committed(self) -> None:
        """A transaction of this process committed feed batches: poll now, and tell the
        other processes. Sets two events; never blocks."""
        self._wake.set()
        self._notify_wanted.set()

    # -- the streams' side ----------------------------------------------------------------

    def subscribe(self, campaign_id: int) -> Listener:
        """A listener of ``campaign_id``'s events; the hub delivers the batches after its
        :attr:`Listener.start` (known once :meth:`Listener.wait_started` returns). End
        with :meth:`unsubscribe`."""
        listener = Listener(campaign_id, self.queue_max)
        self._active.set()
        if self._stopping:
            listener.close()
        elif self.snapshot is not None and not self._polling:
            listener._begin(self.snapshot)
            self._listeners[campaign_id].add(listener)
        else:
            # A poll in flight reads only the campaigns watched when it started: join
            # when it is done, from its snapshot (or from the first one when idle).
            self._joining.append(listener)
            self._wake.set()
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        """Forget ``listener`` (idempotent)."""
        listener.closed = True
        listeners = self._listeners.get(listener.campaign_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.campaign_id]
        with contextlib.suppress(ValueError):
            self._joining.remove(listener)

    @property
    def listener_count(self) -> int:
        """Streams currently served by this process."""
        return sum(len(s) for s in self._listeners.values()) + len(self._joining)

    async def seen_before(self, position: Position, campaign_id: int) -> Seen:
        """What a client resuming from ``position`` has of ``campaign_id``'s events
        (finds the batch of its last event). Raises ``psycopg.Error``."""
        partial: int | None = None
        if position.kind is not None:
            async with self._reader_lock:
                conn = await self._reader_conn()
                partial = await store.batch_of(
                    conn, position.snapshot, campaign_id, position.kind, position.id
                )
        return Seen(position, partial)

    async def replay(
        self, seen: Seen, campaign_id: int, until: Snapshot
    ) -> AsyncIterator[list[Encoded]]:
        """The encoded events of ``campaign_id`` that ``until`` sees and the client
        (``seen``) does not have, in pages, in delivery order. Raises ``psycopg.Error``."""
        prev = seen.position.snapshot
        after: tuple[int, str, int] = (0, "", 0)
        cursors: dict[int, Snapshot] = {}
        while True:
            async with self._reader_lock:
                conn = await self._reader_conn()
                events = await store.read_between(
                    conn, prev, until, campaign_id, after=after, limit=REPLAY_PAGE
                )
            chunk = []
            for event in events:
                snapshot = cursors.get(event.xid)
                if snapshot is None:
                    snapshot = cursors[event.xid] = advance(prev, until, event.xid - 1)
                encoded = Encoded(event.xid, event.kind, event.id, sse_event(snapshot, event))
                if not seen(encoded):
                    chunk.append(encoded)
            if chunk:
                yield chunk
            if len(events) < REPLAY_PAGE:
                return
            last = events[-1]
            after = (last.xid, last.kind, last.id)

    async def expired(self, position: Position) -> bool:
        """True when the retention may have deleted batches ``position`` has not seen
        (resuming from it could leave a gap). Raises ``psycopg.Error``."""
        async with self._reader_lock:
            conn = await self._reader_conn()
            # Every deleted batch is below xmin, so seen, or the cursor is too old.
            return await store.last_deleted(conn) >= position.snapshot.xmin

    # -- background -----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._poll()
            except (psycopg.Error, OSError) as exc:
                self._failures.failed("poll", "live feed poll failed (retrying): %s", exc)
                await self._close_reader()
                await asyncio.sleep(min(self._poll_interval_s, 1.0))
            else:
                self._failures.recovered("poll", "live feed polls again")
            if time.monotonic() - self._pruned_at >= self._prune_interval_s:
                self._pruned_at = time.monotonic()
                try:
                    async with self._reader_lock:
                        deleted = await store.prune(await self._reader_conn(), self._retention_s)
                    if deleted:
                        log.info("live feed: %d batches past retention deleted", deleted)
                except (psycopg.Error, OSError) as exc:
                    log.warning("live feed retention failed (retrying later): %s", exc)
                    await self._close_reader()

    async def _poll(self) -> None:
        """One read of new events, fanned out; joining listeners start from its snapshot."""
        if not self._listeners and not self._joining:
            self.snapshot = None  # idle: no cursor to keep
            return
        prev = self.snapshot
        watched = sorted(self._listeners)
        self._polling = True
        try:
            async with self._reader_lock:
                conn = await self._reader_conn()
                if prev is None or not watched:
                    cur = await conn.execute("SELECT pg_current_snapshot()::text")
                    row = await cur.fetchone()
                    assert row is not None
                    snapshot, events = Snapshot.parse(row[0]), list[store.Event]()
                else:
                    snapshot, events = await store.read_new(conn, prev, watched)
        finally:
            self._polling = False
        if prev is not None:
            self._fan_out(prev, snapshot, events)
        self.snapshot = snapshot
        joining, self._joining = self._joining, []
        for listener in joining:
            if not listener.closed:
                listener._begin(snapshot)
                self._listeners[listener.campaign_id].add(listener)

    def _fan_out(self, prev: Snapshot, cur: Snapshot, events: list[store.Event]) -> None:
        by_campaign: dict[int, list[Encoded]] = defaultdict(list)
        cursors: dict[int, Snapshot] = {}
        for event in events:
            snapshot = cursors.get(event.xid)
            if snapshot is None:
                snapshot = cursors[event.xid] = advance(prev, cur, event.xid - 1)
            by_campaign[event.campaign_id].append(
                Encoded(event.xid, event.kind, event.id, sse_event(snapshot, event))
            )
        for campaign_id, chunk in by_campaign.items():
            for listener in list(self._listeners.get(campaign_id, ())):
                listener.offer(chunk)
                if listener.dropped:
                    self.unsubscribe(listener)
                    listener.dropped = True

    async def _listen(self) -> None:
        """LISTEN while this process serves streams (no connection held otherwise)."""
        backoff = 0.5
        while True:
            await self._active.wait()
            try:
                async with await self._connect("passerelle-feed-listener") as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._failures.recovered("listen", "live feed listens again")
                    backoff = 0.5
                    self._wake.set()  # batches committed while not listening
                    while self._listeners or self._joining:
                        async for notify in conn.notifies(timeout=1.0):
                            if notify.pid != self._reader_pid:  # ours: already polled
                                self._wake.set()
                    self._active.clear()
                continue
            except (psycopg.Error, OSError) as exc:
                self._failures.failed("listen", "live feed listener lost the database: %s", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _notify_loop(self) -> None:
        """At most one notification every ``NOTIFY_INTERVAL_S``: the commits meanwhile
        share the next one (under load, one notification covers many batches)."""
        while True:
            await self._notify_wanted.wait()
            self._notify_wanted.clear()
            try:
                async with self._reader_lock:
                    conn = await self._reader_conn()
                    await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
            except (psycopg.Error, OSError) as exc:
                # The others' safety-net poll finds the batch within poll_interval_s.
                log.info("live feed notification not sent: %s", exc)
                await self._close_reader()
                await asyncio.sleep(1.0)
            await asyncio.sleep(NOTIFY_INTERVAL_S)

    async def _reader_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._reader is None or self._reader.closed:
            conn = await self._connect("passerelle-feed")
            try:
                # Its only writes are notifications and retention deletes: no flush to
                # wait for while holding the notification lock.
                await conn.execute("SET synchronous_commit = off")
            except BaseException:
                await conn.close()
                raise
            self._reader, self._reader_pid = conn, conn.info.backend_pid
        return self._reader

    async def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.close()
            self._reader = None
            self._reader_pid = None

    async def _connect(self, name: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=2, application_name=name
        )
