"""In-memory geofencing: which area covers a point.

Areas are polygons/multipolygons (WGS 84 degrees, planar tests as PostGIS ``geometry``
does: a point on the boundary is inside, as ``ST_Covers``) and circles (a centre and a
radius in metres on the ellipsoid, as ``ST_DWithin`` on ``geography``). Candidates come
from a shapely ``STRtree`` over the polygons and over each circle's bounding box; the
polygons are prepared so the exact test is fast.

Where areas overlap the most specific one wins: the smallest geodesic area (m²;
``pi * r**2`` for a circle), then the nearest centre, then the one given first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import shapely
from shapely import STRtree
from shapely.geometry import MultiPolygon, Point, Polygon, box

from geo.distance import LonLat, area_m2, distance_m

#: Shortest length of one degree of latitude on WGS 84 (at the equator), in metres; used
#: to bound a circle by a box that surely contains it.
_MIN_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0


@dataclass(frozen=True)
class GeoArea:
    """One area to match: ``polygon`` (a valid Polygon or MultiPolygon) or ``radius_m``
    (a circle around ``centre``), never both. ``centre`` is ``(lon, lat)``; for a polygon
    without one, its representative point is used (for tie-breaks only)."""

    id: Hashable
    centre: LonLat | None = None
    polygon: Polygon | MultiPolygon | None = None
    radius_m: float | None = None


@dataclass(frozen=True, order=True)
class _Rank:
    area_m2: float
    distance_m: float


@dataclass
class _Entry:
    area: GeoArea
    centre: LonLat
    size_m2: float
    shape: Polygon | MultiPolygon = field(repr=False)


def _circle_box(centre: LonLat, radius_m: float) -> Polygon:
    """A lon/lat box that contains every point within ``radius_m`` of ``centre``."""
    lon, lat = centre
    dlat = radius_m * 1.01 / _MIN_M_PER_DEG_LAT
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    widest = max(abs(south), abs(north))
    cos_lat = math.cos(math.radians(widest))
    if widest >= 89.0 or cos_lat <= 0:
        return box(-180.0, south, 180.0, north)
    dlon = radius_m * 1.01 / (_M_PER_DEG_LON_EQUATOR * cos_lat)
    if lon - dlon < -180.0 or lon + dlon > 180.0:
        return box(-180.0, south, 180.0, north)  # crosses the antimeridian: be generous
    return box(lon - dlon, south, lon + dlon, north)


class Geofences:
    """An immutable index of areas: build once (``Geofences(areas)``), match many times.

    ``match`` costs one tree query plus an exact test per candidate; building costs a
    geodesic area per polygon. Rebuild to change the set (e.g. on a cache refresh).
    """

    def __init__(self, areas: Iterable[GeoArea]) -> None:
        self._entries: list[_Entry] = []
        for area in areas:
            if (area.polygon is None) == (area.radius_m is None):
                raise ValueError(f"area {area.id!r}: give a polygon or a radius, not both")
            if area.polygon is not None:
                polygon = area.polygon
                shapely.prepare(polygon)
                rep = polygon.representative_point()
                centre = area.centre or (rep.x, rep.y)
                self._entries.append(_Entry(area, centre, area_m2(polygon), polygon))
            else:
                assert area.radius_m is not None and area.centre is not None, area
                size = math.pi * area.radius_m**2
                shape = _circle_box(area.centre, area.radius_m)
                self._entries.append(_Entry(area, area.centre, size, shape))
        self._tree = STRtree([e.shape for e in self._entries])

    def __len__(self) -> int:
        return len(self._entries)

    def covering(self, lon: float, lat: float) -> list[Hashable]:
        """Ids of every area covering ``(lon, lat)``, most specific first."""
        point = Point(lon, lat)
        hits: list[tuple[_Rank, int, Hashable]] = []
        for index in self._tree.query(point):
            entry = self._entries[int(index)]
            if entry.area.radius_m is not None:
                inside = distance_m((lon, lat), entry.centre) <= entry.area.radius_m
            else:
                inside = entry.shape.covers(point)
            if inside:
                rank = _Rank(entry.size_m2, distance_m((lon, lat), entry.centre))
                hits.append((rank, int(index), entry.area.id))
        hits.sort(key=lambda hit: (hit[0], hit[1]))
        return [hit[2] for hit in hits]

    def match(self, lon: float, lat: float) -> Hashable | None:
        """The id of the most specific area covering ``(lon, lat)`` (WGS 84 degrees), or
        None. Ties on size and centre distance go to the area given first."""
        found = self.covering(lon, lat)
        return found[0] if found else None
