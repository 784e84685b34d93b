"""The HTTP server protocol: uvicorn's httptools protocol with a request read timeout, and
a problem+json answer to requests it cannot parse.

uvicorn closes idle keep-alive connections, but not a connection that sends nothing, or
sends its request head (or body) a few bytes at a time ("slowloris"): each such client
would hold a connection slot forever. This protocol closes a connection whose request is
not fully received within ``read_timeout_s`` seconds of its first byte, or of the
connection being opened. A reverse proxy in front (nginx ``client_header_timeout``,
``client_body_timeout``) does the same job at the edge.

A request httptools cannot parse (a control character in a header, a request line or
header over its limits, a malformed request line) never reaches the app: uvicorn answers
it with a plain-text 400 of its own. This protocol answers it as every other error is
answered: ``400 bad_request`` as ``application/problem+json`` with the security headers
of :mod:`api.security_headers` (HSTS when the base URL is https), then closes.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.security_headers import LOCKED_DOWN_HEADERS, hsts_header
from campaigns.settings import get_settings

#: ``detail`` of the 400 answered to a request that cannot be parsed.
UNPARSEABLE_REQUEST_DETAIL = (
    "The HTTP request cannot be parsed: a malformed request line or header, a control "
    "character in a header, or a URL or header over the server's limits"
)


@functools.lru_cache(maxsize=4)
def bad_request_response(base_url: str) -> bytes:
    """The whole HTTP/1.1 response (status line, headers, body) sent to a request that
    cannot be parsed: ``400 bad_request`` problem+json with the security headers, HSTS
    when ``base_url`` is https, ``Connection: close``. Built once per base URL."""
    body = json.dumps(
        {
            "type": "urn:passerelle:problem:bad_request",
            "title": "Bad request",
            "status": 400,
            "detail": UNPARSEABLE_REQUEST_DETAIL,
            "code": "bad_request",
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        **LOCKED_DOWN_HEADERS,
        **hsts_header(base_url),
        "Content-Type": "application/problem+json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return b"HTTP/1.1 400 Bad Request\r\n" + head.encode("ascii") + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus the read timeout described in the module
    (``PASSERELLE_REQUEST_READ_TIMEOUT_S``, seconds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.read_timeout_s = settings.request_read_timeout_s
        self.base_url = settings.base_url
        self._read_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # Between requests uvicorn's own keep-alive timeout applies.
        self._disarm()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request httptools cannot parse (uvicorn calls this with its own
        message, which is not sent): :func:`bad_request_response`, then close."""
        self._disarm()
        self.transport.write(bad_request_response(self.base_url))
        self.transport.close()
