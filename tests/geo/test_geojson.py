"""GeoJSON validation and conversions (geo/geojson.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from shapely.geometry import MultiPolygon, Point, Polygon

from geo.geojson import (
    GeoError,
    area_from_geojson,
    check_lon_lat,
    from_wkb_element,
    point_from_geojson,
    to_ewkt,
    to_geojson,
    to_wkb_element,
)

SQUARE = [[[2.0, 48.0], [3.0, 48.0], [3.0, 49.0], [2.0, 49.0], [2.0, 48.0]]]


def test_point_round_trip() -> None:
    point = point_from_geojson({"type": "Point", "coordinates": [2.3522, 48.8566]})
    assert (point.x, point.y) == (2.3522, 48.8566)
    assert to_geojson(point) == {"type": "Point", "coordinates": [2.3522, 48.8566]}


def test_point_accepts_integers_and_drops_altitude() -> None:
    point = point_from_geojson({"type": "Point", "coordinates": [2, 48, 35.5]})
    assert to_geojson(point) == {"type": "Point", "coordinates": [2.0, 48.0]}


def test_polygon_and_multipolygon_round_trip() -> None:
    polygon = area_from_geojson({"type": "Polygon", "coordinates": SQUARE})
    assert isinstance(polygon, Polygon)
    assert to_geojson(polygon) == {"type": "Polygon", "coordinates": SQUARE}
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE, [[[5, 5], [6, 5], [6, 6], [5, 5]]]]}
    shape = area_from_geojson(multi)
    assert isinstance(shape, MultiPolygon) and len(shape.geoms) == 2
    assert to_geojson(shape)["coordinates"][1] == [[[5.0, 5.0], [6.0, 5.0], [6.0, 6.0], [5.0, 5.0]]]


def test_polygon_with_hole() -> None:
    hole = [[2.4, 48.4], [2.6, 48.4], [2.6, 48.6], [2.4, 48.4]]
    polygon = area_from_geojson({"type": "Polygon", "coordinates": [*SQUARE, hole]})
    assert isinstance(polygon, Polygon)
    assert len(polygon.interiors) == 1
    assert not polygon.covers(Point(2.55, 48.45))
    assert polygon.covers(Point(2.1, 48.1))


@pytest.mark.parametrize(
    ("coordinates", "code"),
    [
        ([181, 0], "invalid_coordinates"),
        ([-180.0001, 0], "invalid_coordinates"),
        ([0, 90.5], "invalid_coordinates"),
        ([0, -91], "invalid_coordinates"),
        ([math.inf, 0], "invalid_coordinates"),
        ([0, math.nan], "invalid_coordinates"),
        ([2, 10**400], "invalid_coordinates"),  # a JSON integer no float holds
        ([True, 1], "invalid_geojson"),
        (["2.3", "48.8"], "invalid_geojson"),
        ([2.3], "invalid_geojson"),
        ([1, 2, 3, 4], "invalid_geojson"),
        ([], "invalid_geojson"),
        ([[2.3, 48.8]], "invalid_geojson"),
        ("2.3,48.8", "invalid_geojson"),
        (None, "invalid_geojson"),
        ([1, 2, "x"], "invalid_geojson"),
    ],
)
def test_bad_points(coordinates: Any, code: str) -> None:
    with pytest.raises(GeoError) as caught:
        point_from_geojson({"type": "Point", "coordinates": coordinates})
    assert caught.value.code == code


@pytest.mark.parametrize(
    "data",
    [
        None,
        [2.3, 48.8],
        "POINT(2 48)",
        {"coordinates": [2, 48]},
        {"type": "point", "coordinates": [2, 48]},
        {"type": "Polygon", "coordinates": SQUARE},
        {"type": "Point"},
        {"type": ["Point"], "coordinates": [2, 48]},
    ],
)
def test_bad_point_objects(data: Any) -> None:
    with pytest.raises(GeoError) as caught:
        point_from_geojson(data)
    assert caught.value.code == "invalid_geojson"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"type": "Point", "coordinates": [2, 48]}, "invalid_geojson"),
        ({"type": "Polygon", "coordinates": []}, "invalid_geojson"),
        ({"type": "Polygon", "coordinates": [[]]}, "invalid_geojson"),
        ({"type": "Polygon", "coordinates": SQUARE[0]}, "invalid_geojson"),  # one level short
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "invalid_geojson"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, False]]]},
            "invalid_geojson",
        ),
        ({"type": "MultiPolygon", "coordinates": []}, "invalid_geojson"),
        ({"type": "MultiPolygon", "coordinates": SQUARE}, "invalid_geojson"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            "invalid_geometry",
        ),
        # A bow tie: the ring crosses itself.
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "invalid_geometry",
        ),
        # Overlapping parts of a MultiPolygon.
        ({"type": "MultiPolygon", "coordinates": [SQUARE, SQUARE]}, "invalid_geometry"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]},
            "invalid_coordinates",
        ),
    ],
)
def test_bad_areas(data: Any, code: str) -> None:
    with pytest.raises(GeoError) as caught:
        area_from_geojson(data)
    assert caught.value.code == code


def test_self_intersection_is_explained() -> None:
    with pytest.raises(GeoError, match="Self-intersection"):
        area_from_geojson(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
        )


def test_check_lon_lat_bounds_are_inclusive() -> None:
    assert check_lon_lat(-180, -90) == (-180.0, -90.0)
    assert check_lon_lat(180, 90) == (180.0, 90.0)


def test_ewkt_and_wkb() -> None:
    point = Point(2.352222, 48.856613)
    assert to_ewkt(point) == "SRID=4326;POINT (2.352222 48.856613)"
    element = to_wkb_element(point)
    assert element.srid == 4326
    assert from_wkb_element(element).equals(point)


def test_a_geometry_without_type_says_what_is_expected() -> None:
    with pytest.raises(GeoError) as missing:
        point_from_geojson({"lat": 95, "lon": 2.35})
    assert missing.value.code == "invalid_geojson"
    assert 'has no "type" (expected Point' in str(missing.value)
    with pytest.raises(GeoError) as wrong:
        point_from_geojson({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
    assert str(wrong.value).endswith("GeoJSON type must be Point (got 'LineString')")
