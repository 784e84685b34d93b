"""Which webhook URLs and addresses Passerelle may call (server-side request forgery).

A webhook URL is chosen by an API client, and the dispatcher POSTs to it from inside the
operator's network: without a guard it could reach the database, a cloud metadata
service (``169.254.169.254``) or an admin port on loopback. Outside ``development`` and
``test`` (:attr:`campaigns.settings.Settings.allows_private_webhooks`):

- the scheme must be ``https`` (``http`` is allowed only in development and test);
- every address the host resolves to must be global unicast: not private (RFC 1918,
  RFC 4193), loopback, link-local, unspecified, multicast, reserved, shared address space
  (CGNAT, RFC 6598), benchmarking, documentation, or an IPv6 form embedding one of those
  (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4, Teredo);
- the check runs at creation (422 ``webhook_url_not_public``) and again before every
  attempt, because DNS answers change: the dispatcher connects to the very address it
  checked (no second resolution), sending the host name in ``Host`` and TLS SNI.

Source: OWASP Server-Side Request Forgery Prevention Cheat Sheet; IANA IPv4 and IPv6
Special-Purpose Address Registries (RFC 6890).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Non-global IPv4 ranges (IANA special-purpose registry, the ones not forwardable or
#: not globally reachable), checked explicitly rather than trusting ``is_global`` alone,
#: whose coverage varies between Python versions.
_BLOCKED_V4: Final = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (CGNAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata services)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
_BLOCKED_V6: Final = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        # Reserved by the IETF (IPv6 Address Space registry), holding the deprecated
        # IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1: Linux's sit driver tunnels them to
        # a.b.c.d, so ::127.0.0.1 can reach loopback) and IPv4-translated
        # ::ffff:0:a.b.c.d; Python calls them global. IPv4-mapped ::ffff:a.b.c.d, also
        # in ::/8, is judged by its IPv4 address above.
        "::/8",
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo checked through its embedding)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(address: IPAddress) -> bool:
    """True when ``address`` is global unicast, including through the IPv4 address an
    IPv6 form embeds (IPv4-mapped, NAT64, 6to4, Teredo server and client)."""
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not any(address in net for net in _BLOCKED_V4)
    embedded: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if embedded:
        return all(is_public_address(v4) for v4 in embedded)
    if address.scope_id:
        return False
    return address.is_global and not any(address in net for net in _BLOCKED_V6)


class AddressRefused(Exception):
    """A webhook URL may not be called: ``code`` is ``webhook_url_not_public``,
    ``webhook_url_insecure`` or ``webhook_url_unresolvable``; the message names the host,
    never a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_scheme(url: str, *, allow_private: bool) -> None:
    """Raise :class:`AddressRefused` (``webhook_url_insecure``) for a scheme other than
    https (http too when ``allow_private``)."""
    scheme = urlsplit(url).scheme.lower()
    allowed = ("https", "http") if allow_private else ("https",)
    if scheme not in allowed:
        raise AddressRefused(
            "webhook_url_insecure",
            "Webhook URLs must use https" + ("" if allow_private else " outside development"),
        )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an address literal: itself), in the resolver's
    order, without repeats. Raises :class:`AddressRefused` (``webhook_url_unresolvable``)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(
            "webhook_url_unresolvable", f"The webhook host {host!r} does not resolve"
        ) from exc
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        found[ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])] = None
    if not found:
        raise AddressRefused(
            "webhook_url_unresolvable", f"The webhook host {host!r} does not resolve"
        )
    return list(found)


async def checked_addresses(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Check ``url``'s scheme and resolve its host; return the addresses to connect to.
    Raises :class:`AddressRefused`: ``webhook_url_insecure``, ``webhook_url_unresolvable``,
    or ``webhook_url_not_public`` when any address is not global (unless
    ``allow_private``): one private answer among public ones is refused too, since the
    connection could go to either."""
    check_scheme(url, allow_private=allow_private)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = await resolve(host, port)
    if not allow_private:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            raise AddressRefused(
                "webhook_url_not_public",
                f"The webhook host {host!r} resolves to a private, loopback, link-local or "
                "otherwise non-public address",
            )
    return addresses
