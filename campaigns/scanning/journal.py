"""Append-only journal of tag-cache changes, so a cold start knows recent changes.

The snapshot (``tags.snapshot.json``) is rewritten every few minutes; a tag created or
disabled since would be unknown, or stale, to a process that starts while the database
is down. So every process appends the rows it re-reads after a NOTIFY (or after its own
writes) to its own segment file ``cache-journal/<pid>-<random>-<n>.jsonl`` in the data
directory. Appends are buffered in memory and written by a background task at most
every :data:`FLUSH_INTERVAL_S` seconds (one write and one ``fsync`` per flush), never on
the request path. A cold start without the database loads the snapshot, then every
segment (:func:`replay`).

Lines are JSON arrays ``[kind, updated_at, ...]``: ``"c"`` + a campaign row, ``"t"`` +
a tag row (the cache's column order), ``"c-"`` / ``"t-"`` + an id whose row is gone
(then the time is the database time of the re-read). Several processes journal the same
changes: at replay the newest version of each row (by ``updated_at``) wins, a gone row
wins over versions no newer than its time, and entries older than the snapshot's
``synced_at`` minus :data:`OVERLAP` are skipped (the snapshot already holds them or
newer).

Compaction: after a process writes a snapshot it starts a new segment and deletes every
segment whose entries are all older than the snapshot's ``synced_at`` minus
:data:`OVERLAP` and that no live process holds (each process holds an ``flock`` on the
segment it appends to). Changes applied by the periodic reconcile alone (a NOTIFY every
listener missed) reach a cold start through the next snapshot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import IO, Any

from campaigns.scanning.cache import Changes, TagCache

log = logging.getLogger(__name__)

#: Seconds between journal flushes: a change is on disk at most this long after it was
#: applied in memory.
FLUSH_INTERVAL_S = 1.0
#: Lines kept queued while the disk refuses them (the oldest are dropped beyond: the next
#: snapshot covers them).
MAX_PENDING = 200_000
#: Margin for transactions that commit after later ones and for clock skew: the same
#: overlap the cache's reconcile uses.
OVERLAP = dt.timedelta(seconds=60)

_dumps = json.JSONEncoder(separators=(",", ":"), default=lambda v: v.isoformat()).encode


def encode(changes: Changes) -> list[str]:
    """Journal lines (with newlines) for ``changes``."""
    lines = []
    read_at = changes.read_at.isoformat()
    for row in changes.campaigns:
        lines.append(_dumps(["c", row[-1], *row[:-1]]) + "\n")
    for row in changes.tags:
        lines.append(_dumps(["t", row[-1], *row[:-1]]) + "\n")
    lines.extend(_dumps(["c-", read_at, cid]) + "\n" for cid in changes.gone_campaigns)
    lines.extend(_dumps(["t-", read_at, tid]) + "\n" for tid in changes.gone_tags)
    return lines


class CacheJournal:
    """This process's journal writer over ``directory`` (created on first write).
    :meth:`append` is cheap and non-blocking; :meth:`flush` and :meth:`compact` block
    (call them from a thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: list[str] = []
        self._segment: IO[str] | None = None
        self._segment_path: Path | None = None
        self._seq = 0
        self._token = secrets.token_hex(4)
        # flush() runs in a worker thread; rotate()/compact() in another: one at a time.
        self._lock = threading.Lock()

    def append(self, changes: Changes) -> None:
        """Queue the lines of ``changes`` for the next flush (event loop only)."""
        if changes:
            self._pending.extend(encode(changes))

    @property
    def pending(self) -> int:
        """Lines waiting for the next flush."""
        return len(self._pending)

    def take(self) -> list[str]:
        """Hand over the queued lines (event loop only: the queue is the loop's)."""
        lines, self._pending = self._pending, []
        return lines

    def requeue(self, lines: list[str]) -> None:
        """Put back lines a failed :meth:`write` did not store (event loop only); beyond
        :data:`MAX_PENDING` the oldest are dropped (the next snapshot covers them)."""
        self._pending[:0] = lines
        del self._pending[:-MAX_PENDING]

    def write(self, lines: list[str]) -> None:
        """Append ``lines`` to the current segment and ``fsync`` it (one call per flush).
        Blocking: call it from a thread. Raises ``OSError``."""
        if not lines:
            return
        with self._lock:
            try:
                segment = self._open_segment()
                segment.write("".join(lines))
                segment.flush()
                os.fsync(segment.fileno())
            except OSError:
                self._close()
                raise

    def flush(self) -> int:
        """:meth:`take` then :meth:`write`, for callers without an event loop. Returns
        the lines written; on ``OSError`` they are queued again and it is raised."""
        lines = self.take()
        try:
            self.write(lines)
        except OSError:
            self.requeue(lines)
            raise
        return len(lines)

    def rotate(self) -> None:
        """Start a new segment at the next flush (before a snapshot: the segments closed
        are then covered by it)."""
        self.close()

    def close(self) -> None:
        """Close the current segment (releasing its lock)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._segment is not None:
            with contextlib.suppress(OSError):
                self._segment.close()
            self._segment = self._segment_path = None

    def compact(self, synced_at: dt.datetime) -> int:
        """Delete segments not held by a live process whose entries are all older than
        ``synced_at - OVERLAP`` (``synced_at``: the snapshot just written). Returns the
        number deleted."""
        horizon = synced_at - OVERLAP
        deleted = 0
        with self._lock:
            current = self._segment_path
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == current:
                continue
            with contextlib.suppress(OSError), path.open("r+", encoding="utf-8") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                times = [at for line in fh if (at := _time(line)) is not None]
                if not times or max(times) < horizon:
                    path.unlink()
                    deleted += 1
        return deleted

    def _open_segment(self) -> IO[str]:
        if self._segment is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            # Unique per writer even if a pid is reused while an old segment remains.
            path = self.directory / f"{os.getpid()}-{self._token}-{self._seq:06d}.jsonl"
            segment = path.open("a", encoding="utf-8")
            fcntl.flock(segment, fcntl.LOCK_EX)
            self._segment, self._segment_path = segment, path
        return self._segment


def replay(directory: Path, cache: TagCache, *, since: dt.datetime | None) -> int:
    """Apply to ``cache`` the newest journaled version of every row changed after
    ``since - OVERLAP`` (``since``: the loaded snapshot's ``synced_at``; None applies
    everything). Torn or unreadable lines are skipped. Returns the entries applied.
    Blocking: call it from a thread."""
    horizon = since - OVERLAP if since is not None else None
    newest: dict[tuple[str, int], tuple[dt.datetime, list[Any]]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        try:
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn last line of a killed process
                    try:
                        entry = json.loads(line)
                        at = dt.datetime.fromisoformat(entry[1])
                        key = (entry[0].rstrip("-"), int(entry[2]))
                    except (ValueError, TypeError, IndexError, AttributeError):
                        continue
                    if horizon is not None and at < horizon:
                        continue
                    kept = newest.get(key)
                    # A gone row wins over any version no newer than its time.
                    if kept is None or at > kept[0] or (at == kept[0] and entry[0].endswith("-")):
                        newest[key] = (at, entry)
        except OSError as exc:
            log.warning("cache journal segment %s unreadable: %s", path, exc)
    campaigns: list[tuple[Any, ...]] = []
    tags: list[tuple[Any, ...]] = []
    gone_campaigns: list[int] = []
    gone_tags: list[int] = []
    for at, entry in newest.values():
        kind, row = entry[0], entry[2:]
        # Lines of older versions have fewer columns: campaigns 10 (before NFC) and 11
        # (before precise_location), tags 7 (before NFC) and 10 (before placements).
        if kind == "c" and len(row) in (10, 11, 12):
            row[5], row[6] = _parse(row[5]), _parse(row[6])
            campaigns.append((*row, at))
        elif kind == "t" and len(row) in (7, 10, 13):
            tags.append((*row, at))
        elif kind == "c-":
            gone_campaigns.append(int(row[0]))
        elif kind == "t-":
            gone_tags.append(int(row[0]))
    changes = Changes(campaigns, tags, gone_campaigns, gone_tags, dt.datetime.now(dt.UTC))
    cache.apply(changes)
    return len(newest)


def _time(line: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(json.loads(line)[1])
    except (ValueError, TypeError, IndexError):
        return None


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None
