"""Rules on where Passerelle may send people: destination and fallback URLs of campaigns,
tags (and, later, redirect rules) go through :func:`check_not_own_origin`.

A destination on the service's own short-link origin would send a scan back into
Passerelle: ``/s/CODE`` pointing at ``/s/CODE`` is an endless redirect loop (browsers give
up after about 20 hops), and a link to another code double-counts scans. Such URLs are
refused whatever their path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import idna

from campaigns.errors import InvalidInput

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(url: str) -> tuple[str, int | None] | None:
    """``(host, port)`` compared for "same service": host lower case, IDNA (UTS #46)
    ASCII form, without a trailing dot; port ``None`` when it is its scheme's default
    (so ``http://h`` and ``https://h:443`` both give ``("h", None)``: a plain-http link
    normally reaches the same service through an https redirect). ``None`` for a URL
    without a host or with an invalid port or host."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port
        if not host.isascii():
            host = idna.encode(host, uts46=True).decode("ascii")
    except (ValueError, idna.IDNAError):
        return None
    if port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        port = None
    return host.lower().rstrip("."), port


def is_own_origin(url: str, short_link_origin: str) -> bool:
    """Whether ``url`` points at ``short_link_origin`` (same host and port as described in
    :func:`_host_port`, any scheme and path)."""
    own = _host_port(short_link_origin)
    return own is not None and _host_port(url) == own


def check_not_own_origin(short_link_origin: str, **urls: str | None) -> None:
    """Refuse URLs on the service's own short-link origin (``BASE_URL``).

    ``urls`` maps body field names to URLs (``None`` skips a field), e.g.
    ``destination_url=..., fallback_url=...``. Raises :class:`InvalidInput`
    (``redirect_loop``, 422) listing every such field in ``errors``.
    """
    looping = [
        name
        for name, url in urls.items()
        if url is not None and is_own_origin(url, short_link_origin)
    ]
    if looping:
        raise InvalidInput(
            f"{', '.join(looping)} must not point at this service's own short links "
            f"({short_link_origin}): a scan would redirect to itself",
            code="redirect_loop",
            errors=[
                {
                    "loc": ["body", name],
                    "msg": "points at the short-link origin",
                    "type": "redirect_loop",
                }
                for name in looping
            ],
        )
