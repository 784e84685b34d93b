"""ASGI middleware: request header and body size limits, the client behind proxies."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from geo.forwarded import TrustedProxies, client_address, parse_address

#: Peers whose trust was decided, remembered (bounded): proxies are few, clients many.
_PEER_MEMO_MAX = 4096


class BodySizeLimit:
    """Answer 413 ``payload_too_large`` (problem+json) when a request body exceeds
    ``max_bytes`` (or ``path_limits[path]`` for the paths listed), whether announced by
    ``Content-Length`` or streamed in chunks."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope["path"], self.max_bytes)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(scope, send, max_bytes)
                    return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # Tell the app the client left, so it never acts on a partial body;
                    # whatever it answers is replaced by the 413.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(scope, send, max_bytes)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, scope: Scope, send: Send, max_bytes: int) -> None:
        response = problem(
            413,
            detail=f"Request bodies are limited to {max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


def header_bytes(scope: Scope) -> int:
    """Size of the request headers as sent on the wire (HTTP/1.1): name, value and 4 bytes
    (``": "`` and CRLF) per header, in bytes."""
    return sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


async def reject_large_headers(scope: Scope, send: Send, *, max_bytes: int) -> bool:
    """Answer 431 ``headers_too_large`` (problem+json, RFC 6585 §5) and return True when
    the headers of ``scope`` exceed ``max_bytes``; return False (and send nothing)
    otherwise. For ASGI handlers that bypass :class:`HeaderSizeLimit`."""
    if header_bytes(scope) <= max_bytes:
        return False
    await _headers_too_large(scope, send, max_bytes=max_bytes)
    return True


async def _headers_too_large(
    scope: Scope, send: Send, *, max_bytes: int, headers: dict[str, str] | None = None
) -> None:
    response = problem(
        431,
        detail=f"Request headers are limited to {max_bytes} bytes in total; send fewer "
        "or smaller headers (cookies included)",
        headers={"Connection": "close", **(headers or {})},
    )
    await response(scope, _disconnected, send)


class HeaderSizeLimit:
    """Answer 431 ``headers_too_large`` when a request's headers exceed ``max_bytes`` in
    total (see :func:`header_bytes`), on every path."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await reject_large_headers(
            scope, send, max_bytes=self.max_bytes
        ):
            return
        await self.app(scope, receive, send)


class ForwardedFor:
    """Set ``scope["client"]`` to the client's address, for every path (the scan path,
    the location beacon's limit, the API): the socket peer, or, when the peer is in
    ``trusted``, the right-most address of ``X-Forwarded-For`` that is not a trusted
    proxy (:func:`geo.forwarded.client_address`; a spoofed left-most entry never wins).
    The one place proxy headers are read: uvicorn runs with ``proxy_headers`` off so that
    the same ranges (``PASSERELLE_FORWARDED_ALLOW_IPS``) decide everywhere. The client's
    port is kept when the peer is the client, 0 otherwise (a proxy hides it)."""

    def __init__(self, app: ASGIApp, *, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted
        self._trusted_peers: dict[str, bool] = {}

    def _is_trusted(self, peer: str) -> bool:
        known = self._trusted_peers.get(peer)
        if known is None:
            ip = parse_address(peer)
            known = ip is not None and ip in self.trusted
            if len(self._trusted_peers) >= _PEER_MEMO_MAX:
                self._trusted_peers.clear()
            self._trusted_peers[peer] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            values = [
                value.decode("latin-1")
                for name, value in scope.get("headers", ())
                if name == b"x-forwarded-for"
            ]
            scope = self.with_client(scope, values)
        await self.app(scope, receive, send)

    def with_client(self, scope: Scope, forwarded_for: list[str]) -> Scope:
        """``scope``, or a copy of it with the client behind trusted proxies, given the
        values of its ``X-Forwarded-For`` headers in order (latin-1 decoded)."""
        client = scope.get("client")
        if forwarded_for and client and self._is_trusted(client[0]):
            address = client_address(client[0], forwarded_for, self.trusted)
            if address is not None and address != client[0]:
                scope = dict(scope)
                scope["client"] = (address, 0)
        return scope


class HeadersAndClient:
    """:class:`HeaderSizeLimit` then :class:`ForwardedFor`, in one pass over the headers
    (both run on every request, each scan included): the same answers, the 431 first,
    with ``extra_headers`` (HSTS when the base URL is https: this answer is sent before
    :class:`api.security_headers.SecurityHeaders` could add it)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        trusted: TrustedProxies,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.forwarded = ForwardedFor(app, trusted=trusted)
        self.extra_headers = extra_headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            size = 0
            forwarded_for: list[str] = []
            for name, value in scope.get("headers", ()):
                size += len(name) + len(value) + 4  # as header_bytes
                if name == b"x-forwarded-for":
                    forwarded_for.append(value.decode("latin-1"))
            if kind == "http" and size > self.max_bytes:
                await _headers_too_large(
                    scope, send, max_bytes=self.max_bytes, headers=self.extra_headers
                )
                return
            scope = self.forwarded.with_client(scope, forwarded_for)
        await self.app(scope, receive, send)
