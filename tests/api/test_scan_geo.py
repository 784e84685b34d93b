"""Scan geography: the client address behind proxies, IP geolocation, the position of
record, the matched store and ``far_from_placement``, against real PostGIS.

The app here has a GeoIP database built by ``tests/fixtures/mmdb.py``: 81.2.69.0/24 is
London (accuracy 10 km), 2.125.160.0/20 Paris (20 km), 89.160.20.0/24 Sweden without a
position. It trusts the default proxies (loopback only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app, served_app
from campaigns.settings import Settings
from geo.distance import distance_m
from tests.conftest import TABLES, Org, forget_side_caches, make_org
from tests.fixtures.mmdb import write_mmdb
from tests.fixtures.user_agents import IPHONE_SAFARI

LONDON_IP = "81.2.69.142"
PARIS_IP = "2.125.160.216"
SWEDEN_IP = "89.160.20.112"  # in the database, without a position
UNKNOWN_IP = "8.8.8.8"  # global, not in the database
PRIVATE_IP = "10.1.2.3"
PARIS = (2.3522, 48.8566)  # the database's Paris position (lon, lat)
LONDON = (-0.0931, 51.5142)
# A spot in central Paris away from the database's Paris position.
LOUVRE = (2.3376, 48.8606)


@pytest.fixture(scope="module")
async def geo_app(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    """The app with a GeoIP database and default proxy settings."""
    directory = tmp_path_factory.mktemp("geo")
    mmdb = write_mmdb(directory / "city.mmdb")
    app = create_app(
        settings.model_copy(
            update={
                "geoip_db": mmdb,
                "data_dir": directory / "data",
                "forwarded_allow_ips": Settings.model_fields["forwarded_allow_ips"].default,
            }
        )
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def scan_from(
    geo_app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """Clients of the geo app connecting from a given peer address (``client`` is here for
    its clean-up: the database is emptied after each test)."""
    opened: list[httpx.AsyncClient] = []

    def make(peer: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=served_app(geo_app), client=(peer, 40000))
        c = httpx.AsyncClient(transport=transport, base_url="https://go.example.com")
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()
    # Empty now (``client`` empties again after): this app's caches must see it.
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    await forget_side_caches(geo_app)


@pytest.fixture
async def acme(sessionmaker: async_sessionmaker[AsyncSession], client: httpx.AsyncClient) -> Org:
    return await make_org(sessionmaker, "Acme")


async def api(
    c: httpx.AsyncClient, org: Org, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await c.request(method, path, json=body, headers=org.headers)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def point(lon_lat: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Point", "coordinates": list(lon_lat)}


async def campaign_and_tag(
    c: httpx.AsyncClient, org: Org, **tag: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    campaign = await api(
        c,
        org,
        "POST",
        "/v1/campaigns",
        {"name": "Windows", "destination_url": "https://shop.example.com/"},
    )
    made = await api(c, org, "POST", f"/v1/campaigns/{campaign['id']}/tags", {"kind": "qr", **tag})
    return campaign, made


GEO_COLUMNS = (
    "host(ip_truncated) AS ip, country, region, city, ip_lat, ip_lon, ip_accuracy_m, "
    "position_lat, position_lon, ST_X(position::geometry) AS x, ST_Y(position::geometry) AS y, "
    "geo_source, accuracy_m, location_id, far_from_placement"
)


async def last_scan(engine: AsyncEngine) -> dict[str, Any]:
    query = text(f"SELECT {GEO_COLUMNS} FROM scans ORDER BY id DESC LIMIT 1")  # noqa: S608
    async with engine.connect() as conn:
        return dict((await conn.execute(query)).mappings().one())


async def scan(c: httpx.AsyncClient, code: str, **headers: str) -> None:
    response = await c.get(f"/s/{code}", headers=headers)
    assert response.status_code == 302, response.text


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (at most 10 s) for background state, such as a NOTIFY re-read, to arrive."""
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("state never arrived")


# -- 1. client address ------------------------------------------------------------------


async def test_a_spoofed_left_most_forwarded_address_never_wins(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    proxy = scan_from("127.0.0.1")  # loopback: trusted by default
    _, tag = await campaign_and_tag(proxy, acme)
    # The phone wrote "X-Forwarded-For: <Paris>"; our proxy appended the real peer.
    await scan(proxy, tag["code"], **{"X-Forwarded-For": f"{PARIS_IP}, {LONDON_IP}"})
    stored = await last_scan(engine)
    assert (stored["ip"], stored["country"], stored["city"]) == ("81.2.69.0", "GB", "London")

    # Proxies in a row: trusted hops are skipped from the right.
    await scan(proxy, tag["code"], **{"X-Forwarded-For": f"{PARIS_IP}, {LONDON_IP}, ::1"})
    assert (await last_scan(engine))["ip"] == "81.2.69.0"


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    phone = scan_from(PARIS_IP)
    _, tag = await campaign_and_tag(phone, acme)
    await scan(phone, tag["code"], **{"X-Forwarded-For": LONDON_IP})
    stored = await last_scan(engine)
    assert (stored["ip"], stored["country"], stored["region"], stored["city"]) == (
        "2.125.160.0",
        "FR",
        "IDF",
        "Paris",
    )


def test_forwarded_allow_ips_are_cidr_ranges() -> None:
    settings = Settings(forwarded_allow_ips=" 10.0.0.0/8 , 2001:db8::/32 ")
    assert settings.forwarded_allow_ips == "10.0.0.0/8,2001:db8::/32"
    assert settings.trusted_proxies.networks[0].num_addresses == 1 << 24
    assert Settings().forwarded_allow_ips == "127.0.0.1/32,::1/128"
    with pytest.raises(ValueError, match="PASSERELLE_FORWARDED_ALLOW_IPS"):
        Settings(forwarded_allow_ips="10.0.0.0/8,proxy.example.com")


# -- 2. IP geolocation ------------------------------------------------------------------


async def test_ip_geolocation_stores_country_region_city_and_ip_position(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    phone = scan_from(PARIS_IP)
    _, tag = await campaign_and_tag(phone, acme)
    await scan(phone, tag["code"])
    stored = await last_scan(engine)
    assert stored == {
        "ip": "2.125.160.0",  # the full address was used in memory only
        "country": "FR",
        "region": "IDF",
        "city": "Paris",
        "ip_lat": PARIS[1],
        "ip_lon": PARIS[0],
        "ip_accuracy_m": 20_000,
        "position_lat": PARIS[1],
        "position_lon": PARIS[0],
        "x": PARIS[0],
        "y": PARIS[1],
        "geo_source": "ip",
        "accuracy_m": 20_000.0,
        "location_id": None,
        "far_from_placement": None,
    }


@pytest.mark.parametrize(
    ("peer", "country"),
    [(PRIVATE_IP, None), (UNKNOWN_IP, None), (SWEDEN_IP, "SE")],
    ids=["private", "unknown", "country-only"],
)
async def test_private_and_unknown_addresses_get_nothing_and_no_error(
    scan_from: Callable[[str], httpx.AsyncClient],
    acme: Org,
    engine: AsyncEngine,
    peer: str,
    country: str | None,
) -> None:
    phone = scan_from(peer)
    _, tag = await campaign_and_tag(phone, acme)
    await scan(phone, tag["code"])
    stored = await last_scan(engine)
    assert stored["country"] == country
    assert [stored[k] for k in ("region", "city", "ip_lat", "ip_lon", "ip_accuracy_m")] == [
        None
    ] * 5
    assert [stored[k] for k in ("x", "geo_source", "accuracy_m", "far_from_placement")] == [
        None
    ] * 4


async def test_scans_work_without_a_geoip_database(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    # The session app has no PASSERELLE_GEOIP_DB; a placement still gives a position.
    _, tag = await campaign_and_tag(client, org, placement=point(LOUVRE))
    await scan(client, tag["code"])
    stored = await last_scan(engine)
    assert (stored["country"], stored["ip_lat"], stored["geo_source"]) == (None, None, "placement")
    assert (stored["x"], stored["y"]) == LOUVRE
    assert stored["far_from_placement"] is None


# -- 3. position of record, matched store, far from placement ---------------------------


async def test_placement_wins_over_the_ip_position(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    phone = scan_from(PARIS_IP)
    _, tag = await campaign_and_tag(phone, acme, placement=point(LOUVRE))
    await scan(phone, tag["code"])
    stored = await last_scan(engine)
    assert (stored["x"], stored["y"], stored["geo_source"]) == (*LOUVRE, "placement")
    assert stored["accuracy_m"] is None  # where the marketer put it: no radius
    assert (stored["ip_lon"], stored["ip_lat"]) == PARIS  # the IP position is kept too
    # 1.1 km from the IP position: within its 20 km accuracy.
    assert stored["far_from_placement"] is False


async def test_far_from_placement_past_the_ip_accuracy_plus_50_km(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    phone = scan_from(LONDON_IP)
    _, tag = await campaign_and_tag(phone, acme, placement=point(LOUVRE))
    await scan(phone, tag["code"])
    stored = await last_scan(engine)
    assert distance_m(LONDON, LOUVRE) > 10_000 + 50_000
    assert (stored["geo_source"], stored["far_from_placement"]) == ("placement", True)

    # 55 km from the IP position: under 20 km + 50 km, so not far.
    near_paris = (PARIS[0], PARIS[1] + 0.4946)
    assert 54_000 < distance_m(PARIS, near_paris) < 56_000
    _, tag = await campaign_and_tag(phone, acme, placement=point(near_paris))
    await scan(scan_from(PARIS_IP), tag["code"])
    assert (await last_scan(engine))["far_from_placement"] is False
    # 75 km: past it.
    farther = (PARIS[0], PARIS[1] + 0.6745)
    assert 74_000 < distance_m(PARIS, farther) < 76_000
    _, tag = await campaign_and_tag(phone, acme, placement=point(farther))
    await scan(scan_from(PARIS_IP), tag["code"])
    assert (await last_scan(engine))["far_from_placement"] is True


def square(centre: tuple[float, float], half_deg: float) -> dict[str, Any]:
    lon, lat = centre
    ring = [
        [lon - half_deg, lat - half_deg],
        [lon + half_deg, lat - half_deg],
        [lon + half_deg, lat + half_deg],
        [lon - half_deg, lat + half_deg],
        [lon - half_deg, lat - half_deg],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


async def test_the_smallest_covering_area_is_the_matched_store(
    geo_app: FastAPI,
    scan_from: Callable[[str], httpx.AsyncClient],
    acme: Org,
    other_org: Org,
    engine: AsyncEngine,
) -> None:
    phone = scan_from(PARIS_IP)
    # A mall's large circle and, inside it, a shop's small polygon: both cover the Louvre.
    mall = await api(
        phone,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Mall", "point": point(LOUVRE), "radius_m": 5000},
    )
    shop = await api(
        phone,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Shop", "point": point(LOUVRE), "geofence": square(LOUVRE, 0.001)},
    )
    # Another organization's tiny area there never matches Acme's scans.
    await api(
        phone,
        other_org,
        "POST",
        "/v1/locations",
        {"name": "Rival", "point": point(LOUVRE), "radius_m": 10},
    )
    # A store elsewhere, where the tag is said to be.
    lyon = await api(
        phone, acme, "POST", "/v1/locations", {"name": "Lyon", "point": point((4.85, 45.76))}
    )
    locations = geo_app.state.scans.locations
    await eventually(lambda: locations.match(acme.id, *LOUVRE) == shop["id"])

    # Placed at the Louvre but attached to the Lyon store: the covering area decides.
    _, tag = await campaign_and_tag(phone, acme, location_id=lyon["id"], placement=point(LOUVRE))
    await scan(phone, tag["code"])
    assert (await last_scan(engine))["location_id"] == shop["id"]

    # Outside the shop, inside the mall's circle: the mall.
    in_mall = (LOUVRE[0] + 0.01, LOUVRE[1])
    _, tag = await campaign_and_tag(phone, acme, location_id=lyon["id"], placement=point(in_mall))
    await scan(phone, tag["code"])
    assert (await last_scan(engine))["location_id"] == mall["id"]

    # Covered by nothing: the tag's own location.
    _, tag = await campaign_and_tag(phone, acme, location_id=lyon["id"])
    await scan(phone, tag["code"])
    assert (await last_scan(engine))["location_id"] == lyon["id"]

    # Deleting the shop reaches the cache through NOTIFY: the mall covers the Louvre then.
    response = await phone.delete(f"/v1/locations/{shop['id']}", headers=acme.headers)
    assert response.status_code == 204, response.text
    await eventually(lambda: locations.match(acme.id, *LOUVRE) == mall["id"])


async def test_an_ip_position_is_matched_to_a_store_area(
    geo_app: FastAPI, scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    phone = scan_from(PARIS_IP)
    paris = await api(
        phone,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Paris", "point": point(PARIS), "radius_m": 1000},
    )
    await eventually(lambda: geo_app.state.scans.locations.match(acme.id, *PARIS) == paris["id"])
    _, tag = await campaign_and_tag(phone, acme)
    await scan(phone, tag["code"])
    stored = await last_scan(engine)
    assert (stored["geo_source"], stored["location_id"]) == ("ip", paris["id"])


async def test_a_gps_fix_is_read_with_the_store_it_falls_in(
    geo_app: FastAPI, scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    """Issue 7: a consented fix is the scan's position "and the location it falls in",
    for every reader of scans; in no area, the tag's location."""
    phone = scan_from(LONDON_IP)
    shop = await api(
        phone,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Shop", "point": point(LOUVRE), "radius_m": 200},
    )
    lyon = await api(
        phone, acme, "POST", "/v1/locations", {"name": "Lyon", "point": point((4.85, 45.76))}
    )
    await eventually(lambda: geo_app.state.scans.locations.match(acme.id, *LOUVRE) == shop["id"])
    campaign, tag = await campaign_and_tag(phone, acme, location_id=lyon["id"])
    for _ in range(2):
        await scan(phone, tag["code"], **{"User-Agent": IPHONE_SAFARI})
    async with engine.connect() as conn:
        clicks = list(
            (await conn.execute(text("SELECT click_id FROM scans ORDER BY id"))).scalars()
        )
        stored = list(
            (await conn.execute(text("SELECT location_id FROM scans ORDER BY id"))).scalars()
        )
    assert stored == [lyon["id"], lyon["id"]]  # placed at the Lyon store, no area there
    fixes = (
        {"lat": LOUVRE[1], "lon": LOUVRE[0], "accuracy_m": 8},  # inside the shop's circle
        {"lat": 43.2965, "lon": 5.3698, "accuracy_m": 8},  # Marseille: no store's area
    )
    for click, fix in zip(clicks, fixes, strict=True):
        response = await phone.post(f"/s/{click}/location", json=fix)
        assert response.status_code == 204, response.text

    listing = await phone.get(f"/v1/campaigns/{campaign['id']}/scans", headers=acme.headers)
    read = {i["click_id"]: (i["geo_source"], i["location_id"]) for i in listing.json()["items"]}
    assert read == {clicks[0]: ("gps", shop["id"]), clicks[1]: ("gps", lyon["id"])}
    by_store = await phone.get(
        f"/v1/campaigns/{campaign['id']}/stats/locations", headers=acme.headers
    )
    assert [(r["location_id"], r["scans"], r["gps_scans"]) for r in by_store.json()["rows"]] == [
        (shop["id"], 1, 1),  # most scans first, then by id: the shop was created first
        (lyon["id"], 1, 1),
    ]
    # A deleted store leaves the fix to its tag's location, as scans lose theirs.
    response = await phone.delete(f"/v1/locations/{shop['id']}", headers=acme.headers)
    assert response.status_code == 204, response.text
    listing = await phone.get(f"/v1/campaigns/{campaign['id']}/scans", headers=acme.headers)
    assert [i["location_id"] for i in listing.json()["items"]] == [lyon["id"], lyon["id"]]


# -- 5. geographic reports ---------------------------------------------------------------


async def test_scans_per_store(
    geo_app: FastAPI, scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    paris, london, private = scan_from(PARIS_IP), scan_from(LONDON_IP), scan_from(PRIVATE_IP)
    shop = await api(
        paris,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Shop", "external_id": "PAR-01", "point": point(LOUVRE), "radius_m": 200},
    )
    await eventually(lambda: geo_app.state.scans.locations.match(acme.id, *LOUVRE) == shop["id"])
    campaign, placed = await campaign_and_tag(paris, acme, placement=point(LOUVRE))
    bare = await api(paris, acme, "POST", f"/v1/campaigns/{campaign['id']}/tags", {"kind": "qr"})
    phone = {"User-Agent": IPHONE_SAFARI}
    for c in (paris, paris, london):  # London: far from the placement
        assert (await c.get(f"/s/{placed['code']}", headers=phone)).status_code == 302
    assert (await paris.head(f"/s/{placed['code']}", headers=phone)).status_code == 302
    assert (await private.get(f"/s/{bare['code']}", headers=phone)).status_code == 302
    async with engine.connect() as conn:
        first = (await conn.execute(text("SELECT click_id FROM scans ORDER BY id"))).scalar()
    assert (
        await paris.post(
            f"/s/{first}/location", json={"lat": LOUVRE[1], "lon": LOUVRE[0], "accuracy_m": 5}
        )
    ).status_code == 204
    async with engine.connect() as conn:
        clicks = list(
            (await conn.execute(text("SELECT click_id FROM scans ORDER BY id"))).scalars()
        )
    # Conversions are credited to the store their click id's scan matched: two at the
    # shop (one refunded in part), one with no value from the unplaced tag's scan.
    for number, (click, value) in enumerate(
        ((clicks[0], 4990), (clicks[2], 1000), (clicks[4], None)), start=1
    ):
        body: dict[str, Any] = {
            "click_id": click,
            "event": "purchase",
            "external_id": f"o-{number}",
        }
        if value is not None:
            body["value"] = {"amount_minor": value, "currency": "EUR"}
        conversion = await api(paris, acme, "POST", "/v1/conversions", body)
        if number == 2:
            await api(
                paris,
                acme,
                "POST",
                f"/v1/conversions/{conversion['id']}/refunds",
                {"amount_minor": 400, "external_id": "r-1"},
            )

    response = await paris.get(
        f"/v1/campaigns/{campaign['id']}/stats/locations", headers=acme.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "campaign_id": campaign["id"],
        "rows": [
            {
                "location_id": shop["id"],
                "name": "Shop",
                "external_id": "PAR-01",
                "scans": 3,
                "bot_scans": 1,
                # Visitor ids: Paris and London addresses, one agent: two daily visitors.
                "unique_visitors": 2,
                "gps_scans": 1,
                "far_from_placement": 1,
                "conversions": 2,
                "revenue": [{"currency": "EUR", "amount_minor": 4990 + 1000 - 400}],
            },
            {
                "location_id": None,
                "name": None,
                "external_id": None,
                "scans": 1,
                "bot_scans": 0,
                "unique_visitors": 1,
                "gps_scans": 0,
                "far_from_placement": 0,
                "conversions": 1,
                "revenue": [],
            },
        ],
    }
    # A window after the scans: the conversions in it still have their stores' rows.
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT max(scanned_at) FROM scans"))).scalar_one()
    response = await paris.get(
        f"/v1/campaigns/{campaign['id']}/stats/locations",
        params={"from": (after + dt.timedelta(microseconds=1)).isoformat()},
        headers=acme.headers,
    )
    assert [
        (r["location_id"], r["scans"], r["conversions"], r["revenue"])
        for r in response.json()["rows"]
    ] == [
        (shop["id"], 0, 2, [{"currency": "EUR", "amount_minor": 5590}]),
        (None, 0, 1, []),
    ]


async def test_heatmap_hexagons_leave_out_coarse_ip_positions(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org
) -> None:
    from shapely.geometry import Point as ShapelyPoint
    from shapely.geometry import shape

    phone = {"User-Agent": IPHONE_SAFARI}
    paris = scan_from(PARIS_IP)
    campaign, louvre = await campaign_and_tag(paris, acme, placement=point(LOUVRE))
    east = (LOUVRE[0] + 0.04, LOUVRE[1])  # about 2.9 km east
    away = await api(
        paris,
        acme,
        "POST",
        f"/v1/campaigns/{campaign['id']}/tags",
        {"kind": "qr", "placement": point(east)},
    )
    unplaced = await api(
        paris, acme, "POST", f"/v1/campaigns/{campaign['id']}/tags", {"kind": "qr"}
    )
    for code in (louvre["code"], louvre["code"], away["code"], unplaced["code"]):
        assert (await paris.get(f"/s/{code}", headers=phone)).status_code == 302
    assert (await paris.head(f"/s/{louvre['code']}", headers=phone)).status_code == 302  # a bot

    url = f"/v1/campaigns/{campaign['id']}/heatmap"
    response = await paris.get(url, params={"cell_m": 500}, headers=acme.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    collection = response.json()
    assert (collection["type"], collection["cell_m"]) == ("FeatureCollection", 500)
    # The IP position (20 km accuracy) cannot say which 500 m cell it is in; the bot
    # does not count.
    counts = [f["properties"]["scans"] for f in collection["features"]]
    assert counts == [2, 1]
    hexagons = [shape(f["geometry"]) for f in collection["features"]]
    assert hexagons[0].covers(ShapelyPoint(LOUVRE)) and hexagons[1].covers(ShapelyPoint(east))
    assert len(hexagons[0].exterior.coords) == 7  # six vertices, closed
    centre = hexagons[0].centroid
    radius = distance_m((centre.x, centre.y), hexagons[0].exterior.coords[0])
    assert 495 < radius < 505  # metres on the ground, centre to vertex

    coarse = await paris.get(url, params={"cell_m": 25_000}, headers=acme.headers)
    assert sum(f["properties"]["scans"] for f in coarse.json()["features"]) == 4

    refused = await paris.get(url, params={"cell_m": 10}, headers=acme.headers)
    assert refused.status_code == 422
    assert refused.json()["code"] == "validation_error"


# -- 5. redirect rules --------------------------------------------------------------------

ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)


async def redirect(c: httpx.AsyncClient, code: str, **headers: str) -> str:
    response = await c.get(f"/s/{code}", headers=headers)
    assert response.status_code == 302, response.text
    return response.headers["location"].split("?", 1)[0]


async def stored_rule(engine: AsyncEngine) -> tuple[Any, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT rule_id, variant FROM scans ORDER BY id DESC LIMIT 1"))
        ).one()
    return row[0], row[1]


async def test_rules_pick_the_destination_by_priority(
    geo_app: FastAPI,
    client: httpx.AsyncClient,
    scan_from: Callable[[str], httpx.AsyncClient],
    acme: Org,
    engine: AsyncEngine,
) -> None:
    london, paris = scan_from(LONDON_IP), scan_from(PARIS_IP)
    lyon = await api(
        paris, acme, "POST", "/v1/locations", {"name": "Lyon", "point": point((4.85, 45.76))}
    )
    campaign, tag = await campaign_and_tag(paris, acme)
    _, lyon_tag = await campaign_and_tag(paris, acme, location_id=lyon["id"])
    lyon_campaign = (await api(paris, acme, "GET", f"/v1/tags/{lyon_tag['id']}"))["campaign_id"]
    rules = f"/v1/campaigns/{campaign['id']}/rules"

    def rule(priority: int, conditions: dict[str, Any], path: str) -> dict[str, Any]:
        return {
            "priority": priority,
            "when": conditions,
            "destination_url": f"https://shop.example.com/{path}",
        }

    # Created through the other app (another process): NOTIFY brings them here.
    uk = (
        await client.post(rules, json=rule(20, {"countries": ["GB"]}, "uk"), headers=acme.headers)
    ).json()
    uk_android = (
        await client.post(
            rules,
            json=rule(
                10,
                {"countries": ["GB"], "os": ["android"], "device_types": ["mobile"]},
                "uk-android",
            ),
            headers=acme.headers,
        )
    ).json()
    french = (
        await client.post(rules, json=rule(30, {"languages": ["fr"]}, "fr"), headers=acme.headers)
    ).json()
    await eventually(lambda: len(geo_app.state.scans.rules.rules_for(campaign["id"])) == 3)

    assert (
        await redirect(london, tag["code"], **{"User-Agent": IPHONE_SAFARI})
        == "https://shop.example.com/uk"
    )
    assert await stored_rule(engine) == (uk["id"], None)
    assert (
        await redirect(london, tag["code"], **{"User-Agent": ANDROID})
        == "https://shop.example.com/uk-android"
    )
    assert await stored_rule(engine) == (uk_android["id"], None)
    fr = {"User-Agent": IPHONE_SAFARI, "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}
    assert await redirect(paris, tag["code"], **fr) == "https://shop.example.com/fr"
    assert await stored_rule(engine) == (french["id"], None)
    en = {"User-Agent": IPHONE_SAFARI, "Accept-Language": "en-GB, fr;q=0.8"}
    assert await redirect(paris, tag["code"], **en) == "https://shop.example.com/"  # the campaign's
    assert await stored_rule(engine) == (None, None)

    # A store condition: the scan's matched store (here the tag's own).
    await client.post(
        f"/v1/campaigns/{lyon_campaign}/rules",
        json=rule(1, {"location_ids": [lyon["id"]]}, "lyon"),
        headers=acme.headers,
    )
    await eventually(lambda: len(geo_app.state.scans.rules.rules_for(lyon_campaign)) == 1)
    assert (
        await redirect(paris, lyon_tag["code"], **{"User-Agent": IPHONE_SAFARI})
        == "https://shop.example.com/lyon"
    )

    # Deleting a rule reaches the other process too.
    assert (
        await client.delete(f"/v1/rules/{uk_android['id']}", headers=acme.headers)
    ).status_code == 204
    await eventually(lambda: len(geo_app.state.scans.rules.rules_for(campaign["id"])) == 2)
    assert (
        await redirect(london, tag["code"], **{"User-Agent": ANDROID})
        == "https://shop.example.com/uk"
    )


async def test_a_split_stores_its_variant_and_sticks_to_the_visitor(
    scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    paris = scan_from(PARIS_IP)
    campaign, tag = await campaign_and_tag(paris, acme)
    split = {
        "split": [
            {"name": "a", "destination_url": "https://shop.example.com/a", "weight": 1},
            {"name": "b", "destination_url": "https://shop.example.com/b", "weight": 1},
        ]
    }
    rule = await api(paris, acme, "POST", f"/v1/campaigns/{campaign['id']}/rules", split)
    served = set()
    for peer in (PARIS_IP, LONDON_IP, SWEDEN_IP, UNKNOWN_IP, "81.2.69.1", "2.125.160.1"):
        phone = scan_from(peer)
        first = await redirect(phone, tag["code"], **{"User-Agent": IPHONE_SAFARI})
        rule_id, variant = await stored_rule(engine)
        assert (rule_id, first) == (rule["id"], f"https://shop.example.com/{variant}")
        # The same visitor (address, agent, day) gets the same variant again.
        assert await redirect(phone, tag["code"], **{"User-Agent": IPHONE_SAFARI}) == first
        served.add(variant)
    assert served <= {"a", "b"}


async def test_a_truncate_makes_every_process_reread_stores_and_rules(
    geo_app: FastAPI, scan_from: Callable[[str], httpx.AsyncClient], acme: Org, engine: AsyncEngine
) -> None:
    paris = scan_from(PARIS_IP)
    shop = await api(
        paris,
        acme,
        "POST",
        "/v1/locations",
        {"name": "Shop", "point": point(LOUVRE), "radius_m": 100},
    )
    campaign, _ = await campaign_and_tag(paris, acme)
    await api(
        paris,
        acme,
        "POST",
        f"/v1/campaigns/{campaign['id']}/rules",
        {"destination_url": "https://shop.example.com/all"},
    )
    scans = geo_app.state.scans
    await eventually(lambda: scans.locations.match(acme.id, *LOUVRE) == shop["id"])
    assert len(scans.rules.rules_for(campaign["id"])) == 1
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE locations, redirect_rules CASCADE"))
    await eventually(
        lambda: (
            scans.locations.match(acme.id, *LOUVRE) is None
            and not scans.rules.rules_for(campaign["id"])
        )
    )
