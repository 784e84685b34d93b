"""Visitor ids: one person's scans of one organization's tags, the same UTC day.

A visitor id is a 16-byte keyed BLAKE2b (RFC 7693 keyed mode, a MAC) of
(organization, client key, user agent) under the day's salt. The client key is the IPv4
address or the IPv6 /64 (:attr:`geo.ip.ClientAddress.key`), so a phone rotating its
privacy addresses stays one visitor. Keyed per organization, not per campaign: one
person's scans of two campaigns the same day share an id (per-campaign unique counts
stay distinct ids within the campaign).

Salts are random, one per UTC day, shared by every process through the
``visitor_salts`` table and created a day AHEAD (today's and tomorrow's), so that each
process caches both on its data volume (``visitor_salts.json`` in ``data_dir``, written
atomically, mode 0600). A process that starts or crosses midnight while the database is
away computes the same ids from that cache, and a scan spooled during an outage gets the
id it would have got in the database. A salt is deleted after its day (table rows and
cached copies), so ids cannot be recomputed nor linked across days (the approach
Plausible documents).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

SALT_FILE = "visitor_salts.json"
_FORMAT = "passerelle-visitor-salts/1"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class VisitorIds:
    """Daily salts (in memory, cached at ``path``) and the visitor ids made with them.

    ``secret_key`` only derives a last-resort salt for a day no database nor cache ever
    gave (a first start during an outage); processes then disagree for that day.
    """

    def __init__(self, path: Path, *, secret_key: str) -> None:
        self.path = path
        self._secret = secret_key.encode()
        self._salts: dict[dt.date, bytes] = {}

    @property
    def days(self) -> list[dt.date]:
        """The days whose salt is held, in order."""
        return sorted(self._salts)

    def visitor_id(
        self, *, organization_id: int, client_key: str | None, user_agent: str | None, day: dt.date
    ) -> bytes:
        """The 16-byte visitor id (see the module docstring). Pure memory."""
        salt = self._salts.get(day)
        if salt is None:
            salt = hmac.new(self._secret, f"visitor-salt:{day}".encode(), hashlib.sha256).digest()
        message = f"{organization_id}\x00{client_key or ''}\x00{user_agent or ''}".encode()
        return hashlib.blake2b(message, key=salt, digest_size=16).digest()

    # -- upkeep (off the request path) ---------------------------------------------------

    def load_cached(self, *, today: dt.date | None = None) -> int:
        """Read the cached salts of today and later; forget (and rewrite without) older
        ones. Returns the number of salts held. Blocking: call it from a thread. An
        unreadable cache counts as none."""
        today = today or _today()
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                return len(self._salts)
            cached = {dt.date.fromisoformat(d): bytes.fromhex(s) for d, s in data["salts"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return len(self._salts)
        for day, salt in cached.items():
            self._salts.setdefault(day, salt)
        self.forget_expired(today=today)
        return len(self._salts)

    def forget_expired(self, *, today: dt.date | None = None) -> None:
        """Drop salts of days before ``today`` from memory and from the cache file.
        Blocking (it may rewrite the file)."""
        today = today or _today()
        expired = [day for day in self._salts if day < today]
        for day in expired:
            del self._salts[day]
        if expired:
            self._save()

    async def refresh(
        self, conn: psycopg.AsyncConnection[Any], *, today: dt.date | None = None
    ) -> None:
        """Create today's and tomorrow's salts in the database if missing, delete older
        ones, load both and cache them. Raises ``psycopg.Error``; a cache write failure
        is logged (the salts stay in memory)."""
        today = today or _today()
        days = [today, today + dt.timedelta(days=1)]
        async with conn.transaction():
            for day in days:
                await conn.execute(
                    "INSERT INTO visitor_salts (day, salt) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (day, secrets.token_bytes(32)),
                )
            await conn.execute("DELETE FROM visitor_salts WHERE day < %s", (today,))
            rows = await (
                await conn.execute(
                    "SELECT day, salt FROM visitor_salts WHERE day = ANY(%s)", (days,)
                )
            ).fetchall()
        fresh = {day: bytes(salt) for day, salt in rows}
        if fresh != self._salts:
            self._salts = fresh
            await asyncio.to_thread(self._save)

    def _save(self) -> None:
        """Write the cache atomically (temp file created 0600, fsync, rename)."""
        body = json.dumps(
            {"format": _FORMAT, "salts": {str(d): s.hex() for d, s in sorted(self._salts.items())}}
        ).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an older temp file may have had other bits
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError as exc:
            log.error("visitor salts not cached at %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
