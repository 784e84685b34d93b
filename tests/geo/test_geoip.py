"""MaxMind DB lookups (geo/geoip.py) on databases written by the test fixture."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
from pathlib import Path
from typing import Any

import geoip2.models
import pytest

from geo import geoip
from geo.geoip import MODE, GeoIPReader, GeoResult
from tests.fixtures.mmdb import city_record, write_mmdb


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reader(tmp_path: Path) -> GeoIPReader:
    return GeoIPReader(write_mmdb(tmp_path / "city.mmdb"))


def test_city_lookup_converts_accuracy_to_metres(reader: GeoIPReader) -> None:
    assert reader.database_type == "GeoLite2-City"
    assert reader.lookup("81.2.69.142") == GeoResult(
        country="GB", region="ENG", city="London", lat=51.5142, lon=-0.0931, accuracy_m=10_000
    )
    assert reader.lookup("2.125.175.1") == GeoResult(
        country="FR", region="IDF", city="Paris", lat=48.8566, lon=2.3522, accuracy_m=20_000
    )


def test_ipv6_and_ipv4_mapped(reader: GeoIPReader) -> None:
    lyon = reader.lookup("2a01:e0a:1234::1")
    assert lyon is not None and (lyon.city, lyon.accuracy_m) == ("Lyon", 50_000)
    london = reader.lookup("::ffff:81.2.69.142")
    assert london is not None and london.city == "London"


def test_country_only_record(reader: GeoIPReader) -> None:
    assert reader.lookup("89.160.20.128") == GeoResult("SE", None, None, None, None, None)


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "192.168.0.1",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "fe80::1",
        "100.64.0.1",
        "203.0.113.5",
        "240.0.0.1",
        "0.0.0.0",  # noqa: S104
        "8.8.8.8",
        "2a00:1450::1",
        "not an ip",
        "",
        "1.2.3",
    ],
)
def test_private_reserved_unknown_and_garbage_give_none(reader: GeoIPReader, address: str) -> None:
    assert reader.lookup(address) is None


def test_country_database(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "country.mmdb",
        {"81.2.69.0/24": city_record("GB")},
        database_type="GeoLite2-Country",
    )
    reader = GeoIPReader(path)
    assert reader.database_type == "GeoLite2-Country"
    assert reader.lookup("81.2.69.1") == GeoResult("GB", None, None, None, None, None)


def test_missing_file_logs_once_then_loads_when_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = tmp_path / "later.mmdb"
    with caplog.at_level(logging.WARNING, logger="geo.geoip"):
        reader = GeoIPReader(path, check_interval_s=5, clock=clock)
        for _ in range(3):
            clock.now += 10
            assert reader.lookup("81.2.69.1") is None
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    write_mmdb(path)
    clock.now += 10
    found = reader.lookup("81.2.69.1")
    assert found is not None and found.city == "London"


def test_unreadable_file_gives_none_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = tmp_path / "broken.mmdb"
    path.write_bytes(b"not a maxmind database")
    with caplog.at_level(logging.WARNING, logger="geo.geoip"):
        reader = GeoIPReader(path, check_interval_s=1, clock=clock)
        clock.now += 2
        assert reader.lookup("81.2.69.1") is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_replaced_file_is_reopened_after_the_check_interval(tmp_path: Path) -> None:
    clock = Clock()
    path = write_mmdb(tmp_path / "city.mmdb")
    reader = GeoIPReader(path, check_interval_s=5, clock=clock)
    assert reader.lookup("81.2.69.1") is not None
    # geoipupdate writes a new file and renames it over the old one (new inode).
    update = write_mmdb(
        tmp_path / "city.mmdb.tmp",
        {"81.2.69.0/24": city_record("IE", city="Dublin", lat=53.35, lon=-6.26, accuracy_km=5)},
    )
    os.replace(update, path)
    clock.now += 1  # not yet due: the old database still answers
    old = reader.lookup("81.2.69.1")
    assert old is not None and old.city == "London"
    clock.now += 5
    new = reader.lookup("81.2.69.1")
    assert new == GeoResult("IE", None, "Dublin", 53.35, -6.26, 5_000)
    assert reader.lookup("2.125.160.1") is None  # gone from the new file


def test_broken_replacement_keeps_the_previous_database(tmp_path: Path) -> None:
    clock = Clock()
    path = write_mmdb(tmp_path / "city.mmdb")
    reader = GeoIPReader(path, check_interval_s=5, clock=clock)
    broken = tmp_path / "half-written"
    broken.write_bytes(b"\x00" * 64)
    os.replace(broken, path)
    clock.now += 6
    kept = reader.lookup("81.2.69.1")
    assert kept is not None and kept.city == "London"


def test_memory_mapped_c_extension_is_used() -> None:
    import maxminddb

    assert MODE == maxminddb.MODE_MMAP_EXT


RECORDS: list[dict[str, Any]] = [
    {
        "country": {"iso_code": "FR", "names": {"en": "France", "fr": "France"}},
        "subdivisions": [{"iso_code": "IDF"}, {"iso_code": "75"}],
        "city": {"names": {"en": "Paris", "de": "Paris"}},
        "location": {"latitude": 48.8566, "longitude": 2.3522, "accuracy_radius": 20},
    },
    {"country": {"iso_code": "SE"}},
    {"country": {"iso_code": "DE"}, "city": {"names": {"en": "Berlin"}}},
    {"country": {"iso_code": "US"}, "location": {"latitude": 37.0, "longitude": -122.0}},
    {"country": {"iso_code": "JP"}, "city": {"names": {"ja": "東京"}}, "subdivisions": []},
    {"location": {"accuracy_radius": 1000}},
    {},
]


@pytest.mark.parametrize("record", RECORDS)
def test_records_are_read_as_geoip2_reads_them(record: dict[str, Any]) -> None:
    model = geoip2.models.City(["en"], ip_address="81.2.69.160", **record)
    radius_km = model.location.accuracy_radius
    expected = GeoResult(
        country=model.country.iso_code,
        region=model.subdivisions[0].iso_code if model.subdivisions else None,
        city=model.city.name,
        lat=model.location.latitude,
        lon=model.location.longitude,
        accuracy_m=radius_km * 1000 if radius_km is not None else None,
    )
    assert geoip._result(record) == expected


def _not_global_ranges() -> list[ipaddress.IPv4Network]:
    """Every IPv4 range this Python's ipaddress does not call global, or that is an
    exception to one (its constants: private networks, exceptions, shared space)."""
    constants = ipaddress.IPv4Address("1.1.1.1")._constants  # type: ignore[attr-defined]
    ranges = [*constants._private_networks, constants._public_network]
    ranges += getattr(constants, "_private_networks_exceptions", [])
    return ranges


def test_every_non_global_ipv4_range_starts_with_a_listed_octet() -> None:
    ranges = _not_global_ranges()
    assert len(ranges) >= 14
    for network in ranges:
        first, last = int(network.network_address) >> 24, int(network.broadcast_address) >> 24
        assert set(range(first, last + 1)) <= geoip._V4_MAYBE_NOT_GLOBAL, network


def test_routable_is_ipaddress_is_global() -> None:
    rng = random.Random(5)
    samples = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20_000)]
    for network in _not_global_ranges():  # each range's edges and their neighbours
        for edge in (int(network.network_address), int(network.broadcast_address)):
            samples += [
                ipaddress.IPv4Address(a) for a in (edge - 1, edge, edge + 1) if 0 <= a < 2**32
            ]
    samples_v6: list[ipaddress.IPv6Address] = [
        ipaddress.IPv6Address(f"::ffff:{a}") for a in samples[:2000]
    ]
    for ip in [*samples, *samples_v6]:
        unwrapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip
        assert unwrapped is not None
        expected = unwrapped if unwrapped.is_global else None
        assert geoip._routable_ip(ip) == expected, ip


def test_lookup_of_a_parsed_address_is_the_lookup_of_its_text(reader: GeoIPReader) -> None:
    for text in ("81.2.69.160", "2a02:ec80::1", "::ffff:81.2.69.160", "10.0.0.1", "8.8.8.8"):
        assert reader.lookup_address(ipaddress.ip_address(text)) == reader.lookup(text)
