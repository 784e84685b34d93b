"""The NFC verification step's database half: the SUN replay check, and the scan verdict.

:func:`campaigns.payloads.sun.verify_sun` decides whether a tap's SUN message is authentic
(in memory, no I/O). Whether it is *fresh* needs the database, shared by every server
process: a counter is accepted only if it is strictly greater than the last accepted
one for that tag, decided atomically by one conditional ``UPDATE`` (row lock: of two
concurrent taps offering the same counter, exactly one is accepted, whichever
connection or process they came through). The statement can ride in the scan writer's
group-commit transaction; it does not notify the tag caches (the migration
``nfc_tags`` makes the tags UPDATE trigger ignore ``nfc_last_counter``).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import psycopg

from campaigns.payloads.sun import SunResult

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
    cursor = await conn.execute(ACCEPT_COUNTER_SQL, {"tag_id": tag_id, "counter": counter})
    return await cursor.fetchone() is not None


def nfc_verification(result: SunResult, *, accepted: bool | None) -> NfcVerification:
    """The ``scans.nfc_verification`` value: ``invalid`` when the SUN message failed,
    else ``valid`` or ``replayed`` by ``accepted`` (:func:`accept_counter`'s answer;
    None only with an invalid result, where no counter is offered)."""
    if result.verdict != "valid_mac":
        return "invalid"
    return "valid" if accepted else "replayed"
