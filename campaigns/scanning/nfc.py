"""The NFC verification step's database half: the SUN replay check, and the scan verdict.

:func:`campaigns.payloads.sun.verify_sun` decides whether a tap's SUN message is authentic
(in memory, no I/O). Whether it is *fresh* needs the database, shared by every server
process: a counter is accepted only if it is strictly greater than the last accepted
one for that tag (kept in ``nfc_counters``), decided under the tag row's lock
(``SELECT ... FOR NO KEY UPDATE``, then one upsert per batch: of two concurrent taps
offering the same counter, exactly one is accepted, whichever connection or process they
came through). The statements ride in the scan writer's group-commit transaction
(:func:`judge_taps`, called by the writer before its ``COPY``); they update no ``tags``
row, so they neither run its trigger nor notify the tag caches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Literal

import psycopg

from campaigns.scanning.record import ScanRecord

#: Values of ``scans.nfc_verification``.
NfcVerification = Literal["valid", "replayed", "invalid"]

#: Locks the offered tags' rows (in id order: every writer locks in the same order, so
#: two processes' group commits cannot deadlock); returns the ids of those that exist.
#: ``FOR NO KEY UPDATE``: the lock an update of a non-key column would take. The tag row
#: is the lock because it exists before the first tap; its counter row may not.
LOCK_TAGS_SQL: Final = (
    "SELECT id FROM tags WHERE id = ANY(%(tag_ids)s) ORDER BY id FOR NO KEY UPDATE"
)
#: The last accepted counters of the locked tags. A statement of its own, after the lock:
#: under READ COMMITTED it reads with a snapshot taken once the locks are held, so it
#: sees the counters committed by the transaction that held them before. (Joined into
#: the locking query, a counter row inserted by that transaction would stay unseen: a
#: lock wait re-reads only the locked row, not the rows joined to it.)
READ_COUNTERS_SQL: Final = (
    "SELECT tag_id, last_counter FROM nfc_counters WHERE tag_id = ANY(%(tag_ids)s)"
)
#: Stores the new last accepted counter of each tag that accepted one.
STORE_COUNTERS_SQL: Final = (
    "INSERT INTO nfc_counters (tag_id, last_counter) "
    "SELECT * FROM unnest(%(tag_ids)s::bigint[], %(counters)s::integer[]) "
    "ON CONFLICT (tag_id) DO UPDATE SET last_counter = excluded.last_counter"
)


async def accept_counter(conn: psycopg.AsyncConnection[Any], *, tag_id: int, counter: int) -> bool:
    """Record ``counter`` (SDMReadCtr, 0..16 777 215) as the tag's last accepted one if it
    is strictly greater than the stored one (or none is stored); True when accepted,
    False for a replay (or an unknown tag). Runs in ``conn``'s current transaction: the
    caller commits (the acceptance is durable only then)."""
    return (await accept_counters(conn, [(tag_id, counter)]))[0]


async def accept_counters(
    conn: psycopg.AsyncConnection[Any], offers: Sequence[tuple[int, int]]
) -> list[bool]:
    """:func:`accept_counter` for each ``(tag_id, counter)`` of ``offers``, in that order
    (a later offer of the same tag is judged against the earlier ones accepted); the
    answers in the same order.

    Three statements per call, whatever the number of offers: the tags' rows are locked
    (:data:`LOCK_TAGS_SQL`), their counters read (:data:`READ_COUNTERS_SQL`), the
    verdicts decided here, and the counters that moved stored in one statement
    (:data:`STORE_COUNTERS_SQL`). One conditional
    UPDATE of ``tags`` per offer did the same with a statement and a run of the ``tags``
    trigger per tap: 83 µs of PostgreSQL CPU per tap in the nfc round of
    benchmarks/scan_path_cpu.py, 43 with one UPDATE of ``tags`` per batch, less again
    with the counters in their own table (see migration ``nfc_counters``). The row locks
    are held until the caller's transaction ends, so concurrent transactions still judge
    a tag's counters one after the other, each reading the last committed value."""
    if not offers:
        return []
    tag_ids = sorted({tag_id for tag_id, _ in offers})
    locked = await (await conn.execute(LOCK_TAGS_SQL, {"tag_ids": tag_ids})).fetchall()
    # An unknown tag has no row: its offers are refused (absent from ``last``); a tag
    # without a counter row has accepted none yet (None).
    last: dict[int, int | None] = dict.fromkeys(tag_id for (tag_id,) in locked)
    cur = await conn.execute(READ_COUNTERS_SQL, {"tag_ids": list(last)})
    last.update(await cur.fetchall())
    accepted = []
    moved: dict[int, int] = {}
    for tag_id, counter in offers:
        ok = False
        if tag_id in last:
            previous = last[tag_id]
            ok = previous is None or previous < counter
        if ok:
            last[tag_id] = moved[tag_id] = counter
        accepted.append(ok)
    if moved:
        await conn.execute(
            STORE_COUNTERS_SQL, {"tag_ids": list(moved), "counters": list(moved.values())}
        )
    return accepted


async def judge_taps(
    conn: psycopg.AsyncConnection[Any], records: Sequence[ScanRecord]
) -> list[ScanRecord]:
    """``records`` (same order) with the replay verdict of every one that has a
    :attr:`~ScanRecord.counter_to_accept`: ``valid`` when :func:`accept_counter` accepts
    it, else ``replayed``; other records are returned as they are (the same objects).

    Counters are offered in ``(tag, counter)`` order: the taps of one tag in one batch are
    judged oldest first (a tag's counter only grows), and every transaction locks ``tags``
    rows in the same order, so two processes' group commits cannot deadlock. Runs in
    ``conn``'s current transaction, which must also store the scans: the acceptances and
    the verdicts are durable together, or not at all (then the originals are spooled or
    retried, their verdict still undecided)."""
    taps = [record for record in records if record.counter_to_accept is not None]
    if not taps:
        return list(records)
    taps.sort(key=lambda r: (r.tag_id, r.nfc_counter, r.scanned_at))
    answers = await accept_counters(conn, [(r.tag_id, r.counter_to_accept or 0) for r in taps])
    verdicts: dict[int, NfcVerification] = {
        id(record): "valid" if accepted else "replayed"
        for record, accepted in zip(taps, answers, strict=True)
    }
    return [
        dataclasses.replace(record, nfc_verification=verdicts[id(record)])
        if id(record) in verdicts
        else record
        for record in records
    ]


def is_blocked(record: ScanRecord, *, policy: str) -> bool:
    """True when the tap stored as ``record`` must get the 403 "tap again" page instead of
    its redirect: the campaign's ``nfc_invalid_tap`` ``policy`` is ``block`` and the tap
    is ``replayed`` or ``invalid``. A tap whose verdict is still undecided (authentic
    message, spooled while the database is away) is redirected whatever the policy."""
    return policy == "block" and record.nfc_verification in ("replayed", "invalid")
