"""The registry of personal data holders: every table that keeps something about the
person behind a scan, keyed by the scan's click id, besides ``scans`` itself.

Retention (:mod:`campaigns.services.retention`) and erasure
(:mod:`campaigns.services.privacy`) delete scans and, in the same transaction, call
every holder's :attr:`PersonalDataHolder.erase` with the click ids of the scans deleted;
an access request (``GET /v1/privacy/scans``) shows every holder's
:attr:`PersonalDataHolder.collect`. A holder with rows of its own age (a webhook outbox,
an SSE buffer) also gets :attr:`PersonalDataHolder.purge`, called in batches until it
returns fewer rows than the batch size.

A new table joins with one :func:`register` call at the end of this module (its
functions may live in its own module), so the purge, the erasure and the command line
all see it.
Conversions are not a holder: the merchant's sales stay, unlinked from the click
(:func:`campaigns.services.privacy.erase`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

#: ``erase(conn, organization_id, click_ids)``: rows deleted or scrubbed.
Erase = Callable[[AsyncConnection, int, Sequence[str]], Awaitable[int]]
#: ``collect(conn, organization_id, click_ids)``: the rows held, JSON-ready dicts.
Collect = Callable[[AsyncConnection, int, Sequence[str]], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Horizons:
    """What one organization keeps: scans at or after ``scans``, consented GPS fixes
    recorded at or after ``precise_locations`` (UTC)."""

    scans: dt.datetime
    precise_locations: dt.datetime


#: ``purge(conn, organization_id, horizons, limit)``: rows deleted or scrubbed in one
#: batch of at most ``limit``.
Purge = Callable[[AsyncConnection, int, Horizons, int], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class PersonalDataHolder:
    """A table holding personal data keyed by click id. ``name`` is the table reported in
    purge and erasure counts (and the key of its rows in an access answer)."""

    name: str
    erase: Erase
    collect: Collect | None = None
    purge: Purge | None = None


HOLDERS: dict[str, PersonalDataHolder] = {}


def register(holder: PersonalDataHolder) -> PersonalDataHolder:
    """Add ``holder`` to :data:`HOLDERS` (replacing one of the same name) and return it."""
    HOLDERS[holder.name] = holder
    return holder


# -- scan_locations: consented GPS fixes ---------------------------------------------


async def _erase_scan_locations(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> int:
    result = await conn.execute(
        text("DELETE FROM scan_locations WHERE organization_id = :org AND click_id = ANY(:ids)"),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return result.rowcount


async def _collect_scan_locations(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(
            "SELECT click_id, ST_Y(position::geometry) AS lat, ST_X(position::geometry) AS lon,"
            " accuracy_m, recorded_at FROM scan_locations"
            " WHERE organization_id = :org AND click_id = ANY(:ids) AND position IS NOT NULL"
            " ORDER BY recorded_at"
        ),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return [dict(row._mapping) for row in rows]


async def _purge_scan_locations(
    conn: AsyncConnection, organization_id: int, horizons: Horizons, limit: int
) -> int:
    # Reduced to the store it fell in: the position and its accuracy go; a fix that fell
    # in no store goes whole. The scan_positions view then reads the scan's placement or
    # IP position, with the fix's store.
    result = await conn.execute(
        text(
            "WITH old AS (SELECT click_id, location_id FROM scan_locations"
            " WHERE organization_id = :org AND recorded_at < :before"
            " AND position IS NOT NULL LIMIT :limit),"
            " gone AS (DELETE FROM scan_locations AS g USING old"
            " WHERE g.click_id = old.click_id AND old.location_id IS NULL RETURNING 1),"
            " kept AS (UPDATE scan_locations AS g SET position = NULL, accuracy_m = NULL"
            " FROM old WHERE g.click_id = old.click_id AND old.location_id IS NOT NULL"
            " RETURNING 1)"
            " SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM kept)"
        ),
        {"org": organization_id, "before": horizons.precise_locations, "limit": limit},
    )
    return int(result.scalar_one())


SCAN_LOCATIONS = register(
    PersonalDataHolder(
        name="scan_locations",
        erase=_erase_scan_locations,
        collect=_collect_scan_locations,
        purge=_purge_scan_locations,
    )
)


# -- visitor_cookie_consents: a person's "yes" to the visitor cookie -------------------


async def _erase_cookie_consents(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> int:
    result = await conn.execute(
        text(
            "DELETE FROM visitor_cookie_consents"
            " WHERE organization_id = :org AND click_id = ANY(:ids)"
        ),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return result.rowcount


async def _collect_cookie_consents(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(
            "SELECT click_id, cookie_id::text AS cookie_id, consented_at"
            " FROM visitor_cookie_consents"
            " WHERE organization_id = :org AND click_id = ANY(:ids) ORDER BY consented_at"
        ),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return [dict(row._mapping) for row in rows]


async def _purge_cookie_consents(
    conn: AsyncConnection, organization_id: int, horizons: Horizons, limit: int
) -> int:
    # The proof of consent lives as long as the scan it was given on.
    result = await conn.execute(
        text(
            "DELETE FROM visitor_cookie_consents WHERE click_id IN ("
            " SELECT click_id FROM visitor_cookie_consents"
            " WHERE organization_id = :org AND consented_at < :before LIMIT :limit)"
        ),
        {"org": organization_id, "before": horizons.scans, "limit": limit},
    )
    return result.rowcount


COOKIE_CONSENTS = register(
    PersonalDataHolder(
        name="visitor_cookie_consents",
        erase=_erase_cookie_consents,
        collect=_collect_cookie_consents,
        purge=_purge_cookie_consents,
    )
)


# -- webhook_deliveries: the outbox's payloads carry the scan's click id ----------------

#: The deliveries carrying the click ids ``:ids``: ``scan.created`` events of those scans
#: and ``conversion.created`` events of the conversions naming them, found by event id
#: through the (webhook_id, event_id) unique index (event ids derive from the click id
#: and the conversion id, campaigns.webhooks.outbox), never by reading every payload.
_DELIVERIES_OF = """
    d.webhook_id IN (SELECT id FROM webhooks WHERE organization_id = :org)
    AND d.event_id = ANY(
        ARRAY(SELECT 'evt_scan_' || c FROM unnest(CAST(:ids AS text[])) AS c)
        || ARRAY(SELECT 'evt_conversion_' || v.id FROM conversions v
                 WHERE v.organization_id = :org AND v.click_id = ANY(CAST(:ids AS text[]))))
"""
_ERASE_DELIVERIES_SQL = f"DELETE FROM webhook_deliveries d WHERE {_DELIVERIES_OF}"  # noqa: S608
_COLLECT_DELIVERIES_SQL = f"""
SELECT d.payload -> 'data' ->> 'click_id' AS click_id, d.webhook_id, w.url, d.event_id,
       d.event_type, d.status, d.payload, d.created_at, d.last_attempt_at
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE {_DELIVERIES_OF}
ORDER BY d.id
"""  # noqa: S608


async def _erase_deliveries(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> int:
    # Deleted, not scrubbed: an erased person's event must not be sent (again) either.
    # Called before the erasure unlinks conversions (campaigns.services.privacy.erase),
    # so a conversion's event is still found through its click id.
    result = await conn.execute(
        text(_ERASE_DELIVERIES_SQL),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return result.rowcount


async def _collect_deliveries(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(_COLLECT_DELIVERIES_SQL),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return [dict(row._mapping) for row in rows]


async def _purge_deliveries(
    conn: AsyncConnection, organization_id: int, horizons: Horizons, limit: int
) -> int:
    # Payloads are not kept past the term of the scans they describe; a delivery still
    # pending that old is given up with them.
    result = await conn.execute(
        text(
            "DELETE FROM webhook_deliveries WHERE id IN ("
            " SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE w.organization_id = :org AND d.created_at < :before LIMIT :limit)"
        ),
        {"org": organization_id, "before": horizons.scans, "limit": limit},
    )
    return result.rowcount


WEBHOOK_DELIVERIES = register(
    PersonalDataHolder(
        name="webhook_deliveries",
        erase=_erase_deliveries,
        collect=_collect_deliveries,
        purge=_purge_deliveries,
    )
)


# -- feed_batches: the live feed's committed batches name their scans' click ids --------


async def _erase_feed_batches(
    conn: AsyncConnection, organization_id: int, click_ids: Sequence[str]
) -> int:
    # Click ids are unique across the service: the ids given are this organization's.
    # The batch stays (its other scans still resume), without these click ids.
    result = await conn.execute(
        text(
            "UPDATE feed_batches SET click_ids = ARRAY("
            " SELECT c FROM unnest(click_ids) AS c WHERE c <> ALL(:ids))"
            " WHERE click_ids && CAST(:ids AS text[])"
        ),
        {"ids": list(click_ids)},
    )
    return result.rowcount


# The live feed keeps batches for PASSERELLE_FEED_RETENTION_S (a day by default), far
# shorter than any scan retention, and deletes them itself (campaigns.feed.store): no
# purge of its own here.
FEED_BATCHES = register(PersonalDataHolder(name="feed_batches", erase=_erase_feed_batches))
