"""Geodesic measures on the WGS 84 ellipsoid (metres, square metres).

Distances are solutions of the inverse geodesic problem by Karney's algorithm
(C. F. F. Karney, "Algorithms for geodesics", J. Geodesy 87, 2013), as implemented by
PROJ's ``geod`` (``pyproj.Geod``); PostGIS ``geography`` uses the same algorithm, so
these figures agree with ``ST_Distance``/``ST_DWithin``/``ST_Area`` to well under a
millimetre.
"""

from __future__ import annotations

import math

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


#: Mean Earth radius (IUGG, metres) of the spherical estimate in :func:`farther_than`.
_MEAN_RADIUS_M = 6_371_008.8
#: The great-circle distance on that sphere is within 0.6 % of the geodesic on the
#: ellipsoid (the sphere's radius is within 0.6 % of every radius of curvature of WGS 84);
#: an estimate this far from the threshold decides on its own.
_SPHERE_MARGIN = 0.02


def farther_than(a: LonLat, b: LonLat, threshold_m: float) -> bool:
    """``distance_m(a, b) > threshold_m``, in about a microsecond when the great-circle
    distance is clearly on one side of the threshold (more than 2 %, three times the
    sphere's worst error), else by the geodesic itself."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    estimate = 2 * _MEAN_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
    if estimate < threshold_m * (1 - _SPHERE_MARGIN):
        return False
    if estimate > threshold_m * (1 + _SPHERE_MARGIN):
        return True
    return distance_m(a, b) > threshold_m


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
