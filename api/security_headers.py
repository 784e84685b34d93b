"""Security headers of every response (issue 12): ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer`` (a destination must not learn the short link's path
beyond what UTM says), a ``Content-Security-Policy`` and, when ``BASE_URL`` is https,
``Strict-Transport-Security``.

Where they are set:

- the scan path (:mod:`api.scan_endpoint`): header tuples computed once, when
  :class:`~api.scan_endpoint.ShortLinks` is built; nothing is added per scan;
- the pages of :mod:`api.pages`: in their (precomputed) headers; the 404/410/403 pages'
  inline style is allowed by its SHA-256 (CSP Level 3 §8.3 hash sources), the consent
  page's by a fresh nonce;
- problem+json documents (:func:`api.errors.problem`): in their headers, HSTS added
  (:func:`hsts_header`) by those answered before :class:`SecurityHeaders` (the scan
  path's 500 and 503, the 431 of :class:`api.middleware.HeadersAndClient`);
- every other response of the FastAPI app: :class:`SecurityHeaders`, which adds what a
  response lacks. The interactive docs (``/docs``, ``/redoc``) load Swagger UI and ReDoc
  with inline scripts, so they get no CSP.

HSTS: ``max-age`` one year, without ``includeSubDomains`` (the operator's other
subdomains are not ours to pin) nor ``preload`` (RFC 6797 §6.1).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The CSP of a response that is not a page: nothing may load, nothing may frame it.
LOCKED_DOWN_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#: ``Strict-Transport-Security`` value (seconds: one year).
HSTS = "max-age=31536000"

#: Headers every public response carries, whatever its kind (str pairs, for Starlette).
COMMON_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The same with the locked-down CSP, for responses that are not pages.
LOCKED_DOWN_HEADERS: dict[str, str] = {
    **COMMON_HEADERS,
    "Content-Security-Policy": LOCKED_DOWN_CSP,
}

#: Paths served with their own scripts (Swagger UI, ReDoc and their files): no CSP.
_DOCS_PREFIXES = ("/docs", "/redoc", "/static-offline-docs")


def is_https(base_url: str) -> bool:
    """Whether ``base_url`` (``PASSERELLE_BASE_URL``) is served over https."""
    return urlsplit(base_url).scheme.lower() == "https"


def hsts_headers(base_url: str) -> list[tuple[bytes, bytes]]:
    """``[(b"strict-transport-security", ...)]`` when ``base_url`` is https, else ``[]``
    (HSTS over plain http is ignored by browsers, RFC 6797 §8.1, and would be a lie)."""
    return [(b"strict-transport-security", HSTS.encode())] if is_https(base_url) else []


def hsts_header(base_url: str) -> dict[str, str]:
    """``{"Strict-Transport-Security": ...}`` when ``base_url`` is https, else ``{}``:
    for the problem documents answered outside :class:`SecurityHeaders` (the scan path's
    500 and 503, the 431 of oversized headers), whose other headers
    :func:`api.errors.problem` sets."""
    return {"Strict-Transport-Security": HSTS} if is_https(base_url) else {}


class SecurityHeaders:
    """ASGI middleware adding, to every response of ``app`` that lacks them,
    ``X-Content-Type-Options``, ``Referrer-Policy``, the locked-down CSP (not on the
    docs paths) and HSTS (when ``base_url`` is https). Not on the scan path: short links
    are answered before it (:func:`api.app.served_app`)."""

    def __init__(self, app: ASGIApp, *, base_url: str) -> None:
        self.app = app
        self.headers = [
            (name.lower().encode(), value.encode()) for name, value in LOCKED_DOWN_HEADERS.items()
        ] + hsts_headers(base_url)
        self.headers_without_csp = [h for h in self.headers if h[0] != b"content-security-policy"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = self.headers_without_csp if path.startswith(_DOCS_PREFIXES) else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
