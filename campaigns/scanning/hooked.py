"""Which organizations have a webhook for which event, held in memory.

The scan writer asks it once per batch so that, with no webhook for the batch's
organizations, the group commit runs no outbox statement at all (the scan path pays one
attribute read and a set test per batch). Loaded at start, re-read on ``webhooks:<ids>``
notifications (statement triggers of migration ``webhooks``), in full by the periodic
reconcile, and by this process right after it commits a webhook change
(:func:`campaigns.db.note_cache_changes`). Between a webhook's creation and the moment a
process learns it (the notification's ~50 ms window), that process's scans write no
outbox row for it; the outbox statement itself joins ``webhooks``, so a stale "has a
webhook" only costs a statement that inserts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import TupleRow

SCAN_CREATED = "scan.created"
CONVERSION_CREATED = "conversion.created"
#: Event types a webhook may subscribe to (``POST /v1/webhooks`` ``events``).
EVENT_TYPES = (SCAN_CREATED, CONVERSION_CREATED)


class HookedOrganizations:
    """Organization ids with at least one webhook per event type. Lookups never block;
    loaders take an open psycopg connection and raise ``psycopg.Error``."""

    def __init__(self) -> None:
        #: Organizations with a ``scan.created`` webhook (read by the scan writer).
        self.scans: frozenset[int] = frozenset()
        #: Organizations with a ``conversion.created`` webhook.
        self.conversions: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.scans | self.conversions)

    def has(self, organization_id: int, event_type: str) -> bool:
        """True when the organization has a webhook for ``event_type``."""
        if event_type == SCAN_CREATED:
            return organization_id in self.scans
        if event_type == CONVERSION_CREATED:
            return organization_id in self.conversions
        return False

    async def load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Re-read every webhook's organization and events (one small query)."""
        rows = await (
            await conn.execute(
                "SELECT organization_id, %s = ANY(events), %s = ANY(events) FROM webhooks",
                (SCAN_CREATED, CONVERSION_CREATED),
            )
        ).fetchall()
        self.scans = frozenset(org for org, scans, _ in rows if scans)
        self.conversions = frozenset(org for org, _, conversions in rows if conversions)

    def to_disk(self) -> list[Any]:
        """For the side snapshot: rows ``[organization_id, scans, conversions]``."""
        return [
            [oid, oid in self.scans, oid in self.conversions]
            for oid in sorted(self.scans | self.conversions)
        ]

    def from_disk(self, rows: list[Any]) -> None:
        """Replace the sets with rows of :meth:`to_disk`. Raises ``ValueError`` or
        ``TypeError`` for rows not of that form."""
        parsed = [(int(oid), bool(scans), bool(conversions)) for oid, scans, conversions in rows]
        self.scans = frozenset(oid for oid, scans, _ in parsed if scans)
        self.conversions = frozenset(oid for oid, _, conversions in parsed if conversions)

    async def reload(self, conn: psycopg.AsyncConnection[TupleRow], ids: Iterable[int]) -> None:
        """After a change to the webhooks ``ids``: re-read them all (a deleted webhook
        leaves no row to re-read, and the table holds a few rows per organization)."""
        await self.load_all(conn)
