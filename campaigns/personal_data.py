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
            " WHERE organization_id = :org AND click_id = ANY(:ids) ORDER BY recorded_at"
        ),
        {"org": organization_id, "ids": list(click_ids)},
    )
    return [dict(row._mapping) for row in rows]


async def _purge_scan_locations(
    conn: AsyncConnection, organization_id: int, horizons: Horizons, limit: int
) -> int:
    # The scan keeps its matched store (location_id) and city; only the fix goes, and the
    # scan_positions view falls back to the scan's placement or IP position.
    result = await conn.execute(
        text(
            "DELETE FROM scan_locations WHERE click_id IN ("
            " SELECT click_id FROM scan_locations"
            " WHERE organization_id = :org AND recorded_at < :before LIMIT :limit)"
        ),
        {"org": organization_id, "before": horizons.precise_locations, "limit": limit},
    )
    return result.rowcount


SCAN_LOCATIONS = register(
    PersonalDataHolder(
        name="scan_locations",
        erase=_erase_scan_locations,
        collect=_collect_scan_locations,
        purge=_purge_scan_locations,
    )
)
