"""Geodesic distances and areas (geo/distance.py, pyproj) checked against GeographicLib."""

from __future__ import annotations

import random

import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import Polygon

from geo.distance import area_m2, distance_m, farther_than, within_radius

WGS84 = Geodesic.WGS84


def test_distance_matches_geographiclib_on_random_pairs() -> None:
    rng = random.Random(7)
    for _ in range(500):
        lat1, lat2 = rng.uniform(-89, 89), rng.uniform(-89, 89)
        lon1, lon2 = rng.uniform(-180, 180), rng.uniform(-180, 180)
        expected = WGS84.Inverse(lat1, lon1, lat2, lon2)["s12"]
        assert distance_m((lon1, lat1), (lon2, lat2)) == pytest.approx(expected, abs=1e-6)


def test_known_values() -> None:
    # Vincenty's (1975) worked example: Flinders Peak to Buninyong, 54 972.271 m.
    flinders = (144.0 + 25 / 60 + 29.52440 / 3600, -(37 + 57 / 60 + 3.72030 / 3600))
    buninyong = (143.0 + 55 / 60 + 35.38390 / 3600, -(37 + 39 / 60 + 10.15610 / 3600))
    assert distance_m(flinders, buninyong) == pytest.approx(54_972.271, abs=0.001)
    assert distance_m((2.35, 48.85), (2.35, 48.85)) == 0.0
    # A quarter meridian on WGS 84: 10 001 965.729 m.
    assert distance_m((0, 0), (0, 90)) == pytest.approx(10_001_965.729, abs=0.001)


def test_within_radius_boundary() -> None:
    centre = (2.3522, 48.8566)
    line = WGS84.Direct(centre[1], centre[0], 37.0, 250.0)
    inside = WGS84.Direct(centre[1], centre[0], 37.0, 249.99)
    outside = WGS84.Direct(centre[1], centre[0], 37.0, 250.01)
    assert within_radius((inside["lon2"], inside["lat2"]), centre, 250.0)
    assert not within_radius((outside["lon2"], outside["lat2"]), centre, 250.0)
    assert within_radius((line["lon2"], line["lat2"]), centre, 250.0 + 1e-6)
    assert within_radius(centre, centre, 0.5)


def test_area_matches_geographiclib_polygon_area() -> None:
    ring = [(2.0, 48.0), (3.0, 48.0), (3.0, 49.0), (2.0, 49.0)]
    poly = WGS84.Polygon()
    for lon, lat in ring:
        poly.AddPoint(lat, lon)
    _, _, expected = poly.Compute(False, True)
    assert area_m2(Polygon(ring)) == pytest.approx(abs(expected), rel=1e-9)
    # Clockwise or not, same area; a hole subtracts.
    assert area_m2(Polygon(ring[::-1])) == pytest.approx(abs(expected), rel=1e-9)
    hole = [(2.4, 48.4), (2.6, 48.4), (2.6, 48.6), (2.4, 48.6)]
    with_hole = area_m2(Polygon(ring, [hole]))
    assert with_hole == pytest.approx(abs(expected) - area_m2(Polygon(hole)), rel=1e-9)


def test_area_is_in_square_metres() -> None:
    # A 1 km square at the equator is 1e6 m2 within the ellipsoid's curvature.
    side = 1000 / 111_319.49
    assert area_m2(Polygon([(0, 0), (side, 0), (side, side), (0, side)])) == pytest.approx(
        1e6, rel=0.01
    )


def test_farther_than_is_the_geodesic_comparison() -> None:
    # The spherical shortcut must never change the verdict: random pairs (near, far,
    # antipodal, polar) against thresholds around their own geodesic distance.
    rng = random.Random(11)
    checked = 0
    for _ in range(4_000):
        a = (rng.uniform(-180, 180), rng.uniform(-90, 90))
        if rng.random() < 0.5:  # nearby: the far-from-placement case
            b = (a[0] + rng.uniform(-2, 2), max(-90.0, min(90.0, a[1] + rng.uniform(-2, 2))))
        else:
            b = (rng.uniform(-180, 180), rng.uniform(-90, 90))
        away = distance_m(a, b)
        for factor in (0.5, 0.97, 0.985, 0.995, 0.9999, 1.0, 1.0001, 1.005, 1.015, 1.03, 2.0):
            threshold = away * factor
            assert farther_than(a, b, threshold) == (away > threshold), (a, b, factor)
            checked += 1
    assert farther_than((2.35, 48.85), (2.35, 48.85), 50_000) is False
    assert checked == 44_000
