"""The HTTP server protocol: uvicorn's httptools protocol with a request read timeout.

uvicorn closes idle keep-alive connections, but not a connection that sends nothing, or
sends its request head (or body) a few bytes at a time ("slowloris"): each such client
would hold a connection slot forever. This protocol closes a connection whose request is
not fully received within ``read_timeout_s`` seconds of its first byte, or of the
connection being opened. A reverse proxy in front (nginx ``client_header_timeout``,
``client_body_timeout``) does the same job at the edge.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from campaigns.settings import get_settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus the read timeout described in the module
    (``PASSERELLE_REQUEST_READ_TIMEOUT_S``, seconds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout_s = get_settings().request_read_timeout_s
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
