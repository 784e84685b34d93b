"""The organizations' visitor-cookie settings held in memory, for the visitor-cookie step.

One :class:`CookieSettings` per server process: the organizations with
``visitor_cookie = true`` and their ``visitor_cookie_consent`` (``organization`` or
``ask``). Loaded in full at start, kept fresh by ``LISTEN passerelle_cache`` (the
``organizations`` table's statement triggers send ``"organizations:<id>,..."`` or
``"organizations:*"``), reloaded by the periodic reconcile and written to the side
snapshot (:mod:`campaigns.scanning.side_snapshot`) for a start while the database is
down. Organizations without the cookie are not held: a scan of theirs costs one missed
dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import TupleRow


class CookieSettings:
    """Organization id -> its ``visitor_cookie_consent``, for organizations with
    ``visitor_cookie`` on. :meth:`consent_mode` never blocks nor raises; loaders take an
    open psycopg connection and raise ``psycopg.Error``."""

    def __init__(self) -> None:
        self._modes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._modes)

    def consent_mode(self, organization_id: int) -> str | None:
        """``organization`` or ``ask`` when the organization sets the visitor cookie,
        None when it does not."""
        return self._modes.get(organization_id)

    async def load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Replace every setting."""
        rows = await (
            await conn.execute(
                "SELECT id, visitor_cookie_consent FROM organizations WHERE visitor_cookie"
            )
        ).fetchall()
        self._modes = {row[0]: row[1] for row in rows}

    async def reload(self, conn: psycopg.AsyncConnection[TupleRow], ids: Iterable[int]) -> None:
        """Re-read the organizations ``ids`` (a deleted one is forgotten)."""
        ids = list(set(ids))
        if not ids:
            return
        rows = await (
            await conn.execute(
                "SELECT id, visitor_cookie, visitor_cookie_consent FROM organizations "
                "WHERE id = ANY(%s)",
                (ids,),
            )
        ).fetchall()
        for oid in ids:
            self._modes.pop(oid, None)
        self._modes.update((row[0], row[2]) for row in rows if row[1])

    def to_disk(self) -> list[Any]:
        """The settings as JSON-able rows ``[organization_id, consent]``."""
        return [[oid, mode] for oid, mode in self._modes.items()]

    def from_disk(self, rows: list[Any]) -> None:
        """Replace the settings with rows of :meth:`to_disk`. Raises ``ValueError``,
        ``TypeError`` for rows not of that form."""
        modes = {int(oid): str(mode) for oid, mode in rows}
        if any(mode not in ("organization", "ask") for mode in modes.values()):
            raise ValueError("unknown visitor_cookie_consent in the side snapshot")
        self._modes = modes
