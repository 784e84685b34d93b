"""The NFC verification step's database half: the SUN replay check, and the scan verdict.

:func:`campaigns.payloads.sun.verify_sun` decides whether a tap's SUN message is authentic
(in memory, no I/O). Whether it is *fresh* needs the database, shared by every server
process: a counter is accepted only if it is strictly greater than the last accepted
one for that tag (kept in ``nfc_counters``), decided under the tag row's lock
(``SELECT ... FOR NO KEY UPDATE``, then one upsert per batch: of two concurrent taps
offering the same counter, exactly one is accepted, whichever connection or process they
came through), all in one call of the SQL function ``passerelle_accept_counters``. The
call rides in the scan writer's group-commit transaction (:func:`judge_taps`, called by
the writer before its ``COPY``, in the round trip that begins the transaction); it
updates no ``tags`` row, so it neither runs its trigger nor notifies the tag caches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Literal

import psycopg

from campaigns.scanning.links import click_ids_literal
from campaigns.scanning.record import ScanRecord

#: Values of ``scans.nfc_verification``.
NfcVerification = Literal["valid", "replayed", "invalid"]

#: Judges offers ``(tag_ids[i], counters[i])`` in that order and stores the counters that
#: moved; returns the verdicts in the same order (migration ``accept_nfc_counters``). In
#: the function: the offered tags' rows locked in id order (``FOR NO KEY UPDATE``, the
#: lock an update of a non-key column would take: every writer locks in the same order,
#: so two processes' group commits cannot deadlock; the tag row is the lock because it
#: exists before the first tap, its counter row may not), then their last accepted
#: counters read by a statement of its own (under READ COMMITTED it reads with a snapshot
#: taken once the locks are held, so it sees the counters committed by the transaction
#: that held them before; joined into the locking query, a counter row inserted by that
#: transaction would stay unseen: a lock wait re-reads only the locked row), the verdicts
#: decided, and the counters that moved upserted into ``nfc_counters``.
ACCEPT_COUNTERS_SQL: Final = "SELECT passerelle_accept_counters(%s::bigint[], %s::integer[])"


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

    One statement per call, whatever the number of offers (:data:`ACCEPT_COUNTERS_SQL`).
    Three statements (lock, read, upsert), each a round trip of the group commit, did the
    same before; one conditional UPDATE of ``tags`` per offer before that cost 83 µs of
    PostgreSQL CPU per tap in the nfc round of benchmarks/scan_path_cpu.py. The row locks
    are held until the caller's transaction ends, so concurrent transactions still judge
    a tag's counters one after the other, each reading the last committed value."""
    if not offers:
        return []
    params = ([tag_id for tag_id, _ in offers], [counter for _, counter in offers])
    row = await (await conn.execute(ACCEPT_COUNTERS_SQL, params)).fetchone()
    assert row is not None
    return list(row[0])


#: The group commit's end for a batch with taps: judge the offers (the taps' click ids,
#: tags and counters, in :func:`taps_to_judge` order), mark the replayed taps' scans
#: (stored ``valid`` by the ``COPY``), return the verdicts (migration ``judge_stored_taps``).
JUDGE_STORED_TAPS_SQL: Final = (
    "SELECT passerelle_judge_taps(%s::text[], %s::bigint[], %s::integer[], %s::boolean[])"
)


def taps_to_judge(records: Sequence[ScanRecord]) -> list[ScanRecord]:
    """The records of ``records`` that have a :attr:`~ScanRecord.counter_to_accept`, in
    the order they are offered: ``(tag, counter)``, so a tag's taps are judged oldest
    first (its counter only grows) and every transaction locks ``tags`` rows in the same
    order (two processes' group commits cannot deadlock)."""
    taps = [record for record in records if record.counter_to_accept is not None]
    taps.sort(key=lambda r: (r.tag_id, r.nfc_counter, r.scanned_at))
    return taps


def provisionally_valid(records: Sequence[ScanRecord]) -> list[ScanRecord]:
    """``records`` with every undecided tap stored as ``valid`` (the ``COPY`` of a group
    commit that judges its taps at the end, :data:`JUDGE_STORED_TAPS_SQL`); the others
    are the same objects."""
    return [
        dataclasses.replace(record, nfc_verification="valid")
        if record.counter_to_accept is not None
        else record
        for record in records
    ]


def stored_taps_statement(taps: Sequence[ScanRecord]) -> bytes | None:
    """:data:`JUDGE_STORED_TAPS_SQL` for ``taps`` (from :func:`taps_to_judge`) with its
    values written in as array literals, for a simple query that also holds the feed row
    and the ``COMMIT`` (one round trip). None when a click id is not made of URL-safe
    base64 characters (then send :data:`JUDGE_STORED_TAPS_SQL` with parameters): nothing
    else is ever written into the statement but integers."""
    click_ids, tag_ids, counters, blocks = _judge_parameters(taps)
    click_ids_text = click_ids_literal(click_ids)
    if click_ids_text is None:
        return None
    tag_ids_text = ",".join(map(str, tag_ids))
    counters_text = ",".join(map(str, counters))
    blocks_text = ",".join("t" if block else "f" for block in blocks)
    return (
        f"SELECT passerelle_judge_taps('{click_ids_text}'::text[], "
        f"'{{{tag_ids_text}}}'::bigint[], '{{{counters_text}}}'::integer[], "
        f"'{{{blocks_text}}}'::boolean[])"
    ).encode()


def _judge_parameters(
    taps: Sequence[ScanRecord],
) -> tuple[list[str], list[int], list[int], list[bool]]:
    """:data:`JUDGE_STORED_TAPS_SQL`'s parameters for ``taps``: click ids, tags, counters
    and whether each tap's campaign blocks replays (integers checked as such)."""
    return (
        [record.click_id for record in taps],
        [int(record.tag_id) for record in taps],
        [int(record.counter_to_accept or 0) for record in taps],
        [record.block_if_replayed for record in taps],
    )


def with_verdicts(
    records: Sequence[ScanRecord], taps: Sequence[ScanRecord], answers: Sequence[bool]
) -> list[ScanRecord]:
    """``records`` (same order) with the verdict of each of ``taps`` (judged in that
    order; matched by click id, so ``records`` may hold them as :func:`provisionally_valid`
    made them): ``valid`` when its answer is true, else ``replayed``. A record whose
    verdict is already that, and every other record, is returned as it is (the same
    object). A replayed tap whose campaign blocks replays
    (:attr:`~campaigns.scanning.record.ScanRecord.block_if_replayed`) also gets the
    outcome ``blocked``."""
    verdicts: dict[str, NfcVerification] = {
        record.click_id: "valid" if accepted else "replayed"
        for record, accepted in zip(taps, answers, strict=True)
    }
    return [
        _judged(record, verdict)
        if (verdict := verdicts.get(record.click_id)) is not None
        and verdict != record.nfc_verification
        else record
        for record in records
    ]


def _judged(record: ScanRecord, verdict: NfcVerification) -> ScanRecord:
    if verdict == "replayed" and record.block_if_replayed:
        return dataclasses.replace(record, nfc_verification=verdict, outcome="blocked")
    return dataclasses.replace(record, nfc_verification=verdict)


async def judge_stored_taps(
    conn: psycopg.AsyncConnection[Any], records: Sequence[ScanRecord], taps: Sequence[ScanRecord]
) -> list[ScanRecord]:
    """Judge ``taps`` (:func:`taps_to_judge` order), stored by ``conn``'s current
    transaction as ``records`` (:func:`provisionally_valid`), with
    :data:`JUDGE_STORED_TAPS_SQL` bound as parameters; returns ``records`` with the
    verdicts (:func:`with_verdicts`). The group commit sends :func:`stored_taps_statement`
    with its ``COMMIT`` instead, when it can."""
    row = await (await conn.execute(JUDGE_STORED_TAPS_SQL, _judge_parameters(taps))).fetchone()
    assert row is not None
    return with_verdicts(records, taps, row[0])


async def judge_taps(
    conn: psycopg.AsyncConnection[Any], records: Sequence[ScanRecord]
) -> list[ScanRecord]:
    """``records`` (same order) with the replay verdict of every one that has a
    :attr:`~ScanRecord.counter_to_accept`: ``valid`` when :func:`accept_counter` accepts
    it, else ``replayed``; other records are returned as they are (the same objects).
    Offered in :func:`taps_to_judge` order. Runs in ``conn``'s current transaction,
    which must also store the scans (after this call): the acceptances and the verdicts
    are durable together, or not at all (then the originals are spooled or retried, their
    verdict still undecided)."""
    taps = taps_to_judge(records)
    if not taps:
        return list(records)
    answers = await accept_counters(conn, [(r.tag_id, r.counter_to_accept or 0) for r in taps])
    return with_verdicts(records, taps, answers)


def is_blocked(record: ScanRecord) -> bool:
    """True when the tap stored as ``record`` must get the 403 "tap again" page instead of
    its redirect: its ``outcome`` is ``blocked`` (the campaign's ``nfc_invalid_tap`` is
    ``block`` and the tap is ``invalid``, or was judged ``replayed`` in the group commit).
    A tap whose verdict is still undecided (authentic message, spooled while the
    database is away) is redirected whatever the policy."""
    return record.outcome == "blocked"
