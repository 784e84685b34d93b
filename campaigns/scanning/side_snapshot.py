"""The side snapshot: the small in-memory caches besides tags, for a start without the
database.

The tag cache has its snapshot and journal (:mod:`campaigns.scanning.cache`,
:mod:`campaigns.scanning.journal`). The stores' geofences
(:class:`~campaigns.scanning.locations.LocationCache`), the redirect rules
(:class:`~campaigns.scanning.rules.RuleCache`) and the visitor-cookie settings
(:class:`~campaigns.scanning.organizations.CookieSettings`) are small (a thousand stores
and rules are a few hundred kilobytes), so instead of a journal each process rewrites
this whole file, atomically (temp file, ``fsync``, rename), within a second of any
change it applied (:class:`~campaigns.scanning.runtime.CacheRuntime`). Every process
applies the same notifications, so the last writer's copy is as fresh as any; a change
seen only by a periodic reconcile is written after that reconcile.

Format: one JSON object ``{"format": "passerelle-side/1", "written_at": ISO 8601,
"<table>": [rows...]}`` with ``locations``, ``redirect_rules`` and ``organizations``, rows
as each cache's ``to_disk()`` gives them. A missing, unreadable or foreign file, or a
table whose rows do not load, leaves that cache empty (as before this file existed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SIDE_SNAPSHOT_FORMAT = "passerelle-side/1"
SIDE_SNAPSHOT_FILE = "side.snapshot.json"


class SideCache(Protocol):
    """What the side snapshot needs of a cache."""

    def to_disk(self) -> list[Any]: ...

    def from_disk(self, rows: list[Any], /) -> None: ...


def save_side_snapshot(path: Path, caches: dict[str, SideCache]) -> None:
    """Write every cache of ``caches`` (table name -> cache) to ``path`` atomically.
    Blocking: call it from a thread. Raises ``OSError``."""
    doc: dict[str, Any] = {
        "format": SIDE_SNAPSHOT_FORMAT,
        "written_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    for table, cache in caches.items():
        doc[table] = cache.to_disk()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, separators=(",", ":")))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_side_snapshot(path: Path, caches: dict[str, SideCache]) -> list[str]:
    """Fill the caches from ``path``; returns the tables loaded. Never raises: a bad
    file or table is logged and skipped. Blocking: call it from a thread."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("side snapshot %s unreadable: %s", path, exc)
        return []
    if not isinstance(doc, dict) or doc.get("format") != SIDE_SNAPSHOT_FORMAT:
        return []
    loaded = []
    for table, cache in caches.items():
        rows = doc.get(table)
        if not isinstance(rows, list):
            continue
        try:
            cache.from_disk(rows)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("side snapshot: %s not loaded: %s", table, exc)
            continue
        loaded.append(table)
    return loaded
