"""GeoJSON (RFC 7946) <-> shapely <-> PostGIS, with validation that names what is wrong.

Positions are ``[longitude, latitude]`` in WGS 84 degrees (RFC 7946 §3.1.1); an optional
third element (altitude) is accepted and dropped, since every column here is 2-D. Errors
are :class:`GeoError` with a stable ``code``:

- ``invalid_geojson``: not an object of the expected ``type``, coordinates missing, empty
  or wrongly nested, non-numbers (booleans included), rings of fewer than 4 positions.
- ``invalid_coordinates``: a latitude outside [-90, 90], a longitude outside [-180, 180],
  or a non-finite number.
- ``invalid_geometry``: well-formed but not a valid simple geometry (unclosed ring,
  self-intersection, overlapping parts; OGC Simple Features rules as GEOS checks them,
  reported with shapely's ``explain_validity``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import shapely
from geoalchemy2.elements import WKBElement
from geoalchemy2.shape import from_shape, to_shape
from shapely.geometry import MultiPolygon, Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

#: Spatial reference of every geometry: WGS 84 longitude/latitude (EPSG:4326).
SRID = 4326

Area: TypeAlias = Polygon | MultiPolygon


class GeoError(ValueError):
    """Invalid geographic input. ``code`` is one of ``invalid_geojson``,
    ``invalid_coordinates``, ``invalid_geometry`` (stable; APIs may expose it)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _number(value: Any, what: str) -> float:
    # bool is an int subclass: true must not read as 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GeoError("invalid_geojson", f"{what} must be a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits: no float holds it
        raise GeoError("invalid_coordinates", f"{what} is out of range") from None
    if not math.isfinite(number):
        raise GeoError("invalid_coordinates", f"{what} must be a finite number")
    return number


def check_lon_lat(lon: Any, lat: Any) -> tuple[float, float]:
    """``(lon, lat)`` as floats after checking they are numbers, finite, and in range
    (longitude [-180, 180], latitude [-90, 90] degrees). Raises :class:`GeoError`."""
    x, y = _number(lon, "longitude"), _number(lat, "latitude")
    if not -180.0 <= x <= 180.0:
        raise GeoError("invalid_coordinates", f"longitude {x} is outside [-180, 180]")
    if not -90.0 <= y <= 90.0:
        raise GeoError("invalid_coordinates", f"latitude {y} is outside [-90, 90]")
    return x, y


def _position(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise GeoError("invalid_geojson", "a position must be [longitude, latitude]")
    if len(value) == 3:
        _number(value[2], "altitude")
    return check_lon_lat(value[0], value[1])


def _ring(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list | tuple) or len(value) < 4:
        raise GeoError("invalid_geojson", "a linear ring must have at least 4 positions")
    ring = [_position(p) for p in value]
    if ring[0] != ring[-1]:
        raise GeoError("invalid_geometry", "linear ring is not closed (first != last)")
    return ring


def _polygon_rings(value: Any) -> list[list[tuple[float, float]]]:
    if not isinstance(value, list | tuple) or not value:
        raise GeoError("invalid_geojson", "a Polygon needs at least one linear ring")
    return [_ring(r) for r in value]


def _object(data: Any, types: Sequence[str]) -> tuple[str, Any]:
    if not isinstance(data, Mapping):
        raise GeoError("invalid_geojson", "GeoJSON geometry must be an object")
    kind = data.get("type")
    wanted = " or ".join(types)
    if kind is None:
        raise GeoError(
            "invalid_geojson",
            f'GeoJSON geometry has no "type" (expected {wanted}, e.g. '
            '{"type": "Point", "coordinates": [longitude, latitude]})',
        )
    if not isinstance(kind, str) or kind not in types:
        raise GeoError("invalid_geojson", f"GeoJSON type must be {wanted} (got {kind!r:.40})")
    if "coordinates" not in data:
        raise GeoError("invalid_geojson", "GeoJSON geometry has no coordinates")
    return kind, data["coordinates"]


def _valid(geometry: BaseGeometry) -> BaseGeometry:
    if not geometry.is_valid:
        raise GeoError("invalid_geometry", f"invalid geometry: {explain_validity(geometry)}")
    return geometry


def point_from_geojson(data: Any) -> Point:
    """A shapely ``Point`` from a GeoJSON Point object (``{"type": "Point",
    "coordinates": [lon, lat]}``). Raises :class:`GeoError`."""
    _, coordinates = _object(data, ("Point",))
    return Point(_position(coordinates))


def area_from_geojson(data: Any) -> Area:
    """A valid shapely ``Polygon`` or ``MultiPolygon`` from a GeoJSON Polygon or
    MultiPolygon object. Raises :class:`GeoError`."""
    kind, coordinates = _object(data, ("Polygon", "MultiPolygon"))
    if kind == "Polygon":
        rings = _polygon_rings(coordinates)
        geometry: Area = Polygon(rings[0], rings[1:])
    else:
        if not isinstance(coordinates, list | tuple) or not coordinates:
            raise GeoError("invalid_geojson", "a MultiPolygon needs at least one Polygon")
        parts = [_polygon_rings(p) for p in coordinates]
        geometry = MultiPolygon([(rings[0], rings[1:]) for rings in parts])
    _valid(geometry)
    return geometry


def to_geojson(geometry: BaseGeometry) -> dict[str, Any]:
    """The GeoJSON object of a shapely geometry; coordinates as lists, 2-D."""
    data = mapping(shapely.force_2d(geometry))
    return {"type": data["type"], "coordinates": _lists(data["coordinates"])}


def _lists(value: Any) -> Any:
    if isinstance(value, list | tuple) and value and isinstance(value[0], int | float):
        return [float(v) for v in value]
    return [_lists(v) for v in value]


def to_ewkt(geometry: BaseGeometry, srid: int = SRID) -> str:
    """Extended WKT for PostGIS (``SRID=4326;POINT(2.35 48.85)``), full precision."""
    return f"SRID={srid};{shapely.to_wkt(geometry, rounding_precision=-1)}"


def to_wkb_element(geometry: BaseGeometry, srid: int = SRID) -> WKBElement:
    """A GeoAlchemy2 element to assign to a ``Geometry``/``Geography`` column."""
    return from_shape(geometry, srid=srid)


def from_wkb_element(element: WKBElement) -> BaseGeometry:
    """The shapely geometry of a value read from a ``Geometry``/``Geography`` column."""
    return to_shape(element)
