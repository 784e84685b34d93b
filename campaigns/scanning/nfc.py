"""The NFC verification step's database half: the SUN replay check, and the scan verdict.

:func:`campaigns.payloads.sun.verify_sun` decides whether a tap's SUN message is authentic
(in memory, no I/O). Whether it is *fresh* needs the database, shared by every server
process: a counter is accepted only if it is strictly greater than the last accepted
one for that tag, decided atomically by one conditional ``UPDATE`` (row lock: of two
concurrent taps offering the same counter, exactly one is accepted, whichever
connection or process they came through). The statement can ride in the scan writer's
group-commit transaction (:func:`judge_taps`, called by the writer before its
``COPY``); it does not notify the tag caches (the migration
``nfc_tags`` makes the tags UPDATE trigger ignore ``nfc_last_counter``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Literal

import psycopg

from campaigns.scanning.record import ScanRecord

#: Values of ``scans.nfc_verification``.
NfcVerification = Literal["valid", "replayed", "invalid"]

ACCEPT_COUNTER_SQL: Final = (
    "UPDATE tags SET nfc_last_counter = %(counter)s "
    "WHERE id = %(tag_id)s AND (nfc_last_counter IS NULL OR nfc_last_counter < %(counter)s) "
    "RETURNING id"
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
    """:func:`accept_counter` for each ``(tag_id, counter)`` of ``offers``, in that order,
    sent in one pipeline (one round trip, not one per tap); the answers in the same
    order."""
    params = [{"tag_id": tag_id, "counter": counter} for tag_id, counter in offers]
    async with conn.cursor() as cur:
        await cur.executemany(ACCEPT_COUNTER_SQL, params, returning=True)
        accepted = []
        for _ in params:
            accepted.append(await cur.fetchone() is not None)
            cur.nextset()
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
