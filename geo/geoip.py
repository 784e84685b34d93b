"""IP geolocation from a MaxMind DB file (GeoIP2/GeoLite2 City or Country, or any MMDB
in that schema: DB-IP Lite, IPinfo's free country/city files...).

The file is memory-mapped (the ``maxminddb`` C extension's ``MODE_MMAP_EXT`` when it is
built, else pure-Python ``MODE_MMAP``), and records are read as ``geoip2``'s models
read them (``_result``).
A weekly ``geoipupdate`` replaces the file by renaming a new one over it; the reader
notices (inode, size or modification time changed) at most once per ``check_interval_s``
and re-opens it, so no restart is needed. Format: MaxMind DB File Format Specification 2.0
(https://maxmind.github.io/MaxMind-DB/).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

log = logging.getLogger(__name__)

#: Memory-mapped through the C extension when available: lookups then cost ~1 µs.
MODE: int = (
    maxminddb.MODE_MMAP_EXT if getattr(maxminddb, "extension", None) else maxminddb.MODE_MMAP
)


@dataclass(frozen=True, slots=True)
class GeoResult:
    """Where an IP address is, as far as the database knows.

    ``country`` is ISO 3166-1 alpha-2 (``FR``); ``region`` the ISO 3166-2 subdivision code
    of the largest subdivision without the country prefix (``IDF`` for Île-de-France);
    ``city`` the English city name; ``lat``/``lon`` WGS 84 degrees; ``accuracy_m`` the
    database's accuracy radius converted to metres (MaxMind gives kilometres). Any of
    them may be None (a Country database has no city nor position).
    """

    country: str | None
    region: str | None
    city: str | None
    lat: float | None
    lon: float | None
    accuracy_m: int | None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: First octets of every IPv4 range ``ipaddress`` does not call global (private, shared
#: CGNAT 100.64/10, loopback, link-local, documentation, benchmarking, reserved: the
#: IANA special-purpose registry, RFC 6890) and of multicast: an address starting with
#: any other octet is global, which spares ``is_global``'s dozen network tests (~8 µs)
#: on nearly every scan. Tests check each range ``ipaddress`` lists against this set.
_V4_MAYBE_NOT_GLOBAL = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, *range(224, 256)})


def _routable(text: str) -> str | None:
    """The address to look up, or None for garbage and non-global addresses (private,
    loopback, link-local, reserved, documentation, shared CGNAT space)."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    routable = _routable_ip(ip)
    return str(routable) if routable is not None else None


def _routable_ip(ip: IPAddress) -> IPAddress | None:
    """:func:`_routable` of a parsed address (IPv4-mapped IPv6 read as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4 and int(ip) >> 24 not in _V4_MAYBE_NOT_GLOBAL:
        return ip
    return ip if ip.is_global else None


def _result(record: dict[str, Any]) -> GeoResult:
    """A City or Country record (MaxMind DB schema: ``country.iso_code``,
    ``subdivisions[].iso_code`` most general first, ``city.names.en``,
    ``location.latitude|longitude|accuracy_radius`` in km) as a :class:`GeoResult`:
    what ``geoip2.models.City(["en"], **record)`` reads, without building its objects
    (tests compare both)."""
    country = record.get("country") or {}
    subdivisions = record.get("subdivisions") or ()
    city = record.get("city") or {}
    location = record.get("location") or {}
    radius_km = location.get("accuracy_radius")
    return GeoResult(
        country=country.get("iso_code"),
        region=subdivisions[0].get("iso_code") if subdivisions else None,
        city=(city.get("names") or {}).get("en"),
        lat=location.get("latitude"),
        lon=location.get("longitude"),
        accuracy_m=radius_km * 1000 if radius_km is not None else None,
    )


class GeoIPReader:
    """Looks addresses up in the MMDB file at ``path``, re-opening it when replaced.

    ``check_interval_s`` bounds how often the file is ``stat``-ed (one syscall, on the
    lookup that comes due). A missing or unreadable file is logged once (until it
    changes state) and every lookup answers None meanwhile; it is picked up when it
    appears. Not for concurrent use from several threads during a swap of files
    (the server calls it from its event loop).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._reader: maxminddb.Reader | None = None
        self._identity: tuple[int, int, int, int] | None = None
        self._failed: tuple[int, int, int, int] | str | None = None
        self._next_check = 0.0
        self._maybe_reopen()

    @property
    def database_type(self) -> str | None:
        """The open database's ``database_type`` metadata (``GeoLite2-City``), or None."""
        return self._reader.metadata().database_type if self._reader else None

    def _maybe_reopen(self) -> None:
        self._next_check = self._clock() + self.check_interval_s
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._fail(str(exc), f"GeoIP database {self.path} unavailable: {exc}")
            return
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._identity or identity == self._failed:
            return
        try:
            reader = maxminddb.open_database(str(self.path), MODE)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            # A half-written file or a wrong one: keep serving the previous database.
            self._fail(identity, f"GeoIP database {self.path} unreadable: {exc}")
            return
        # The old reader is dropped, not closed: a lookup still holding it finishes, and
        # its memory map is released when the last reference goes.
        self._reader, self._identity, self._failed = reader, identity, None
        log.info("GeoIP database %s opened (%s)", self.path, reader.metadata().database_type)

    def _fail(self, state: tuple[int, int, int, int] | str, message: str) -> None:
        if self._failed != state:
            log.warning(message)
        self._failed = state

    def lookup(self, ip: str) -> GeoResult | None:
        """What the database knows of ``ip`` (IPv4 or IPv6 text), or None for an address
        that is not global, not in the database, malformed, or without a database.
        Never raises."""
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return None
        return self.lookup_address(address)

    def lookup_address(self, ip: IPAddress) -> GeoResult | None:
        """:meth:`lookup` of an address already parsed (the scan path's)."""
        if self._clock() >= self._next_check:
            self._maybe_reopen()
        reader = self._reader
        address = _routable_ip(ip)
        if reader is None or address is None:
            return None
        try:
            record: Any = reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None  # e.g. an IPv6 address against an IPv4-only database
        if not isinstance(record, dict):
            return None
        return _result(record)
