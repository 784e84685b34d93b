"""Geographic reports of a campaign: scans per store and the hexagon heatmap.

Both read scans through the ``scan_positions`` view (a consented GPS fix is the scan's
position). Figures (the public contract), internal scans (``scans.internal``: phones
signed into the dashboard, staff testing posters) and NFC taps that failed verification
or replayed a used message (``nfc_verification`` ``invalid`` or ``replayed``: they count
only in the campaign stats' ``invalid_taps`` and ``replayed_taps``) left out of all of them:

- **Scans per store** (:func:`location_stats`): scans grouped by matched store
  (``scans.location_id``: the store whose area covers the position, else the tag's);
  ``scans`` human scans, ``bot_scans`` the others, ``unique_visitors`` distinct daily
  visitor ids among human scans, ``gps_scans`` human scans with a consented fix,
  ``far_from_placement`` human scans flagged so. Window on ``scanned_at``, ``[from, to)``.
  ``conversions`` and ``revenue`` as in the campaign stats (conversions attributed to the
  campaign with ``occurred_at`` in the window; their values per currency less refunds
  with ``refunded_at`` in the window), credited to the store matched by the scan of their
  click id (as ``scan_positions`` reads it); a store with conversions but no scan in the
  window gets a row with zero scans.
- **Heatmap** (:func:`heatmap`): human scans with a position counted in regular
  hexagons of ``cell_m`` metres (centre to vertex), built by PostGIS ``ST_HexagonGrid``
  in Web Mercator (EPSG:3857) with the size divided by the cosine of the scans' mean
  latitude, so a cell is ``cell_m`` on the ground there (Mercator's scale factor is
  ``1/cos(lat)``). IP positions whose accuracy radius exceeds ``cell_m`` (or is unknown)
  are left out: they cannot say which cell they fall in. Hexagons as GeoJSON polygons
  (WGS 84), most scans first.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.schemas import LocationStats, LocationStatsRow, RevenueRead
from campaigns.services.campaigns import check_window, get_campaign
from campaigns.services.retention import data_since

#: Bounds of ``cell_m`` (metres).
MIN_CELL_M, MAX_CELL_M = 50, 50_000

#: A scan counted by these reports: not internal, and not a flagged NFC tap (the same
#: definition as ``campaigns.services.stats``).
_COUNTED = "NOT v.internal AND coalesce(v.nfc_verification, 'valid') = 'valid'"

_WINDOW = (
    "(CAST(:start AS timestamptz) IS NULL OR v.scanned_at >= :start) "
    "AND (CAST(:end AS timestamptz) IS NULL OR v.scanned_at < :end)"
)

_LOCATION_STATS = f"""
SELECT v.location_id, l.name, l.external_id,
       count(*) FILTER (WHERE NOT v.is_bot) AS scans,
       count(*) FILTER (WHERE v.is_bot) AS bot_scans,
       count(DISTINCT s.visitor_id) FILTER (WHERE NOT v.is_bot) AS unique_visitors,
       count(*) FILTER (WHERE NOT v.is_bot AND v.geo_source = 'gps') AS gps_scans,
       count(*) FILTER (WHERE NOT v.is_bot AND v.far_from_placement) AS far_from_placement
FROM scan_positions AS v
JOIN scans AS s ON s.id = v.scan_id
LEFT JOIN locations AS l ON l.id = v.location_id AND l.organization_id = v.organization_id
WHERE v.organization_id = :org AND v.campaign_id = :campaign AND {_COUNTED} AND {_WINDOW}
GROUP BY v.location_id, l.name, l.external_id
ORDER BY v.location_id IS NULL, count(*) FILTER (WHERE NOT v.is_bot) DESC, v.location_id
"""  # noqa: S608 - constant text


#: Money events of the window per matched store and currency (currency NULL: conversions
#: without a value): each conversion once with its value, each refund dated in the window
#: negative and counting no conversion (``campaigns.services.stats``).
_LOCATION_MONEY = """
WITH events AS (
    SELECT c.id AS conversion_id, c.scan_id, c.value_currency AS currency, 1 AS n,
           c.value_amount_minor AS amount
    FROM conversions AS c
    WHERE c.organization_id = :org AND c.campaign_id = :campaign
      AND (CAST(:start AS timestamptz) IS NULL OR c.occurred_at >= :start)
      AND (CAST(:end AS timestamptz) IS NULL OR c.occurred_at < :end)
    UNION ALL
    SELECT c.id, c.scan_id, c.value_currency, 0, -r.amount_minor
    FROM conversions AS c JOIN refunds AS r ON r.conversion_id = c.id
    WHERE c.organization_id = :org AND c.campaign_id = :campaign
      AND (CAST(:start AS timestamptz) IS NULL OR r.refunded_at >= :start)
      AND (CAST(:end AS timestamptz) IS NULL OR r.refunded_at < :end)
)
SELECT v.location_id, l.name, l.external_id, e.currency,
       sum(e.n) AS conversions, coalesce(sum(e.amount), 0) AS amount
FROM events AS e
LEFT JOIN scan_positions AS v ON v.scan_id = e.scan_id AND v.organization_id = :org
LEFT JOIN locations AS l ON l.id = v.location_id AND l.organization_id = :org
GROUP BY v.location_id, l.name, l.external_id, e.currency
"""


async def location_stats(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> LocationStats:
    """Scans per matched store (see the module docstring). Raises :class:`NotFound`
    (``campaign_not_found``), :class:`InvalidInput` (``invalid_window``)."""
    check_window(start, end)
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    rows = await session.execute(
        text(_LOCATION_STATS),
        {"org": organization_id, "campaign": campaign_id, "start": start, "end": end},
    )
    by_store = {row.location_id: dict(row._mapping) for row in rows}
    money = await session.execute(
        text(_LOCATION_MONEY),
        {"org": organization_id, "campaign": campaign_id, "start": start, "end": end},
    )
    conversions: dict[int | None, int] = {}
    revenue: dict[int | None, dict[str, int]] = {}
    for row in money:
        conversions[row.location_id] = conversions.get(row.location_id, 0) + int(row.conversions)
        if row.currency is not None:
            revenue.setdefault(row.location_id, {})[row.currency] = int(row.amount)
        if row.location_id not in by_store:  # converted in the window, scanned before it
            by_store[row.location_id] = {
                "location_id": row.location_id,
                "name": row.name,
                "external_id": row.external_id,
                **dict.fromkeys(_SCAN_FIGURES, 0),
            }
    ordered = sorted(
        by_store.values(),
        key=lambda r: (r["location_id"] is None, -r["scans"], r["location_id"] or 0),
    )
    return LocationStats(
        campaign_id=campaign_id,
        rows=[
            LocationStatsRow(
                **r,
                conversions=conversions.get(r["location_id"], 0),
                revenue=[
                    RevenueRead(currency=c, amount_minor=a)
                    for c, a in sorted(revenue.get(r["location_id"], {}).items())
                ],
            )
            for r in ordered
        ],
    )


#: The scan counts of a :class:`LocationStatsRow`.
_SCAN_FIGURES = ("scans", "bot_scans", "unique_visitors", "gps_scans", "far_from_placement")


_HEATMAP = f"""
WITH points AS (
    SELECT v.scan_id, ST_Transform(v.position::geometry, 3857) AS g,
           ST_Y(v.position::geometry) AS lat
    FROM scan_positions AS v
    WHERE v.organization_id = :org AND v.campaign_id = :campaign AND NOT v.is_bot
      AND {_COUNTED}
      AND v.position IS NOT NULL
      AND NOT (v.geo_source = 'ip' AND (v.accuracy_m IS NULL OR v.accuracy_m > :cell_m))
      AND {_WINDOW}
), grid AS (
    SELECT :cell_m / cos(radians(avg(lat))) AS size FROM points
), cells AS (
    -- The hexagon covering each point; a point on an edge takes the first (i, j).
    SELECT DISTINCT ON (p.scan_id) p.scan_id, h.i, h.j, h.geom
    FROM points AS p, grid, LATERAL ST_HexagonGrid(grid.size, p.g) AS h
    WHERE ST_Covers(h.geom, p.g)
    ORDER BY p.scan_id, h.i, h.j
)
SELECT i, j, count(*) AS scans, ST_AsGeoJSON(ST_Transform(geom, 4326), 7) AS hexagon
FROM cells GROUP BY i, j, geom ORDER BY scans DESC, i, j
"""  # noqa: S608 - constant text


async def heatmap(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    cell_m: float,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    """The campaign's human scans counted in hexagons of ``cell_m`` metres (see the
    module docstring), as a GeoJSON FeatureCollection (RFC 7946): one Polygon Feature per
    hexagon with ``properties`` ``{"scans": n, "i": i, "j": j}`` (the grid's column and
    row), and the foreign members ``cell_m`` and ``data_since`` (ISO 8601 UTC: the
    retention horizon, :func:`campaigns.services.retention.data_since`). Raises :class:`NotFound`
    (``campaign_not_found``), :class:`InvalidInput` (``invalid_window``)."""
    check_window(start, end)
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    rows = await session.execute(
        text(_HEATMAP),
        {
            "org": organization_id,
            "campaign": campaign_id,
            "cell_m": float(cell_m),
            "start": start,
            "end": end,
        },
    )
    features = [
        {
            "type": "Feature",
            "geometry": json.loads(row.hexagon),
            "properties": {"scans": row.scans, "i": row.i, "j": row.j},
        }
        for row in rows
    ]
    since = await data_since(session, organization_id=organization_id)
    return {
        "type": "FeatureCollection",
        "cell_m": cell_m,
        "data_since": since.isoformat().replace("+00:00", "Z"),
        "features": features,
    }
