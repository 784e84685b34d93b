"""The client's address behind reverse proxies (``X-Forwarded-For``).

Each proxy appends the address it received the request from, so the header reads
``client, proxy1, proxy2`` and only the entries appended by proxies we trust are
believable: anything to their left may have been written by the client. The client is
therefore the right-most address that is *not* a trusted proxy, found by walking from the
right (the peer first), skipping trusted proxies. A spoofed left-most entry can never win
while a trusted proxy appended the real one. (MDN, "X-Forwarded-For: Selecting an IP
address"; the same rule as nginx ``real_ip_recursive on``.)

A malformed entry (garbage, ``unknown``, an empty field) stops the walk: nothing to its
left can be trusted to be what a proxy saw, so the last good address met, which is a
trusted proxy's, is answered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(entry: str) -> IPAddress | None:
    """An address from one ``X-Forwarded-For`` entry or socket peer: ``1.2.3.4``,
    ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:443``
    (ports dropped, zone ids dropped, IPv4-mapped IPv6 read as IPv4). None if malformed."""
    text = entry.strip()
    # The common case first: a bare dotted quad, parsed by the C library (strict: four
    # decimal parts, no leading zeros, as ``ipaddress``), six times faster.
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        pass
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """A set of CIDR ranges (``10.0.0.0/8``, ``::1/128``, a bare address) whose hops
    are believed. Raises ``ValueError`` on a malformed range."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c.strip(), strict=False) for c in cidrs
        )
        # (network address, netmask) as integers, per IP version: ``ip in network`` is
        # ``int(ip) & netmask == network address`` for the same version.
        self._ranges: dict[int, tuple[tuple[int, int], ...]] = {
            version: tuple(
                (int(n.network_address), int(n.netmask))
                for n in self.networks
                if n.version == version
            )
            for version in (4, 6)
        }

    def __contains__(self, ip: IPAddress) -> bool:
        value = int(ip)
        return any(value & mask == network for network, mask in self._ranges[ip.version])


def client_address(
    peer: str | None, forwarded_for: str | Iterable[str] | None, trusted: TrustedProxies
) -> str | None:
    """The client's address as text: the socket ``peer`` itself unless it is a trusted
    proxy, else the right-most untrusted address of ``forwarded_for`` (the header's value,
    or its values in order when sent several times). None when the peer is not an IP
    address (Unix socket)."""
    current = parse_address(peer) if peer else None
    if current is None:
        return None
    if forwarded_for is None:
        values: list[str] = []
    elif isinstance(forwarded_for, str):
        values = [forwarded_for]
    else:
        values = list(forwarded_for)
    hops = [hop for value in values for hop in value.split(",")]
    while current in trusted and hops:
        hop = parse_address(hops.pop())
        if hop is None:
            break  # a malformed hop: keep the last good address (a trusted proxy's)
        current = hop
    return str(current)
