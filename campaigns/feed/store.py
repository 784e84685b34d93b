"""The live feed in the database: one ``feed_batches`` row per committed batch, written
in the batch's own transaction, and the queries that read events back by snapshot.

Writers call :func:`record_scans` in the group commit's transaction (the scans' click
ids, one row per batch: never one per scan) and conversions are recorded where they are
credited to a campaign (``campaigns.crediting``). Nothing here sends ``NOTIFY``: a
``NOTIFY`` takes a cluster-wide lock held until the commit is flushed, which would
serialize the group commits of every process, so the process that committed tells the
others afterwards (:class:`campaigns.feed.hub.FeedHub`). Readers find batches by
snapshot (:mod:`campaigns.feed.cursor`) through the primary key ``(xid, id)``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from campaigns.feed.cursor import Snapshot
from campaigns.scanning.links import click_ids_literal

#: ``Session.info`` key set by a service whose transaction wrote a feed batch, so the
#: request announces it once committed (``api.deps.get_session``).
FEED_COMMITTED = "feed_committed"

# The click ids go as one text parameter split by the server: dumping a 64-element text
# array costs the writer ~1.5 µs per scan (click ids are URL-safe base64: no space).
_SCAN_BATCH_SQL = (
    "INSERT INTO feed_batches (kind, campaign_ids, click_ids) "
    "VALUES ('scan', string_to_array(%s, ' ')::bigint[], string_to_array(%s, ' '))"
)

#: The events of the batches visible in ``cur`` and not in ``prev`` for the campaigns
#: ``campaigns``, after ``(xid, kind, id) > after``, in that order; ``cur`` is either a
#: parameter or the statement's own snapshot (``pg_current_snapshot()``, the snapshot
#: the rows are read with). Row: cur snapshot, xid, kind, then the event's columns.
_EVENTS_SQL = """
WITH cur AS (SELECT {cur} AS snap),
batches AS (
    SELECT b.xid, b.kind, b.click_ids, b.conversion_ids
    FROM feed_batches AS b, cur
    WHERE b.xid >= greatest(pg_snapshot_xmin(%(prev)s::pg_snapshot), %(after_xid)s::xid8)
      AND b.xid < pg_snapshot_xmax(cur.snap)
      AND pg_visible_in_snapshot(b.xid, cur.snap)
      AND NOT pg_visible_in_snapshot(b.xid, %(prev)s::pg_snapshot)
      AND b.campaign_ids && %(campaigns)s::bigint[]
),
events AS (
    SELECT b.xid::text::numeric AS xid, 'scan' AS kind, s.id, s.campaign_id, s.click_id,
           s.tag_id, s.scanned_at AS at, s.channel, s.device_type, s.os, s.country, s.city,
           s.location_id, s.is_bot, s.bot_reason, s.burst, s.nfc_verification,
           s.internal, NULL::text AS event, NULL::bigint AS value_amount_minor,
           NULL::text AS value_currency, NULL::bigint AS scan_id
    FROM batches AS b
    CROSS JOIN LATERAL unnest(b.click_ids) AS u(click_id)
    JOIN scans AS s ON s.click_id = u.click_id
    WHERE b.kind = 'scan' AND s.campaign_id = ANY(%(campaigns)s::bigint[])
    UNION ALL
    SELECT b.xid::text::numeric, 'conversion', c.id, c.campaign_id, c.click_id,
           c.tag_id, c.occurred_at, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL,
           c.event, c.value_amount_minor, c.value_currency, c.scan_id
    FROM batches AS b
    CROSS JOIN LATERAL unnest(b.conversion_ids) AS u(id)
    JOIN conversions AS c ON c.id = u.id
    WHERE b.kind = 'conversion' AND c.campaign_id = ANY(%(campaigns)s::bigint[])
)
SELECT cur.snap::text, e.*
FROM cur
LEFT JOIN events AS e
  ON (e.xid, e.kind, e.id) > (%(after_xid)s::text::numeric, %(after_kind)s, %(after_id)s)
ORDER BY e.xid, e.kind, e.id
{limit}
"""

LIVE_SQL = _EVENTS_SQL.format(cur="pg_current_snapshot()", limit="")
REPLAY_SQL = _EVENTS_SQL.format(cur="%(cur)s::pg_snapshot", limit="LIMIT %(limit)s")

#: The batch (its xid) holding event ``(kind, id)`` of campaign ``campaign`` that the
#: snapshot ``prev`` does not see: where a resume point's partly delivered batch is.
_BATCH_OF_SQL = {
    "scan": """
        SELECT b.xid::text FROM scans AS s, feed_batches AS b
        WHERE s.id = %(id)s AND s.campaign_id = %(campaign)s AND b.kind = 'scan'
          AND b.xid >= pg_snapshot_xmin(%(prev)s::pg_snapshot)
          AND NOT pg_visible_in_snapshot(b.xid, %(prev)s::pg_snapshot)
          AND b.campaign_ids @> ARRAY[%(campaign)s]::bigint[]
          AND s.click_id = ANY(b.click_ids)
        LIMIT 1
    """,
    "conversion": """
        SELECT b.xid::text FROM feed_batches AS b
        WHERE b.kind = 'conversion'
          AND b.xid >= pg_snapshot_xmin(%(prev)s::pg_snapshot)
          AND NOT pg_visible_in_snapshot(b.xid, %(prev)s::pg_snapshot)
          AND b.campaign_ids @> ARRAY[%(campaign)s]::bigint[]
          AND b.conversion_ids @> ARRAY[%(id)s]::bigint[]
        LIMIT 1
    """,
}

#: Deletes the batches older than the retention: every xid below the oldest one kept
#: (through the index on xid; all of them when none is kept), and records the highest
#: xid deleted.
_PRUNE_SQL = """
WITH kept AS (
    SELECT xid FROM feed_batches
    WHERE created_at >= now() - make_interval(secs => %(retention_s)s)
    ORDER BY xid LIMIT 1
),
gone AS (
    DELETE FROM feed_batches
    WHERE xid < coalesce((SELECT xid FROM kept), '18446744073709551615'::xid8)
    RETURNING xid
)
UPDATE feed_horizon SET last_deleted = greatest(last_deleted, (SELECT max(xid) FROM gone))
WHERE id = 1
RETURNING (SELECT count(*) FROM gone)
"""

#: Any constant: the key of the advisory lock that keeps the retention to one process.
PRUNE_LOCK_KEY = 0x7061_7373_6665_6564  # "passfeed"


async def record_scans(
    conn: psycopg.AsyncConnection[Any], click_ids: Sequence[str], campaign_ids: Iterable[int]
) -> None:
    """Record one feed batch for scans being stored in ``conn``'s current transaction:
    their click ids (URL-safe: no space) and the distinct campaigns they belong to. One
    statement per batch, none when ``click_ids`` is empty. Raises ``psycopg.Error``."""
    if click_ids:
        campaigns = " ".join(map(str, set(campaign_ids)))
        await conn.execute(_SCAN_BATCH_SQL, (campaigns, " ".join(click_ids)))


def scan_batch_statement(click_ids: Sequence[str], campaign_ids: Iterable[int]) -> bytes | None:
    """:func:`record_scans`'s statement with its values written in (array literals), for
    a simple query that also holds other statements (the group commit sends it with its
    ``COMMIT``, one round trip). None when ``click_ids`` is empty or a click id is not
    made of URL-safe base64 characters only (use :func:`record_scans` then): nothing
    else is ever written into the statement but integers."""
    literal = click_ids_literal(click_ids)
    if literal is None:
        return None
    campaigns = ",".join(str(int(c)) for c in set(campaign_ids))
    return (
        "INSERT INTO feed_batches (kind, campaign_ids, click_ids) "  # noqa: S608 - checked above
        f"VALUES ('scan', '{{{campaigns}}}'::bigint[], '{literal}'::text[])"
    ).encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One feed event: ``kind`` is ``scan`` or ``conversion``, ``id`` its row id,
    ``xid`` the transaction of its batch, ``data`` the JSON payload (no IP address)."""

    xid: int
    kind: str
    id: int
    campaign_id: int
    data: str


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _event(row: Sequence[Any]) -> Event:
    """An :class:`Event` from a row of :data:`LIVE_SQL` or :data:`REPLAY_SQL` (after the
    snapshot column)."""
    (xid, kind, id_, campaign_id, click_id, tag_id, at, channel, device_type, os_, country,
     city, location_id, is_bot, bot_reason, burst, nfc_verification, internal, event, amount,
     currency, scan_id) = row  # fmt: skip
    payload: dict[str, Any]
    if kind == "scan":
        payload = {
            "id": id_,
            "click_id": click_id,
            "campaign_id": campaign_id,
            "tag_id": tag_id,
            "scanned_at": _time(at),
            "channel": channel,
            "device_type": device_type,
            "os": os_,
            "country": country,
            "city": city,
            "location_id": location_id,
            "is_bot": is_bot,
            "bot_reason": bot_reason,
            "burst": burst,
            "nfc_verification": nfc_verification,
            "internal": internal,
        }
    else:
        payload = {
            "id": id_,
            "click_id": click_id,
            "campaign_id": campaign_id,
            "tag_id": tag_id,
            "scan_id": scan_id,
            "event": event,
            "value": None if amount is None else {"amount_minor": amount, "currency": currency},
            "occurred_at": _time(at),
        }
    return Event(int(xid), kind, id_, campaign_id, json.dumps(payload, separators=(",", ":")))


async def read_new(
    conn: psycopg.AsyncConnection[Any], prev: Snapshot, campaign_ids: Sequence[int]
) -> tuple[Snapshot, list[Event]]:
    """In one statement: a fresh snapshot ``cur``, and the events of ``campaign_ids``
    in the batches ``cur`` sees and ``prev`` does not, in ``(xid, kind, id)`` order.
    Raises ``psycopg.Error``."""
    cur = await conn.execute(LIVE_SQL, _params(prev, campaign_ids))
    rows = await cur.fetchall()
    snapshot = Snapshot.parse(rows[0][0])
    return snapshot, [_event(row[1:]) for row in rows if row[1] is not None]


async def read_between(
    conn: psycopg.AsyncConnection[Any],
    prev: Snapshot,
    cur: Snapshot,
    campaign_id: int,
    *,
    after: tuple[int, str, int] = (0, "", 0),
    limit: int = 1000,
) -> list[Event]:
    """At most ``limit`` events of ``campaign_id`` in the batches ``cur`` sees and
    ``prev`` does not, after ``after`` (``(xid, kind, id)``), in that order. Raises
    ``psycopg.Error``."""
    params = _params(prev, [campaign_id], after)
    params.update(cur=str(cur), limit=limit)
    rows = await (await conn.execute(REPLAY_SQL, params)).fetchall()
    return [_event(row[1:]) for row in rows if row[1] is not None]


def _params(
    prev: Snapshot, campaign_ids: Sequence[int], after: tuple[int, str, int] = (0, "", 0)
) -> dict[str, Any]:
    return {
        "prev": str(prev),
        "campaigns": list(campaign_ids),
        "after_xid": str(after[0]),
        "after_kind": after[1],
        "after_id": after[2],
    }


async def batch_of(
    conn: psycopg.AsyncConnection[Any], prev: Snapshot, campaign_id: int, kind: str, id_: int
) -> int | None:
    """The xid of the batch of ``campaign_id`` holding event ``(kind, id_)`` that
    ``prev`` does not see, or None. Raises ``psycopg.Error``."""
    cur = await conn.execute(
        _BATCH_OF_SQL[kind], {"id": id_, "campaign": campaign_id, "prev": str(prev)}
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def last_deleted(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest batch xid the retention deleted (0 before any): a cursor whose
    ``xmin`` is not above it may have missed deleted batches. Raises ``psycopg.Error``."""
    cur = await conn.execute("SELECT last_deleted::text FROM feed_horizon WHERE id = 1")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def prune(conn: psycopg.AsyncConnection[Any], retention_s: float) -> int | None:
    """Delete the batches older than ``retention_s`` seconds, unless another process is
    doing it (transaction-level advisory lock :data:`PRUNE_LOCK_KEY`). Returns the rows
    deleted, or None when another process holds the lock. Raises ``psycopg.Error``."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return None
        cur = await conn.execute(_PRUNE_SQL, {"retention_s": retention_s})
        deleted = await cur.fetchone()
        return 0 if deleted is None else int(deleted[0])
