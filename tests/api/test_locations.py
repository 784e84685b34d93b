"""Locations: ``/v1/locations`` CRUD, nearest-first search, bulk import (HTTP and CLI),
geometry validation, tenant isolation, and tags' ``location_id``/``placement``."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from geographiclib.geodesic import Geodesic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.services.locations import location_areas
from geo.geofence import Geofences
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.http import assert_problem

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("locations", "tags")
WGS84 = Geodesic.WGS84

PARIS = [2.3522, 48.8566]
LYON = [4.8357, 45.764]
LILLE = [3.0573, 50.6292]
BORDEAUX = [-0.5792, 44.8378]
#: A square around Paris' point, counter-clockwise.
PARIS_SQUARE = [[[2.34, 48.85], [2.36, 48.85], [2.36, 48.86], [2.34, 48.86], [2.34, 48.85]]]


def point(lon_lat: list[float]) -> dict[str, Any]:
    return {"type": "Point", "coordinates": lon_lat}


async def make_location(client: httpx.AsyncClient, org: Org, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Paris Rivoli", "point": point(PARIS)}
    body.update(overrides)
    response = await client.post("/v1/locations", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _row(engine: AsyncEngine, location_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT organization_id, name, external_id, address, timezone, radius_m, "
                "ST_AsText(point) AS point, ST_SRID(point) AS point_srid, "
                "GeometryType(point) AS point_type, ST_AsText(geofence) AS geofence, "
                "ST_SRID(geofence) AS geofence_srid FROM locations WHERE id = :id"
            ),
            {"id": location_id},
        )
        return dict(result.mappings().one())


# --- Create and read ------------------------------------------------------------------


async def test_create_with_point_only(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    body = {
        "name": "Paris Rivoli",
        "external_id": "S-0042",
        "address": "99 rue de Rivoli, 75001 Paris",
        "timezone": "Europe/Paris",
        "point": point(PARIS),
    }
    response = await client.post("/v1/locations", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert {k: created[k] for k in body} == body
    assert (created["geofence"], created["radius_m"], created["distance_m"]) == (None, None, None)
    row = await _row(engine, created["id"])
    assert row == {
        "organization_id": org.id,
        "name": "Paris Rivoli",
        "external_id": "S-0042",
        "address": "99 rue de Rivoli, 75001 Paris",
        "timezone": "Europe/Paris",
        "radius_m": None,
        "point": "POINT(2.3522 48.8566)",
        "point_srid": 4326,
        "point_type": "POINT",
        "geofence": None,
        "geofence_srid": None,
    }
    got = await client.get(f"/v1/locations/{created['id']}", headers=org.headers)
    assert got.status_code == 200
    assert got.json() == created


async def test_create_with_geofence_returns_the_same_geojson(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    created = await make_location(client, org, geofence=fence)
    assert created["geofence"] == fence
    assert created["point"] == point(PARIS)
    row = await _row(engine, created["id"])
    assert row["geofence"] == "POLYGON((2.34 48.85,2.36 48.85,2.36 48.86,2.34 48.86,2.34 48.85))"
    assert row["geofence_srid"] == 4326
    multi = {
        "type": "MultiPolygon",
        "coordinates": [PARIS_SQUARE, [[[2.0, 48.0], [2.1, 48.0], [2.1, 48.1], [2.0, 48.0]]]],
    }
    second = await make_location(client, org, name="Two halls", geofence=multi)
    assert second["geofence"] == multi
    got = await client.get(f"/v1/locations/{second['id']}", headers=org.headers)
    assert got.json()["geofence"] == multi


async def test_point_on_the_geofence_edge_is_covered(client: httpx.AsyncClient, org: Org) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    created = await make_location(client, org, point=point([2.34, 48.855]), geofence=fence)
    assert created["point"] == point([2.34, 48.855])


async def test_create_with_radius(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    created = await make_location(client, org, radius_m=150)
    assert created["radius_m"] == 150.0
    assert (await _row(engine, created["id"]))["radius_m"] == 150.0
    at_limit = await make_location(client, org, name="Big", radius_m=50_000)
    assert at_limit["radius_m"] == 50_000.0


# --- Bad input: status, code, nothing stored changed ----------------------------------

BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("lat > 90", {"point": point([2.0, 90.5])}, "invalid_coordinates"),
    ("lon < -180", {"point": point([-180.5, 0.0])}, "invalid_coordinates"),
    ("lon > 180", {"point": point([181, 0.0])}, "invalid_coordinates"),
    (
        "polygon vertex off range",
        {
            "geofence": {
                "type": "Polygon",
                "coordinates": [[[2.3, 48.8], [2.4, 91], [2.4, 48.9], [2.3, 48.8]]],
            }
        },
        "invalid_coordinates",
    ),
    ("point is a list", {"point": PARIS}, "invalid_geojson"),
    ("wrong type", {"point": {"type": "Polygon", "coordinates": PARIS_SQUARE}}, "invalid_geojson"),
    ("strings", {"point": {"type": "Point", "coordinates": ["2.35", "48.85"]}}, "invalid_geojson"),
    ("booleans", {"point": {"type": "Point", "coordinates": [True, False]}}, "invalid_geojson"),
    (
        "integer too large for a float",
        {"point": {"type": "Point", "coordinates": [2, 10**400]}},
        "invalid_coordinates",
    ),
    ("one number", {"point": {"type": "Point", "coordinates": [2.35]}}, "invalid_geojson"),
    ("no coordinates", {"point": {"type": "Point"}}, "invalid_geojson"),
    ("empty polygon", {"geofence": {"type": "Polygon", "coordinates": []}}, "invalid_geojson"),
    (
        "flat polygon",
        {"geofence": {"type": "Polygon", "coordinates": PARIS_SQUARE[0]}},
        "invalid_geojson",
    ),
    ("point as fence", {"geofence": point(PARIS)}, "invalid_geojson"),
    (
        "unclosed ring",
        {"geofence": {"type": "Polygon", "coordinates": [PARIS_SQUARE[0][:-1]]}},
        "invalid_geometry",
    ),
    (
        "bow tie",
        {
            "geofence": {
                "type": "Polygon",
                "coordinates": [
                    [[2.34, 48.85], [2.36, 48.86], [2.36, 48.85], [2.34, 48.86], [2.34, 48.85]]
                ],
            }
        },
        "invalid_geometry",
    ),
    (
        "point outside fence",
        {"point": point(LYON), "geofence": {"type": "Polygon", "coordinates": PARIS_SQUARE}},
        "geofence_excludes_point",
    ),
    ("zero radius", {"radius_m": 0}, "invalid_radius"),
    ("negative radius", {"radius_m": -5}, "invalid_radius"),
    ("radius over 50 km", {"radius_m": 50_000.5}, "invalid_radius"),
    (
        "both areas",
        {"radius_m": 100, "geofence": {"type": "Polygon", "coordinates": PARIS_SQUARE}},
        "area_conflict",
    ),
    ("unknown time zone", {"timezone": "Europe/Atlantis"}, "invalid_timezone"),
    ("the host's time zone", {"timezone": "localtime"}, "invalid_timezone"),
    ("placeholder time zone", {"timezone": "Factory"}, "invalid_timezone"),
]


@pytest.mark.parametrize(("case", "overrides", "code"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_geometry_is_refused(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    case: str,
    overrides: dict[str, Any],
    code: str,
) -> None:
    await make_location(client, org, external_id="S-1")
    before = await table_snapshot(engine, *TABLES)
    body = {"name": "Bad", "point": point(PARIS), **overrides}
    response = await client.post("/v1/locations", json=body, headers=org.headers)
    problem = assert_problem(response, 422, code)
    assert problem["errors"][0]["type"] == code
    assert await table_snapshot(engine, *TABLES) == before


async def test_point_is_required(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    before = await table_snapshot(engine, *TABLES)
    response = await client.post("/v1/locations", json={"name": "x"}, headers=org.headers)
    assert_problem(response, 422, "validation_error")
    assert await table_snapshot(engine, *TABLES) == before


async def test_external_id_is_unique_per_organization(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    await make_location(client, org, external_id="S-7")
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/locations",
        json={"name": "Again", "external_id": "S-7", "point": point(LYON)},
        headers=org.headers,
    )
    assert_problem(response, 409, "location_external_id_taken")
    assert await table_snapshot(engine, *TABLES) == before
    other = await make_location(client, other_org, external_id="S-7")
    assert other["external_id"] == "S-7"


# --- Tenant isolation, listing --------------------------------------------------------


async def test_other_organizations_locations_are_invisible(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    mine = await make_location(client, org)
    theirs = await make_location(client, other_org, name="Theirs")
    before = await table_snapshot(engine, *TABLES)
    for method, body in (("GET", None), ("PATCH", {"name": "Stolen"}), ("DELETE", None)):
        response = await client.request(
            method, f"/v1/locations/{theirs['id']}", json=body, headers=org.headers
        )
        assert_problem(response, 404, "location_not_found")
    assert await table_snapshot(engine, *TABLES) == before
    listed = await client.get("/v1/locations", headers=org.headers)
    assert [item["id"] for item in listed.json()["items"]] == [mine["id"]]
    near = await client.get("/v1/locations", params={"near": "2.35,48.85"}, headers=org.headers)
    assert [item["id"] for item in near.json()["items"]] == [mine["id"]]
    for missing in (0, -1, 2**63, 999_999):
        response = await client.get(f"/v1/locations/{missing}", headers=org.headers)
        assert response.status_code in (404, 422)


async def test_list_is_cursor_paginated_newest_first(client: httpx.AsyncClient, org: Org) -> None:
    ids = [(await make_location(client, org, name=f"Store {i}"))["id"] for i in range(5)]
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/locations", params=params, headers=org.headers)).json()
        assert page["limit"] == 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    bad = await client.get("/v1/locations", params={"cursor": "zzz"}, headers=org.headers)
    assert_problem(bad, 422, "invalid_cursor")


# --- Nearest first --------------------------------------------------------------------


async def test_near_orders_by_geodesic_distance(client: httpx.AsyncClient, org: Org) -> None:
    stores = {
        name: await make_location(client, org, name=name, point=point(where))
        for name, where in (
            ("Paris", PARIS),
            ("Lyon", LYON),
            ("Lille", LILLE),
            ("Bordeaux", BORDEAUX),
        )
    }
    origin = (1.9093, 47.9030)  # Orléans
    response = await client.get(
        "/v1/locations", params={"near": f"{origin[0]},{origin[1]}"}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    expected = {
        name: WGS84.Inverse(
            origin[1], origin[0], s["point"]["coordinates"][1], s["point"]["coordinates"][0]
        )["s12"]
        for name, s in stores.items()
    }
    assert [item["name"] for item in items] == sorted(expected, key=lambda n: expected[n])
    for item in items:
        assert item["distance_m"] == pytest.approx(expected[item["name"]], abs=0.01)
    assert response.json()["next_cursor"] is None
    within = await client.get(
        "/v1/locations",
        params={"near": f"{origin[0]},{origin[1]}", "within_m": 300_000, "limit": 10},
        headers=org.headers,
    )
    names = [item["name"] for item in within.json()["items"]]
    assert names == sorted((n for n in expected if expected[n] <= 300_000), key=expected.get)
    assert 0 < len(names) < len(stores)  # the filter kept some and dropped some
    one = await client.get(
        "/v1/locations", params={"near": "2.35,48.85", "limit": 1}, headers=org.headers
    )
    assert [item["name"] for item in one.json()["items"]] == ["Paris"]


def _sphere_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance on PostGIS' sphere (mean radius 6 371 008.7714 m)."""
    (lon1, lat1), (lon2, lat2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.7714 * math.asin(math.sqrt(h))


async def test_near_is_exact_where_sphere_and_spheroid_disagree(
    client: httpx.AsyncClient, org: Org
) -> None:
    # Due north and due east of (0, 0): on the spheroid north is nearer, on the sphere
    # (the KNN index's order) east is.
    origin, north, east = (0.0, 0.0), (0.0, 1.004), (0.9975, 0.0)
    exact = {
        name: WGS84.Inverse(origin[1], origin[0], p[1], p[0])["s12"]
        for name, p in (("north", north), ("east", east))
    }
    assert exact["north"] < exact["east"]
    assert _sphere_m(origin, north) > _sphere_m(origin, east)
    await make_location(client, org, name="east", point=point(list(east)))
    await make_location(client, org, name="north", point=point(list(north)))
    for limit in (1, 2):
        response = await client.get(
            "/v1/locations", params={"near": "0,0", "limit": limit}, headers=org.headers
        )
        items = response.json()["items"]
        assert [i["name"] for i in items] == ["north", "east"][:limit]
        for item in items:
            assert item["distance_m"] == pytest.approx(exact[item["name"]], abs=0.01)


@pytest.mark.parametrize(
    "near", ["abc", "2.35", "2.35,48.85,3", "200,10", "10,-91", "nan,1", "inf,2", ",", "1;2"]
)
async def test_bad_near_is_invalid_coordinates(
    client: httpx.AsyncClient, org: Org, near: str
) -> None:
    response = await client.get("/v1/locations", params={"near": near}, headers=org.headers)
    assert_problem(response, 422, "invalid_coordinates")


async def test_within_without_near(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get("/v1/locations", params={"within_m": 10}, headers=org.headers)
    assert_problem(response, 422, "near_required")


# --- Update ---------------------------------------------------------------------------


async def test_update_fields_and_areas(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    created = await make_location(client, org, geofence=fence, external_id="S-1")
    url = f"/v1/locations/{created['id']}"
    renamed = await client.patch(
        url, json={"name": "Rivoli", "address": "Rue de Rivoli"}, headers=org.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["geofence"]) == ("Rivoli", fence)
    moved = await client.patch(url, json={"point": point([2.35, 48.855])}, headers=org.headers)
    assert moved.json()["point"] == point([2.35, 48.855])
    switched = await client.patch(url, json={"geofence": None, "radius_m": 80}, headers=org.headers)
    assert switched.status_code == 200, switched.text
    assert (switched.json()["geofence"], switched.json()["radius_m"]) == (None, 80.0)
    row = await _row(engine, created["id"])
    assert (row["geofence"], row["radius_m"], row["address"]) == (None, 80.0, "Rue de Rivoli")
    cleared = await client.patch(url, json={"radius_m": None, "address": None}, headers=org.headers)
    assert (cleared.json()["radius_m"], cleared.json()["address"]) == (None, None)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"point": point(LYON)}, "geofence_excludes_point"),  # leaves the stored geofence
        ({"radius_m": 100}, "area_conflict"),  # while the stored geofence stays
        (
            {"geofence": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
            "geofence_excludes_point",
        ),
        ({"name": None}, "name_required"),
        ({"point": None}, "point_required"),
        ({"point": point([2.35, 95])}, "invalid_coordinates"),
        ({"radius_m": 60_000, "geofence": None}, "invalid_radius"),
        ({"timezone": "Paris"}, "invalid_timezone"),
        ({"timezone": "localtime"}, "invalid_timezone"),
        ({"timezone": "Factory"}, "invalid_timezone"),
    ],
)
async def test_bad_updates_change_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any], code: str
) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    created = await make_location(client, org, geofence=fence)
    before = await table_snapshot(engine, *TABLES)
    response = await client.patch(f"/v1/locations/{created['id']}", json=body, headers=org.headers)
    assert_problem(response, 422, code)
    assert await table_snapshot(engine, *TABLES) == before


async def test_update_external_id_clash(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await make_location(client, org, external_id="S-1")
    second = await make_location(client, org, external_id="S-2")
    before = await table_snapshot(engine, *TABLES)
    response = await client.patch(
        f"/v1/locations/{second['id']}", json={"external_id": "S-1"}, headers=org.headers
    )
    assert_problem(response, 409, "location_external_id_taken")
    assert await table_snapshot(engine, *TABLES) == before


# --- Tags placed in locations, delete -------------------------------------------------


async def test_tag_placement_defaults_to_the_location_point(
    client: httpx.AsyncClient, org: Org
) -> None:
    location = await make_location(client, org)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], location_id=location["id"])
    assert (tag["location_id"], tag["placement"]) == (location["id"], point(PARIS))
    # Another label: one tag per (campaign, location, label).
    placed = await make_tag(
        client,
        org,
        campaign["id"],
        label="window-2",
        location_id=location["id"],
        placement=point([2.3525, 48.8567]),
    )
    assert placed["placement"] == point([2.3525, 48.8567])
    loose = await make_tag(client, org, campaign["id"])
    assert (loose["location_id"], loose["placement"]) == (None, None)
    got = await client.get(f"/v1/tags/{tag['id']}", headers=org.headers)
    assert got.json() == tag


async def test_tag_patch_moves_and_detaches(client: httpx.AsyncClient, org: Org) -> None:
    paris = await make_location(client, org)
    lyon = await make_location(client, org, name="Lyon", point=point(LYON))
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], location_id=paris["id"])
    url = f"/v1/tags/{tag['id']}"
    moved = (await client.patch(url, json={"location_id": lyon["id"]}, headers=org.headers)).json()
    assert (moved["location_id"], moved["placement"]) == (lyon["id"], point(LYON))
    nudged = await client.patch(
        url, json={"placement": point([4.8358, 45.7641])}, headers=org.headers
    )
    assert nudged.json()["placement"] == point([4.8358, 45.7641])
    assert nudged.json()["location_id"] == lyon["id"]
    detached = (await client.patch(url, json={"location_id": None}, headers=org.headers)).json()
    assert (detached["location_id"], detached["placement"]) == (None, point([4.8358, 45.7641]))
    cleared = (await client.patch(url, json={"placement": None}, headers=org.headers)).json()
    assert cleared["placement"] is None


async def test_tag_with_another_organizations_location_is_404(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    theirs = await make_location(client, other_org)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags",
        json={"location_id": theirs["id"]},
        headers=org.headers,
    )
    assert_problem(response, 404, "location_not_found")
    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"location_id": theirs["id"]}, headers=org.headers
    )
    assert_problem(response, 404, "location_not_found")
    response = await client.patch(
        f"/v1/tags/{tag['id']}", json={"placement": point([2.0, 100.0])}, headers=org.headers
    )
    assert_problem(response, 422, "invalid_coordinates")
    assert await table_snapshot(engine, *TABLES) == before


async def test_delete_in_use_location(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    location = await make_location(client, org)
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], location_id=location["id"])
    url = f"/v1/locations/{location['id']}"
    before = await table_snapshot(engine, *TABLES)
    assert_problem(await client.delete(url, headers=org.headers), 409, "location_in_use")
    assert await table_snapshot(engine, *TABLES) == before
    response = await client.delete(url, params={"detach": "true"}, headers=org.headers)
    assert response.status_code == 204, response.text
    assert (await client.get(url, headers=org.headers)).status_code == 404
    kept = (await client.get(f"/v1/tags/{tag['id']}", headers=org.headers)).json()
    assert (kept["location_id"], kept["placement"]) == (None, point(PARIS))


async def test_delete_unused_location(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    location = await make_location(client, org)
    response = await client.delete(f"/v1/locations/{location['id']}", headers=org.headers)
    assert response.status_code == 204
    assert (await table_snapshot(engine, "locations"))["locations"] == []


# --- Bulk import ----------------------------------------------------------------------

CSV = (
    "name,external_id,lat,lon,radius_m,address,timezone\n"
    "Paris Rivoli,S-1,48.8566,2.3522,150,99 rue de Rivoli,Europe/Paris\n"
    "Lyon Part-Dieu,S-2,45.764,4.8357,,,Europe/Paris\n"
    "Pop-up,,50.6292,3.0573,,,\n"
)


async def _locations(engine: AsyncEngine) -> dict[str | None, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, external_id, radius_m, address, timezone, "
                "ST_X(point::geometry) AS lon, ST_Y(point::geometry) AS lat, "
                "ST_AsText(geofence) AS geofence, organization_id "
                "FROM locations ORDER BY id"
            )
        )
        return {row["external_id"] or row["name"]: dict(row) for row in rows.mappings()}


async def test_import_csv_creates_then_updates(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    response = await client.post(
        "/v1/locations/import", content=CSV, headers={**org.headers, "Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "updated": 0}
    stored = await _locations(engine)
    assert stored["S-1"] == {
        "name": "Paris Rivoli",
        "external_id": "S-1",
        "radius_m": 150.0,
        "address": "99 rue de Rivoli",
        "timezone": "Europe/Paris",
        "lon": 2.3522,
        "lat": 48.8566,
        "geofence": None,
        "organization_id": org.id,
    }
    assert (stored["S-2"]["radius_m"], stored["S-2"]["address"]) == (None, None)
    assert stored["Pop-up"]["external_id"] is None
    again = CSV.replace("Paris Rivoli,S-1,48.8566,2.3522,150", "Paris Louvre,S-1,48.861,2.336,90")
    response = await client.post(
        "/v1/locations/import",
        files={"file": ("stores.csv", again.encode(), "text/csv")},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    # S-1 and S-2 matched on external_id; the pop-up has none, so it is created again.
    assert response.json() == {"created": 1, "updated": 2}
    stored = await _locations(engine)
    assert (stored["S-1"]["name"], stored["S-1"]["radius_m"], stored["S-1"]["lat"]) == (
        "Paris Louvre",
        90.0,
        48.861,
    )


async def test_import_csv_keeps_a_drawn_geofence_unless_a_radius_is_given(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    await make_location(client, org, external_id="S-1", geofence=fence)
    headers = {**org.headers, "Content-Type": "text/csv"}
    csv_text = "name,external_id,lat,lon\nRivoli,S-1,48.855,2.35\n"
    response = await client.post("/v1/locations/import", content=csv_text, headers=headers)
    assert response.json() == {"created": 0, "updated": 1}
    stored = await _locations(engine)
    assert stored["S-1"]["geofence"].startswith("POLYGON((2.34 48.85")
    before = await table_snapshot(engine, *TABLES)
    outside = "name,external_id,lat,lon\nRivoli,S-1,45.764,4.8357\n"
    response = await client.post("/v1/locations/import", content=outside, headers=headers)
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["row"], e["field"], e["code"]) for e in problem["errors"]] == [
        (1, "lat", "geofence_excludes_point")
    ]
    assert await table_snapshot(engine, *TABLES) == before
    circle = "name,external_id,lat,lon,radius_m\nRivoli,S-1,45.764,4.8357,200\n"
    response = await client.post("/v1/locations/import", content=circle, headers=headers)
    assert response.status_code == 200, response.text
    stored = await _locations(engine)
    assert (stored["S-1"]["geofence"], stored["S-1"]["radius_m"]) == (None, 200.0)


async def test_import_lists_every_bad_row_and_writes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    await make_location(client, org, external_id="S-9")
    before = await table_snapshot(engine, *TABLES)
    bad = (
        "name,external_id,lat,lon,radius_m,address,timezone\n"
        "Good,S-1,48.85,2.35,,,\n"
        "Far north,S-2,91,2.35,,,\n"
        "Bad lon,S-3,48.85,east,,,\n"
        ",S-4,48.85,2.35,,,\n"
        "Huge,S-5,48.85,2.35,60000,,\n"
        "Good too,S-6,48.85,2.35,,,Mars/Olympus\n"
        "Twin,S-1,48.85,2.35,,,\n"
        "No lat,S-7,,2.35,,,\n"
        "Wide,S-8,48.85,2.35,abc,,\n"
    )
    response = await client.post(
        "/v1/locations/import", content=bad, headers={**org.headers, "Content-Type": "text/csv"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["row"], e["field"], e["code"]) for e in problem["errors"]] == [
        (2, "lat", "invalid_coordinates"),
        (3, "lon", "invalid_coordinates"),
        (4, "name", "missing"),
        (5, "radius_m", "invalid_radius"),
        (6, "timezone", "invalid_timezone"),
        (7, "external_id", "duplicate_external_id"),
        (8, "lat", "invalid_coordinates"),
        (9, "radius_m", "invalid_radius"),
    ]
    assert all(e["detail"] and e["loc"][:2] == ["row", e["row"]] for e in problem["errors"])
    assert await table_snapshot(engine, *TABLES) == before


@pytest.mark.parametrize(
    ("csv_text", "errors"),
    [
        ("name,lat\nA,1\n", [(0, "lon", "missing_column")]),
        ("name,lat,lon,colour\nA,1,2,red\n", [(0, "colour", "unknown_column")]),
        ("name,name,lat,lon\nA,B,1,2\n", [(0, "name", "duplicate_column")]),
        ("name,lat,lon,,\nA,1,2,,x\n", [(1, None, "too_many_columns")]),
        ("name,lat,lon" + ",x" * 10_000 + "\n", [(0, "x", "unknown_column")]),  # once
        ("name,lat,lon," + "x" * 140_000 + "\nA,1,2,3\n", [(0, None, "invalid_csv")]),
        (" lat,lon,lat ,name\n1,2,3,A\n", [(0, "lat", "duplicate_column")]),
        ("name,lat,lon\nA,1,2,extra\n", [(1, None, "too_many_columns")]),
        ("name,lat,lon\n", [(0, None, "empty_import")]),
        (f"name,lat,lon\nA,1,2\nB,1,{'9' * 200_000}\n", [(2, None, "invalid_csv")]),
        ("name,lat,lon\nA,1,2\x00\n", [(1, "lon", "invalid_coordinates")]),
    ],
)
async def test_import_csv_shape_problems(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, csv_text: str, errors: list[Any]
) -> None:
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/locations/import",
        content=csv_text,
        headers={**org.headers, "Content-Type": "text/csv"},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["row"], e["field"], e["code"]) for e in problem["errors"]] == errors
    assert await table_snapshot(engine, *TABLES) == before


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


async def test_import_geojson(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    collection = {
        "type": "FeatureCollection",
        "features": [
            _feature(point(LYON), name="Lyon", external_id="S-2", radius_m=120),
            _feature(fence, name="Paris", external_id="S-1", point=point(PARIS)),
            _feature(fence, name="Paris annex", external_id="S-3"),
        ],
    }
    response = await client.post(
        "/v1/locations/import",
        content=json.dumps(collection),
        headers={**org.headers, "Content-Type": "application/geo+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "updated": 0}
    stored = await _locations(engine)
    assert (stored["S-2"]["lon"], stored["S-2"]["lat"], stored["S-2"]["radius_m"]) == (
        4.8357,
        45.764,
        120.0,
    )
    assert (stored["S-1"]["lon"], stored["S-1"]["lat"]) == tuple(PARIS)
    assert stored["S-1"]["geofence"] == stored["S-3"]["geofence"]
    # Without a `point` property the point is the polygon's representative point: inside.
    annex = stored["S-3"]
    assert 2.34 < annex["lon"] < 2.36 and 48.85 < annex["lat"] < 48.86
    # A re-import replaces the row's fields: S-1 becomes a plain point.
    collection["features"] = [_feature(point(PARIS), name="Paris", external_id="S-1")]
    response = await client.post("/v1/locations/import", json=collection, headers=org.headers)
    assert response.json() == {"created": 0, "updated": 1}
    assert (await _locations(engine))["S-1"]["geofence"] is None


async def test_import_geojson_bad_features(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    before = await table_snapshot(engine, *TABLES)
    collection = {
        "type": "FeatureCollection",
        "features": [
            _feature(point(PARIS), name="Fine"),
            _feature(point([2.0, 99.0]), name="Off"),
            {"type": "Point", "coordinates": PARIS},
            _feature({"type": "Polygon", "coordinates": [PARIS_SQUARE[0][:-1]]}, name="Open"),
            _feature(
                {"type": "Polygon", "coordinates": PARIS_SQUARE}, name="Out", point=point(LYON)
            ),
            _feature(point(PARIS), name="Both", radius_m=10, geofence=None),
            _feature(point(PARIS), name="Unknown", colour="red"),
            # JSON integers no float holds (10**400): a 422, not a 500.
            _feature(point([2, 10**400]), name="Huge"),
            _feature(
                {"type": "Polygon", "coordinates": [[PARIS, [2.4, 48.8], [10**400, 48.9], PARIS]]},
                name="Huge fence",
            ),
        ],
    }
    response = await client.post("/v1/locations/import", json=collection, headers=org.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["row"], e["field"], e["code"]) for e in problem["errors"]] == [
        (2, "point", "invalid_coordinates"),
        (3, None, "invalid_geojson"),
        (4, "geometry", "invalid_geometry"),
        (5, None, "geofence_excludes_point"),
        (7, "colour", "extra_forbidden"),
        (8, "point", "invalid_coordinates"),
        (9, "geometry", "invalid_coordinates"),
    ]
    assert await table_snapshot(engine, *TABLES) == before
    for body in ({"type": "Feature"}, [], {"type": "FeatureCollection", "features": {}}):
        response = await client.post("/v1/locations/import", json=body, headers=org.headers)
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["code"] == "invalid_geojson"
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await client.post(
        "/v1/locations/import",
        content=deep,
        headers={**org.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    response = await client.post(
        "/v1/locations/import",
        content=b"{not json",
        headers={**org.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    assert await table_snapshot(engine, *TABLES) == before


async def test_import_media_types(client: httpx.AsyncClient, org: Org, engine: AsyncEngine) -> None:
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/locations/import",
        content=b"<xml/>",
        headers={**org.headers, "Content-Type": "application/xml"},
    )
    assert_problem(response, 415, "unsupported_media_type")
    response = await client.post(
        "/v1/locations/import", files={"other": ("a.csv", b"x", "text/csv")}, headers=org.headers
    )
    assert_problem(response, 422, "file_required")
    response = await client.post(
        "/v1/locations/import",
        content=b"\xff\xfe",
        headers={**org.headers, "Content-Type": "text/csv"},
    )
    assert_problem(response, 422, "validation_error")
    assert await table_snapshot(engine, *TABLES) == before


async def test_import_is_tenant_scoped(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    theirs = await make_location(client, other_org, external_id="S-1")
    response = await client.post(
        "/v1/locations/import", content=CSV, headers={**org.headers, "Content-Type": "text/csv"}
    )
    assert response.json() == {"created": 3, "updated": 0}
    got = await client.get(f"/v1/locations/{theirs['id']}", headers=other_org.headers)
    assert got.json() == theirs


async def test_import_many_rows_in_chunks(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    lines = ["name,external_id,lat,lon,radius_m"]
    lines += [
        f"Store {i},S-{i},{45 + i / 10_000:.6f},{2 + i / 10_000:.6f},{100 + i % 50}"
        for i in range(2500)
    ]
    body = "\n".join(lines) + "\n"
    headers = {**org.headers, "Content-Type": "text/csv"}
    response = await client.post("/v1/locations/import", content=body, headers=headers)
    assert response.json() == {"created": 2500, "updated": 0}
    response = await client.post("/v1/locations/import", content=body, headers=headers)
    assert response.json() == {"created": 0, "updated": 2500}
    stored = await _locations(engine)
    assert len(stored) == 2500
    assert (stored["S-2499"]["lat"], stored["S-2499"]["radius_m"]) == (45.2499, 149.0)


# --- The CLI calls the same import ----------------------------------------------------


async def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    # `python -m api.cli` from this tree: the installed script may point at another one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_import(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "stores.csv"
    path.write_text(CSV)
    result = await _cli(
        database_url, "locations", "import", str(path), "--organization", str(org.id)
    )
    assert result.returncode == 0, result.stderr
    assert "3 location(s) created, 0 updated" in result.stdout
    stored = await _locations(engine)
    assert set(stored) == {"S-1", "S-2", "Pop-up"}
    assert {row["organization_id"] for row in stored.values()} == {org.id}
    before = await table_snapshot(engine, *TABLES)
    path.write_text("name,external_id,lat,lon\nX,S-1,95,2\nY,S-2,45,2\n")
    result = await _cli(
        database_url, "locations", "import", str(path), "--organization", str(org.id)
    )
    assert result.returncode == 1
    assert "row 1 lat: invalid_coordinates" in result.stderr
    assert await table_snapshot(engine, *TABLES) == before


async def test_imports_may_exceed_the_general_body_limit(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    padding = "x" * 1_200_000  # over the 1 MiB limit of every other route
    response = await client.post(
        "/v1/locations",
        json={"name": "Big", "point": point(PARIS), "address": padding},
        headers=org.headers,
    )
    assert_problem(response, 413, "payload_too_large")
    # The import reads it (and refuses the rows on their merits, not on size).
    rows = "".join(f"Big,48.85,2.35,{'x' * 100_000}\n" for _ in range(12))
    response = await client.post(
        "/v1/locations/import",
        content=f"name,lat,lon,address\n{rows}",
        headers={**org.headers, "Content-Type": "text/csv"},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["row"], e["field"], e["code"]) for e in problem["errors"]] == [
        (row, "address", "string_too_long") for row in range(1, 13)
    ]
    assert (await table_snapshot(engine, "locations"))["locations"] == []


async def test_location_areas_feed_the_geofence_matcher(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    fence = {"type": "Polygon", "coordinates": PARIS_SQUARE}
    mall = await make_location(client, org, name="Mall", geofence=fence)
    kiosk = await make_location(client, org, name="Kiosk", point=point([2.35, 48.855]), radius_m=50)
    await make_location(client, org, name="No area", point=point([2.35, 48.855]))
    await make_location(client, other_org, name="Theirs", point=point([2.35, 48.855]), radius_m=10)
    async with sessionmaker() as session:
        areas = await location_areas(session, organization_id=org.id)
    assert sorted(a.id for a in areas) == sorted([mall["id"], kiosk["id"]])
    fences = Geofences(areas)
    assert fences.match(2.35, 48.855) == kiosk["id"]  # the smaller area
    assert fences.match(2.341, 48.851) == mall["id"]
    assert fences.match(2.36, 48.86) == mall["id"]  # the geofence's corner
    assert fences.match(LYON[0], LYON[1]) is None


async def test_import_in_the_charset_declared(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """A spreadsheet's CSV export is often Windows-1252: decoded as its Content-Type
    says, in the body or in the multipart part; an unknown charset, a charset that is
    not a text encoding, or bytes that are not text in it: 422 invalid_encoding, nothing
    stored."""
    latin = "name,external_id,lat,lon\nCafé Œuvre,S-1,48.85,2.35\n".encode("cp1252")
    before = await table_snapshot(engine, *TABLES)
    for content_type in (
        "text/csv",  # UTF-8 by default: \xe9 is not UTF-8
        "text/csv; charset=no-such-charset",
        "text/csv; charset=base64",
    ):
        response = await client.post(
            "/v1/locations/import",
            content=latin,
            headers={**org.headers, "Content-Type": content_type},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert [(e["row"], e["code"]) for e in problem["errors"]] == [(0, "invalid_encoding")]
    assert await table_snapshot(engine, *TABLES) == before

    response = await client.post(
        "/v1/locations/import",
        content=latin,
        headers={**org.headers, "Content-Type": "text/csv; charset=windows-1252"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 1, "updated": 0}
    response = await client.post(
        "/v1/locations/import",
        files={"file": ("export.csv", latin, 'text/csv; charset="WINDOWS-1252"')},
        headers=org.headers,
    )
    assert response.json() == {"created": 0, "updated": 1}
    listing = await client.get("/v1/locations", headers=org.headers)
    assert [item["name"] for item in listing.json()["items"]] == ["Café Œuvre"]


async def test_import_a_file_sent_as_a_text_field(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """``curl -F "file=<stores.csv"`` sends the file's text as a plain form field: CSV,
    or GeoJSON when it is an object. A url-encoded body (``curl -d``) is no import: 415."""
    response = await client.post(
        "/v1/locations/import",
        files={"file": (None, "name,external_id,lat,lon\nA,S-1,48.85,2.35\n")},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 1, "updated": 0}
    collection = {
        "type": "FeatureCollection",
        "features": [_feature(point(LYON), name="B", external_id="S-2")],
    }
    response = await client.post(
        "/v1/locations/import", files={"file": (None, json.dumps(collection))}, headers=org.headers
    )
    assert response.json() == {"created": 1, "updated": 0}
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        "/v1/locations/import", data={"file": "name,lat,lon\nC,1,2\n"}, headers=org.headers
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert await table_snapshot(engine, *TABLES) == before


async def test_import_csv_as_spreadsheets_write_it(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    """Header names in any case and padded, a trailing comma, and the French locale's
    CSV (``;`` between cells, decimal commas)."""
    for body in (
        "Name, External_ID ,LAT,Lon,\nRivoli,S-1,48.8606,2.3376,\n",
        'name;external_id;lat;lon;radius_m\n"Gare, Lyon";S-2;45,7607;4,8567;150,5\n',
    ):
        response = await client.post(
            "/v1/locations/import",
            content=body.encode(),
            headers={**org.headers, "Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"created": 1, "updated": 0}
    listing = (await client.get("/v1/locations", headers=org.headers)).json()["items"]
    stored = {item["external_id"]: item for item in listing}
    assert stored["S-1"]["point"]["coordinates"] == [2.3376, 48.8606]
    assert stored["S-2"]["name"] == "Gare, Lyon"
    assert stored["S-2"]["point"]["coordinates"] == [4.8567, 45.7607]
    assert stored["S-2"]["radius_m"] == 150.5
