"""Geofence matching (geo/geofence.py): unit cases, then agreement with PostGIS
(``ST_Covers`` for polygons, ``ST_DWithin`` on geography for circles) on thousands of
seeded random points plus points exactly on edges and vertices."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable

import psycopg
import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import MultiPolygon, Polygon, box

from campaigns.db import libpq_url
from geo.geofence import GeoArea, Geofences
from geo.geojson import to_ewkt

WGS84 = Geodesic.WGS84


def _at(centre: tuple[float, float], bearing: float, metres: float) -> tuple[float, float]:
    hit = WGS84.Direct(centre[1], centre[0], bearing, metres)
    return hit["lon2"], hit["lat2"]


def test_polygon_boundary_counts_as_inside() -> None:
    fences = Geofences([GeoArea("square", polygon=box(2.0, 48.0, 2.5, 48.5))])
    assert fences.match(2.25, 48.25) == "square"
    assert fences.match(2.0, 48.0) == "square"  # a vertex
    assert fences.match(2.25, 48.5) == "square"  # on an edge
    assert fences.match(2.5000001, 48.25) is None


def test_hole_and_multipolygon() -> None:
    ring = box(0, 0, 4, 4).exterior.coords
    with_hole = Polygon(ring, [box(1, 1, 2, 2).exterior.coords])
    multi = MultiPolygon([box(10, 10, 11, 11), box(12, 10, 13, 11)])
    fences = Geofences([GeoArea("holed", polygon=with_hole), GeoArea("multi", polygon=multi)])
    assert fences.match(1.5, 1.5) is None
    assert fences.match(1.0, 1.5) == "holed"  # the hole's edge is the polygon's boundary
    assert fences.match(12.5, 10.5) == "multi"
    assert fences.match(11.5, 10.5) is None


def test_circle_uses_geodesic_radius() -> None:
    centre = (2.3522, 48.8566)
    fences = Geofences([GeoArea("store", centre=centre, radius_m=150.0)])
    for bearing in range(0, 360, 15):
        assert fences.match(*_at(centre, bearing, 149.99)) == "store"
        assert fences.match(*_at(centre, bearing, 150.01)) is None


def test_smallest_area_wins_then_nearest_centre() -> None:
    centre = (2.35, 48.85)
    mall = GeoArea("mall", polygon=box(2.34, 48.84, 2.36, 48.86))
    kiosk = GeoArea("kiosk", centre=centre, radius_m=50.0)
    fences = Geofences([mall, kiosk])
    assert fences.covering(*centre) == ["kiosk", "mall"]
    assert fences.match(*_at(centre, 90, 100)) == "mall"
    # Two circles of the same size: the nearer centre wins.
    west, east = _at(centre, 270, 40), _at(centre, 90, 40)
    twins = Geofences(
        [GeoArea("west", centre=west, radius_m=100.0), GeoArea("east", centre=east, radius_m=100.0)]
    )
    assert twins.match(*_at(centre, 90, 10)) == "east"
    assert twins.match(*_at(centre, 270, 10)) == "west"
    # Exactly between them: the one given first.
    assert twins.match(*centre) == "west"


def test_polygon_centre_breaks_ties_between_equal_polygons() -> None:
    square = box(0, 0, 1, 1)
    fences = Geofences(
        [
            GeoArea("a", centre=(0.9, 0.5), polygon=square),
            GeoArea("b", centre=(0.1, 0.5), polygon=square),
        ]
    )
    assert fences.match(0.2, 0.5) == "b"
    assert fences.match(0.8, 0.5) == "a"


def test_circles_near_the_pole_and_antimeridian() -> None:
    fences = Geofences(
        [
            GeoArea("pole", centre=(0.0, 89.999), radius_m=500.0),
            GeoArea("dateline", centre=(179.9999, 0.0), radius_m=1000.0),
        ]
    )
    assert fences.match(180.0, 89.9985) == "pole"  # across the pole from the centre
    assert fences.match(-179.9995, 0.0) == "dateline"  # on the other side of ±180
    assert fences.match(-179.9, 0.0) is None


def test_an_area_needs_exactly_one_shape() -> None:
    with pytest.raises(ValueError, match="not both"):
        Geofences([GeoArea(1, centre=(0, 0), polygon=box(0, 0, 1, 1), radius_m=5.0)])
    with pytest.raises(ValueError, match="not both"):
        Geofences([GeoArea(1, centre=(0, 0))])
    assert Geofences([]).match(0, 0) is None


# --- Agreement with PostGIS -----------------------------------------------------------

STEP = 1 / 1024  # grid of exact binary fractions: edge midpoints are exactly on the edge
WEST, SOUTH, EAST, NORTH = 2.0, 48.5, 2.5, 49.0


def _grid(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high) / STEP) * STEP


def _random_areas(rng: random.Random) -> list[GeoArea]:
    areas: list[GeoArea] = []
    while len(areas) < 40:  # rectangles and random (often concave) polygons
        x, y = _grid(rng, WEST, EAST - 0.1), _grid(rng, SOUTH, NORTH - 0.1)
        if len(areas) % 2:
            w, h = _grid(rng, STEP, 0.1), _grid(rng, STEP, 0.1)
            polygon = box(x, y, x + w, y + h)
        else:
            ring = [
                (x + _grid(rng, 0, 0.1), y + _grid(rng, 0, 0.1)) for _ in range(rng.randint(3, 7))
            ]
            polygon = Polygon(ring)
            if not polygon.is_valid or polygon.area == 0:
                continue
        areas.append(GeoArea(len(areas) + 1, polygon=polygon))
    areas.append(
        GeoArea(
            100, polygon=MultiPolygon([box(2.1, 48.6, 2.15, 48.65), box(2.2, 48.6, 2.25, 48.65)])
        )
    )
    holed = Polygon(
        box(2.3, 48.8, 2.4, 48.9).exterior.coords, [box(2.33, 48.83, 2.37, 48.87).exterior.coords]
    )
    areas.append(GeoArea(101, polygon=holed))
    for i in range(30):
        centre = (rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH))
        areas.append(GeoArea(200 + i, centre=centre, radius_m=rng.uniform(100, 8000)))
    return areas


def _test_points(rng: random.Random, areas: list[GeoArea]) -> list[tuple[float, float]]:
    points = [(rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)) for _ in range(3000)]
    for area in areas:
        if area.polygon is not None:
            parts = area.polygon.geoms if isinstance(area.polygon, MultiPolygon) else [area.polygon]
            for part in parts:
                for ring in (part.exterior, *part.interiors):
                    coords = list(ring.coords)
                    points.extend(coords)  # vertices
                    points.extend(  # exact midpoints of edges
                        ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
                        for a, b in itertools.pairwise(coords)
                    )
        else:
            assert area.centre is not None and area.radius_m is not None
            for bearing in range(0, 360, 45):  # just inside and just outside the circle
                points.append(_at(area.centre, bearing, area.radius_m - 0.01))
                points.append(_at(area.centre, bearing, area.radius_m + 0.01))
    return points


def test_agrees_with_postgis(database_url: str) -> None:
    rng = random.Random(20261129)
    areas = _random_areas(rng)
    points = _test_points(rng, areas)
    fences = Geofences(areas)
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(
            "CREATE TEMP TABLE areas (id int, fence geometry(Geometry, 4326), "
            "centre geography(Point, 4326), radius_m float8)"
        )
        conn.execute("CREATE TEMP TABLE pts (id int, geom geometry(Point, 4326))")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO areas VALUES (%s, %s::geometry, %s::geography, %s)",
                [
                    (
                        a.id,
                        to_ewkt(a.polygon) if a.polygon is not None else None,
                        f"SRID=4326;POINT({a.centre[0]!r} {a.centre[1]!r})" if a.centre else None,
                        a.radius_m,
                    )
                    for a in areas
                ],
            )
            cur.executemany(
                "INSERT INTO pts VALUES (%s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
                [(i, lon, lat) for i, (lon, lat) in enumerate(points)],
            )
        rows = conn.execute(
            """
            SELECT p.id, a.id,
                   CASE WHEN a.radius_m IS NULL THEN ST_Area(a.fence::geography)
                        ELSE pi() * a.radius_m ^ 2 END AS size,
                   ST_Distance(p.geom::geography,
                               coalesce(a.centre, ST_PointOnSurface(a.fence)::geography)) AS d
            FROM pts p JOIN areas a
              ON (a.radius_m IS NULL AND ST_Covers(a.fence, p.geom))
              OR (a.radius_m IS NOT NULL AND ST_DWithin(p.geom::geography, a.centre, a.radius_m))
            """
        ).fetchall()
    postgis: dict[int, list[tuple[float, float, Hashable]]] = {}
    for point_id, area_id, size, dist in rows:
        postgis.setdefault(point_id, []).append((size, dist, area_id))
    covered = 0
    for i, (lon, lat) in enumerate(points):
        expected = sorted(postgis.get(i, []))
        assert sorted(fences.covering(lon, lat), key=str) == sorted(
            (e[2] for e in expected), key=str
        ), (i, lon, lat)
        assert fences.match(lon, lat) == (expected[0][2] if expected else None), (i, lon, lat)
        covered += bool(expected)
    # The sample exercises both outcomes and overlaps.
    assert 500 < covered < len(points)
    assert sum(len(v) > 1 for v in postgis.values()) > 100
