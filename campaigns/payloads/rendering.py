"""A bounded, fair process pool for CPU-bound rendering (QR artwork, label sheets, logos).

Why processes: rendering is pure CPU (``qrcode`` masking, Pillow, reportlab), so threads
would contend for the GIL with the event loop, and ``qrcode`` 8.2 is not thread-safe
(python-qrcode issue #421). Each worker process renders one job at a time.

Why a queue of our own in front of :class:`~concurrent.futures.ProcessPoolExecutor`: the
executor's own queue is unbounded and first-come first-served, so one organization's
160 renders would sit in front of everybody else's. Here:

- jobs wait in one FIFO queue per *owner* (an organization id) and the next free worker
  takes the next job round-robin over the owners that have jobs waiting, so an owner's
  job waits for at most one job of each other owner per worker;
- at most ``queue_per_owner`` jobs of an owner and ``queue_total`` jobs overall wait at
  once; past that :class:`RenderBusy` (503 ``render_busy`` with ``Retry-After``);
- the executor is handed a job only when a worker is free, so nothing else queues
  inside it.

The pool is loop-agnostic (a thread lock, results handed back with
``call_soon_threadsafe``), started lazily at the first job, and stopped by
:meth:`RenderPool.shutdown` (the app's lifespan calls it). Results are cached by key in a
byte-bounded LRU (:meth:`RenderPool.run_cached`).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from campaigns.errors import DomainError

#: Bounds on the advertised ``Retry-After``, in seconds.
_MIN_RETRY_AFTER_S: Final = 1
_MAX_RETRY_AFTER_S: Final = 60


class RenderBusy(DomainError):
    """Too many renders waiting (503 ``render_busy``); ``Retry-After`` says when to retry."""

    status = 503
    code = "render_busy"
    title = "Service unavailable"


def default_workers() -> int:
    """The CPUs this process may run on (``sched_getaffinity``, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    owner: Hashable
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    started: float = field(default=0.0)


class RenderPool:
    """Run picklable module-level functions in worker processes, fairly between owners.

    ``workers`` processes (default: the CPUs available); ``queue_per_owner`` and
    ``queue_total`` bound the jobs *waiting* (not running); ``cache_bytes`` bounds the
    result cache of :meth:`run_cached` (0 disables it).
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        queue_per_owner: int = 16,
        queue_total: int = 128,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.workers = workers or default_workers()
        self.queue_per_owner = queue_per_owner
        self.queue_total = queue_total
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._queues: dict[Hashable, deque[_Job]] = {}
        #: Owners with jobs waiting, in round-robin order.
        self._ring: deque[Hashable] = deque()
        self._waiting = 0
        self._running = 0
        #: Exponentially weighted mean job duration, seconds (for ``Retry-After``).
        self._mean_s = 0.5
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0

    # --- introspection (metrics, tests) ---------------------------------------------

    def waiting(self, owner: Hashable | None = None) -> int:
        """Jobs waiting for a worker: of ``owner``, or all."""
        with self._lock:
            if owner is None:
                return self._waiting
            return len(self._queues.get(owner, ()))

    @property
    def running(self) -> int:
        """Jobs being run by a worker now."""
        return self._running

    # --- running jobs -----------------------------------------------------------------

    def check_capacity(self, owner: Hashable) -> None:
        """Raise :class:`RenderBusy` if a bounded job of ``owner`` would be refused now
        (used before a streamed response starts, when a 503 is still possible)."""
        with self._lock:
            self._admit_locked(owner)

    async def run(self, owner: Hashable, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker process, queued fairly under ``owner``; its result,
        or the exception it raised (domain errors keep their ``code``).

        Raises :class:`RenderBusy` when the queue is full. Cancelling the awaiting task drops
        a job still waiting; one already running completes and is discarded."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, owner, loop, loop.create_future())
        with self._lock:
            self._admit_locked(owner)
            queue = self._queues.setdefault(owner, deque())
            if not queue:
                self._ring.append(owner)
            queue.append(job)
            self._waiting += 1
        self._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._lock:
                self._forget_locked(job)
            raise

    async def run_cached(
        self, key: str, owner: Hashable, fn: Callable[..., bytes], *args: Any
    ) -> bytes:
        """Like :meth:`run` for a function returning bytes, memoised under ``key`` (which
        must identify the output exactly, e.g. a strong ETag)."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        result: bytes = await self.run(owner, fn, *args)
        # One entry may take at most an eighth of the cache, so a few huge renders
        # cannot evict everything else.
        if 0 < len(result) <= self.cache_bytes // 8:
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = result
                    self._cached_bytes += len(result)
                    while self._cached_bytes > self.cache_bytes:
                        _, evicted = self._cache.popitem(last=False)
                        self._cached_bytes -= len(evicted)
        return result

    def shutdown(self) -> None:
        """Stop the worker processes (blocking until they exit) and fail the jobs still
        waiting with :class:`RenderBusy`. The pool can be used again afterwards (it
        starts new workers lazily); the app's lifespan calls this on shutdown."""
        with self._lock:
            executor, self._executor = self._executor, None
            waiting = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._ring.clear()
            self._waiting = 0
        for job in waiting:
            self._resolve(
                job, error=RenderBusy("The renderer stopped", headers={"Retry-After": "5"})
            )
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # --- internals (callers hold self._lock) ------------------------------------------

    def _admit_locked(self, owner: Hashable) -> None:
        if len(self._queues.get(owner, ())) >= self.queue_per_owner or (
            self._waiting >= self.queue_total
        ):
            estimate = self._mean_s * (self._waiting + self._running + 1) / self.workers
            retry_after = min(_MAX_RETRY_AFTER_S, max(_MIN_RETRY_AFTER_S, math.ceil(estimate)))
            raise RenderBusy(
                "Too many renders are waiting; retry later",
                headers={"Retry-After": str(retry_after)},
            )

    def _forget_locked(self, job: _Job) -> None:
        queue = self._queues.get(job.owner)
        if queue is not None and job in queue:
            queue.remove(job)
            self._waiting -= 1
            if not queue:
                del self._queues[job.owner]
                self._ring.remove(job.owner)

    def _dispatch(self) -> None:
        """Hand waiting jobs to free workers. Done-callbacks are attached after the lock
        is released: a future that is already done runs its callback inline, and the
        callback takes the lock."""
        with self._lock:
            started = self._dispatch_locked()
        for job, submitted in started:
            submitted.add_done_callback(partial(self._done, job))

    def _dispatch_locked(self) -> list[tuple[_Job, Future[Any]]]:
        started: list[tuple[_Job, Future[Any]]] = []
        while self._running < self.workers and self._ring:
            owner = self._ring.popleft()
            queue = self._queues[owner]
            job = queue.popleft()
            self._waiting -= 1
            if queue:
                self._ring.append(owner)  # back of the ring: the others go first
            else:
                del self._queues[owner]
            if job.future.cancelled():
                continue
            if self._executor is None:
                # spawn, not fork: the server process runs threads (scan writer, tag
                # cache listener) and holds sockets that a forked child must not share.
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            self._running += 1
            job.started = time.monotonic()
            try:
                submitted = self._executor.submit(job.fn, *job.args)
            except (BrokenProcessPool, RuntimeError) as exc:
                self._running -= 1
                self._executor = None
                self._resolve(job, error=exc)
                continue
            started.append((job, submitted))
        return started

    def _done(self, job: _Job, done: Future[Any]) -> None:
        # Runs in the executor's management thread (or inline when already done).
        error = done.exception() if not done.cancelled() else RenderBusy("Render cancelled")
        with self._lock:
            self._running -= 1
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - job.started)
            if isinstance(error, BrokenProcessPool):
                # A worker died (e.g. killed for memory): start afresh on the next job.
                self._executor = None
        self._dispatch()
        if error is not None:
            self._resolve(job, error=error)
        else:
            self._resolve(job, result=done.result())

    @staticmethod
    def _resolve(job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
