"""IP address helpers: anonymisation before anything is stored."""

from __future__ import annotations

import ipaddress

#: Prefix lengths kept of a client address (as Google Analytics' IP anonymisation and
#: the CNIL's guidance on audience measurement): the host part is zeroed.
IPV4_PREFIX = 24
IPV6_PREFIX = 48


def truncate_ip(address: str) -> str | None:
    """The network address of ``address`` cut to /24 (IPv4) or /48 (IPv6), as text.

    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are treated as IPv4. Returns None for
    anything that is not an IP address (e.g. a Unix socket peer or ``testclient``).
    """
    octets = address.split(".")
    if len(octets) == 4 and all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
        return f"{int(octets[0])}.{int(octets[1])}.{int(octets[2])}.0"  # the common case, fast
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
