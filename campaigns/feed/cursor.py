"""The live feed's cursor: a PostgreSQL snapshot, and the event ids built from it.

Scan ids come from a sequence and are not in commit order across processes (a batch can
take ids 10-19 and commit after the batch holding 20-29), so "every id above the last
one seen" loses rows. The cursor is instead a snapshot in ``pg_snapshot`` form
(PostgreSQL 13+, `Transaction ID and Snapshot Information Functions
<https://www.postgresql.org/docs/15/functions-info.html#FUNCTIONS-PG-SNAPSHOT>`_):
``xmin:xmax:xip,...`` where every transaction id below ``xmin`` is finished, none at or
above ``xmax`` has started, and ``xip`` lists those in progress between. A feed batch
(``feed_batches.xid``) has been delivered when its transaction is visible in the cursor
(``pg_visible_in_snapshot``); the next batches are those visible in a fresh snapshot and
not in the cursor, whatever their ids.

Batches that became visible between two snapshots ``prev`` and ``cur`` are delivered in
``xid`` order, so each prefix of a delivery is again a snapshot (:func:`advance`):
``prev`` plus every transaction visible in ``cur`` up to a cutoff. Its ``xip`` holds only
transactions that were in progress in ``prev`` or ``cur``, so an event id stays short
however many batches came between. An event id is ``<snapshot>|<kind><id>``: every
batch visible in the snapshot was delivered, plus the events of one more batch (the one
holding ``<kind><id>``) up to that event in ``(kind, id)`` order (``s``: scan id,
``c``: conversion id).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_SNAPSHOT = re.compile(r"(\d{1,20}):(\d{1,20}):((?:\d{1,20}(?:,\d{1,20})*)?)")
#: Event kinds as written in event ids, in delivery order within a batch.
KINDS = {"c": "conversion", "s": "scan"}
_MAX_XIP = 10_000
#: The largest transaction id PostgreSQL's ``pg_snapshot`` input accepts (it reads each id
#: as a signed 64-bit integer: ``2^63`` is "invalid input syntax"), and the largest event
#: id (``bigint``): anything larger is a forged ``Last-Event-ID``, not a database outage.
_MAX_XID = (1 << 63) - 1
_MAX_EVENT_ID = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ``pg_snapshot``: transaction ids below ``xmin`` are finished, those from
    ``xmax`` on not started, ``xip`` (sorted, each in ``[xmin, xmax)``) in progress."""

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """Read PostgreSQL's text form ``xmin:xmax:xip,...``. Raises ``ValueError`` for
        anything else (bounds out of order, ids out of range, more than 10,000 ids)."""
        match = _SNAPSHOT.fullmatch(text)
        if match is None:
            raise ValueError(f"not a pg_snapshot: {text[:80]!r}")
        xmin, xmax = int(match[1]), int(match[2])
        xip = tuple(int(x) for x in match[3].split(",")) if match[3] else ()
        if (
            not 0 < xmin <= xmax <= _MAX_XID
            or len(xip) > _MAX_XIP
            or any(not xmin <= x < xmax for x in xip)
            or any(a >= b for a, b in itertools.pairwise(xip))
        ):
            raise ValueError(f"not a valid pg_snapshot: {text[:80]!r}")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, self.xip))}"

    def visible(self, xid: int) -> bool:
        """``pg_visible_in_snapshot(xid, self)``: committed before the snapshot if it
        committed at all."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


def advance(prev: Snapshot, cur: Snapshot, cutoff: int) -> Snapshot:
    """The snapshot seeing what ``prev`` sees plus what ``cur`` sees up to ``cutoff``
    (transaction ids ``<= cutoff``): the cursor once the batches that became visible
    between ``prev`` and ``cur`` are delivered in ``xid`` order up to ``cutoff``.

    ``prev`` must see no more than ``cur`` (an earlier snapshot, or one built by this
    function from it). ``advance(prev, cur, cur.xmax - 1) == cur`` for snapshots
    PostgreSQL made; ``advance(prev, cur, 0)`` sees what ``prev`` sees.
    """
    xmax = min(max(prev.xmax, cutoff + 1), cur.xmax)
    cur_xip = set(cur.xip)
    # Not visible afterwards: in progress in prev and either still in progress in cur,
    # or after the cutoff; or started after prev and in progress in cur, up to the cutoff.
    xip = sorted(
        {x for x in prev.xip if x in cur_xip or x > cutoff}
        | {x for x in cur.xip if prev.xmax <= x <= cutoff}
    )
    # Anything below prev.xmin is visible in prev; nothing at or above xmax is listed.
    xip = [x for x in xip if x < xmax]
    xmin = xip[0] if xip else xmax
    return Snapshot(xmin, xmax, tuple(xip))


@dataclass(frozen=True, slots=True)
class Position:
    """A resume point read from ``Last-Event-ID``: everything ``snapshot`` sees was
    delivered, and in the batch holding event ``(kind, id)`` every event up to it in
    ``(kind, id)`` order (no such batch: ``kind`` is None)."""

    snapshot: Snapshot
    kind: str | None = None
    id: int = 0

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read ``<snapshot>`` or ``<snapshot>|<s|c><id>``. Raises ``ValueError``."""
        snapshot_text, sep, event = text.strip().partition("|")
        snapshot = Snapshot.parse(snapshot_text)
        if not sep:
            return cls(snapshot)
        digits = event[1:]
        if (
            event[:1] not in KINDS
            or not 1 <= len(digits) <= 19
            or not digits.isdigit()
            or not digits.isascii()
            or int(digits) > _MAX_EVENT_ID
        ):
            raise ValueError(f"not an event id: {text[:80]!r}")
        return cls(snapshot, KINDS[event[0]], int(digits))


def event_id(snapshot: Snapshot, kind: str, id_: int) -> str:
    """The SSE ``id`` of event ``(kind, id_)`` delivered from ``snapshot`` (the cursor
    before its batch): ``<snapshot>|s<id>`` for a scan, ``|c<id>`` for a conversion."""
    return f"{snapshot}|{kind[0]}{id_}"
