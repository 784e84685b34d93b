"""In-memory geofences of every organization's stores, for the geolocation step.

One :class:`LocationCache` per server process: loaded in full at start, then kept fresh
by the same ``LISTEN passerelle_cache`` as the tag cache (the ``locations`` table's
statement triggers send ``"locations:<id>,..."`` or ``"locations:*"``): a notification
re-reads the organizations owning the rows named (their whole area set is rebuilt, as a
:class:`geo.geofence.Geofences` is immutable); ``*`` re-reads everything. The periodic
reconcile of the tag cache re-reads everything here too (locations are few: a thousand
stores cost a few milliseconds to index).

Only locations with an area (a ``geofence`` polygon or a ``radius_m`` circle) are kept:
a scan is matched to a store by the area covering its position. The rows are also
written to the side snapshot (:mod:`campaigns.scanning.side_snapshot`), so a process
started while the database is away still matches stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
import shapely
from psycopg.rows import TupleRow
from shapely.geometry import MultiPolygon, Polygon

from geo.geofence import GeoArea, Geofences

_AREA_COLUMNS = (
    "id, organization_id, ST_X(point::geometry), ST_Y(point::geometry), "
    "ST_AsBinary(geofence), radius_m"
)
_WITH_AREA = "(geofence IS NOT NULL OR radius_m IS NOT NULL)"
#: Positions whose match is remembered (see ``LocationCache._matched``).
_MATCH_MEMO_MAX = 65_536


class LocationCache:
    """Organization id -> :class:`~geo.geofence.Geofences` of its locations' areas.

    :meth:`match` never blocks nor raises; loaders take an open psycopg connection and
    raise ``psycopg.Error`` when the database fails.
    """

    def __init__(self) -> None:
        self._fences: dict[int, Geofences] = {}
        # location id -> organization id, to find whose areas to rebuild when a location
        # is deleted (its row is gone when the notification is read).
        self._owner: dict[int, int] = {}
        # location id -> its row (``_AREA_COLUMNS`` order), for the side snapshot.
        self._rows: dict[int, tuple[Any, ...]] = {}
        #: True once loaded from the database.
        self.loaded = False
        # (organization id, lon, lat) -> match: scans of a placed tag are matched at its
        # placement, the same point every time, and IP positions are few (one per
        # database record): a geofence query (~15 µs) becomes a dict hit. Emptied
        # whenever the areas change, and when full.
        self._matched: dict[tuple[int, float, float], int | None] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def match(self, organization_id: int, lon: float, lat: float) -> int | None:
        """The id of ``organization_id``'s location whose area covers ``(lon, lat)``
        (WGS 84 degrees; boundary inside; overlaps: the smallest area, then the nearest
        point), or None."""
        key = (organization_id, lon, lat)
        try:
            return self._matched[key]
        except KeyError:
            pass
        fences = self._fences.get(organization_id)
        if fences is None:
            return None
        found = fences.match(lon, lat)
        matched = found if isinstance(found, int) else None
        if len(self._matched) >= _MATCH_MEMO_MAX:
            self._matched.clear()
        self._matched[key] = matched
        return matched

    async def load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Replace the whole cache with every location that has an area."""
        rows = await (
            await conn.execute(f"SELECT {_AREA_COLUMNS} FROM locations WHERE {_WITH_AREA}")  # noqa: S608
        ).fetchall()
        by_org: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_org.setdefault(row[1], []).append(row)
        self._fences = {org: _fences(org_rows) for org, org_rows in by_org.items()}
        self._matched = {}
        self._owner = {row[0]: row[1] for row in rows}
        self._rows = {row[0]: tuple(row) for row in rows}
        self.loaded = True

    async def reload(self, conn: psycopg.AsyncConnection[TupleRow], ids: Iterable[int]) -> None:
        """Re-read the organizations owning the locations ``ids`` (now or before: a
        deleted or moved row's former owner is rebuilt too)."""
        ids = list(set(ids))
        if not ids:
            return
        rows = await (
            await conn.execute("SELECT organization_id FROM locations WHERE id = ANY(%s)", (ids,))
        ).fetchall()
        orgs = {row[0] for row in rows} | {self._owner[i] for i in ids if i in self._owner}
        if not orgs:
            return
        fresh = await (
            await conn.execute(
                f"SELECT {_AREA_COLUMNS} FROM locations "  # noqa: S608
                f"WHERE organization_id = ANY(%s) AND {_WITH_AREA}",
                (sorted(orgs),),
            )
        ).fetchall()
        by_org: dict[int, list[tuple[Any, ...]]] = {org: [] for org in orgs}
        for row in fresh:
            by_org[row[1]].append(row)
        for org, org_rows in by_org.items():
            for lid in [lid for lid, owner in self._owner.items() if owner == org]:
                del self._owner[lid]
                self._rows.pop(lid, None)
            self._owner.update((row[0], org) for row in org_rows)
            self._rows.update((row[0], tuple(row)) for row in org_rows)
            if org_rows:
                self._fences[org] = _fences(org_rows)
            else:
                self._fences.pop(org, None)
        self._matched = {}

    def to_disk(self) -> list[Any]:
        """Every row as JSON-able ``[id, organization_id, lon, lat, geofence WKB hex or
        null, radius_m]``, for the side snapshot."""
        return [
            [lid, org, lon, lat, bytes(wkb).hex() if wkb is not None else None, radius]
            for lid, org, lon, lat, wkb, radius in self._rows.values()
        ]

    def from_disk(self, rows: list[Any]) -> None:
        """Replace the cache with rows of :meth:`to_disk` (a start while the database is
        away). Raises ``ValueError``/``TypeError`` for rows not of that form (the cache is
        then unchanged)."""
        parsed = [
            (
                int(lid),
                int(org),
                float(lon),
                float(lat),
                bytes.fromhex(wkb) if wkb else None,
                radius,
            )
            for lid, org, lon, lat, wkb, radius in rows
        ]
        by_org: dict[int, list[tuple[Any, ...]]] = {}
        for row in parsed:
            by_org.setdefault(row[1], []).append(row)
        try:
            fences = {org: _fences(org_rows) for org, org_rows in by_org.items()}
        except shapely.errors.ShapelyError as exc:
            raise ValueError(f"bad geofence in the side snapshot: {exc}") from exc
        self._fences = fences
        self._owner = {row[0]: row[1] for row in parsed}
        self._rows = {row[0]: row for row in parsed}


def _fences(rows: list[tuple[Any, ...]]) -> Geofences:
    """Geofences of rows in ``_AREA_COLUMNS`` order, in id order (ties go to the first)."""
    areas = []
    for lid, _, lon, lat, wkb, radius_m in sorted(rows, key=lambda row: row[0]):
        polygon = shapely.from_wkb(bytes(wkb)) if wkb is not None else None
        if polygon is not None and not isinstance(polygon, Polygon | MultiPolygon):
            continue  # the schema accepts only polygons; never index anything else
        areas.append(GeoArea(lid, centre=(lon, lat), polygon=polygon, radius_m=radius_m))
    return Geofences(areas)
