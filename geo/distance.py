"""Geodesic measures on the WGS 84 ellipsoid (metres, square metres).

Distances are solutions of the inverse geodesic problem by Karney's algorithm
(C. F. F. Karney, "Algorithms for geodesics", J. Geodesy 87, 2013), as implemented by
PROJ's ``geod`` (``pyproj.Geod``); PostGIS ``geography`` uses the same algorithm, so
these figures agree with ``ST_Distance``/``ST_DWithin``/``ST_Area`` to well under a
millimetre.
"""

from __future__ import annotations

import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

#: ``(longitude, latitude)`` in WGS 84 degrees.
LonLat = tuple[float, float]

_GEOD = Geod(ellps="WGS84")


def distance_m(a: LonLat, b: LonLat) -> float:
    """Geodesic distance in metres between two ``(lon, lat)`` points."""
    _, _, metres = _GEOD.inv(a[0], a[1], b[0], b[1])
    return float(metres)


def within_radius(point: LonLat, centre: LonLat, radius_m: float) -> bool:
    """Whether ``point`` lies in the circle of ``radius_m`` metres around ``centre``,
    boundary included (as PostGIS ``ST_DWithin(point::geography, centre::geography, r)``)."""
    return distance_m(point, centre) <= radius_m


def area_m2(geometry: BaseGeometry) -> float:
    """Geodesic area in square metres of a (multi)polygon in WGS 84 degrees, whatever
    the orientation of its rings (holes subtracted)."""
    # pyproj signs each ring's area by its orientation: orient exteriors counter-clockwise
    # and holes clockwise so that holes subtract.
    area, _ = _GEOD.geometry_area_perimeter(shapely.orient_polygons(geometry))
    return float(area)
