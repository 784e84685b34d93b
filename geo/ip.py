"""Client addresses: parsed once per request, anonymised before anything is stored.

:func:`parse_client` turns the peer address of a request into a :class:`ClientAddress`
holding everything the rest of the code needs: the parsed address, its truncated form
(the only one stored) and the key that identifies one subscriber (rate limits, visitor
ids). Nothing else parses addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Prefix lengths kept of a client address (as Google Analytics' IP anonymisation and
#: the CNIL's guidance on audience measurement): the host part is zeroed.
IPV4_PREFIX = 24
IPV6_PREFIX = 48
#: One IPv6 subscriber's usual allocation (RFC 6177 §2): a phone may rotate through its
#: /64 (privacy addresses, RFC 8981), so the /64 stands for one client.
IPV6_CLIENT_PREFIX = 64

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """A request's peer address, parsed once.

    ``text`` is the address as received (None when the server gave none); ``ip`` the
    parsed address, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) unwrapped to IPv4, or None
    when ``text`` is not an IP address (a Unix socket peer, ``testclient``);
    ``truncated`` the network address of its /24 (IPv4) or /48 (IPv6), as text, the only
    form stored; ``key`` the client key: the IPv4 address itself, an IPv6 address's /64
    network address, else ``text`` as is (None without an address).
    """

    text: str | None
    ip: IPAddress | None
    truncated: str | None
    key: str | None


NO_ADDRESS = ClientAddress(None, None, None, None)


def parse_client(address: str | None) -> ClientAddress:
    """Parse a peer address (see :class:`ClientAddress`); never raises."""
    if not address:
        return NO_ADDRESS
    try:
        ip: IPAddress = ipaddress.ip_address(address.strip())
    except ValueError:
        return ClientAddress(address, None, None, address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        packed = ip.packed
        truncated = f"{packed[0]}.{packed[1]}.{packed[2]}.0"
        return ClientAddress(address, ip, truncated, str(ip))
    return ClientAddress(address, ip, _network(ip, IPV6_PREFIX), _network(ip, IPV6_CLIENT_PREFIX))


def truncate_ip(address: str) -> str | None:
    """The network address of ``address`` cut to /24 (IPv4) or /48 (IPv6), as text; None
    for anything that is not an IP address. Shorthand for ``parse_client(a).truncated``."""
    return parse_client(address).truncated


def _network(ip: IPAddress, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
