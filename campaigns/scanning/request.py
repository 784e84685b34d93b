"""The request side of a scan: one value built once from the HTTP request.

Everything a scan step may look at comes from here; steps never see the raw request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from geo.ip import NO_ADDRESS, ClientAddress, parse_client

#: Header fields kept (lower-case names, as HTTP/2 and ASGI give them) -> attribute.
#: Sec-Purpose (Fetch spec, "prefetch" / "prefetch;prerender"), Purpose (older Chrome)
#: and X-Purpose (Safari previews), X-Moz (Firefox): speculative loads, not a person.
_HEADERS = {
    b"user-agent": "user_agent",
    b"accept-language": "accept_language",
    b"sec-purpose": "sec_purpose",
    b"purpose": "purpose",
    b"x-purpose": "x_purpose",
    b"x-moz": "x_moz",
    b"cookie": "cookie",
}
#: No header value is kept beyond this many characters (bounded work and memory).
MAX_HEADER_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """A scan request: the ``code`` as it appears in the path (not yet normalised), the
    short-link ``prefix`` it came under (``/s/``, ``/S/``...), the ``channel`` that
    prefix implies (None: the tag's kind decides), the HTTP ``method``, the parsed
    ``client`` address, the header values that matter (None when absent; at most
    :data:`MAX_HEADER_CHARS` characters, NULs removed), the raw ``query_string`` and
    ``received_at`` (aware UTC)."""

    code: str
    prefix: str
    channel: str | None
    method: str
    client: ClientAddress
    received_at: dt.datetime
    query_string: str = ""
    user_agent: str | None = None
    accept_language: str | None = None
    sec_purpose: str | None = None
    purpose: str | None = None
    x_purpose: str | None = None
    x_moz: str | None = None
    cookie: str | None = None

    @classmethod
    def from_http(
        cls,
        *,
        code: str,
        prefix: str,
        channel: str | None,
        method: str,
        client_host: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        query_string: bytes,
        received_at: dt.datetime,
    ) -> ScanRequest:
        """Build from raw HTTP parts (``headers`` as ASGI gives them: lower-case names,
        latin-1 values). The first occurrence of a header wins."""
        values: dict[str, str] = {}
        for name, raw in headers:
            field = _HEADERS.get(name)
            if field is not None and field not in values:
                if len(raw) <= MAX_HEADER_CHARS and b"\x00" not in raw:
                    values[field] = raw.decode("latin-1")  # the usual header: as is
                else:
                    values[field] = (
                        bytes(raw[: MAX_HEADER_CHARS * 2])
                        .decode("latin-1")
                        .replace("\x00", "")[:MAX_HEADER_CHARS]
                    )
        return cls(
            code=code,
            prefix=prefix,
            channel=channel,
            method=method,
            client=parse_client(client_host) if client_host else NO_ADDRESS,
            received_at=received_at,
            query_string=query_string[: MAX_HEADER_CHARS * 4].decode("latin-1"),
            **values,
        )
