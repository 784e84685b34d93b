"""The public hot path, ``GET|HEAD /s/{code}`` and every other short-link prefix.

:class:`ShortLinks` runs in front of FastAPI (see :func:`api.app.served_app`):
a scan needs no routing, body parsing, dependency injection nor error middleware, and
skipping that machinery leaves the CPU for the work that matters (resolving from memory
and the durable group commit). Every other request goes on to FastAPI's full stack.

Prefixes are served from one table, :data:`SHORT_LINKS` (prefix -> route): ``/s/`` (and
``/S/`` of QR codes) and ``/n/``, the tap URL of NTAG 424 DNA tags (``?e=&c=``, the SUN
message, verified by the NFC verification step; channel ``nfc``). The request becomes one
:class:`~campaigns.scanning.request.ScanRequest`; the scan steps do the rest.

Answers: ``302 Found`` (never 301: printed codes must stay re-pointable and every scan
countable) with ``Cache-Control: no-store``, or, for a person's scan of a campaign with
``precise_location = ask``, a 200 consent page that goes on to the same URL
(:func:`api.pages.location_page`); an HTML 404 page for unknown, malformed or
disabled codes; an HTML 410 page for a campaign outside its schedule without a fallback
URL; an HTML 403 page (no ``Location``) for an NFC tap whose SUN message failed or was
replayed when its campaign's ``nfc_invalid_tap`` is ``block`` (the tap is stored all the
same); 503 problem+json with ``Retry-After`` when the scan cannot be stored (the writer's
queue and spool past their bounds, or neither the database nor the disk took it). Never
429: a person is never refused a redirect; a scan past the per-client rate is stored
with ``burst = true`` (floods are stopped at the edge: docs/SCALING.md).

Visitor cookie (:mod:`campaigns.scanning.cookies`): for an organization with
``visitor_cookie`` on, a person's scan without a valid visitor cookie gets one
(``Set-Cookie`` on whatever answers it: the 302, the location consent page, the 403), or,
under ``visitor_cookie_consent = ask``, a ``GET`` gets the cookie consent page
(:func:`api.pages.cookie_consent_page`) instead of the redirect. Organizations without
it: no cookie is read nor set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error, problem
from api.metrics import Metrics
from api.pages import (
    cookie_consent_page,
    gone_page,
    location_page,
    not_found_page,
    page_language,
    tap_again_page,
    with_headers,
)
from api.security_headers import LOCKED_DOWN_HEADERS, hsts_header, hsts_headers
from campaigns.models import utcnow
from campaigns.scanning.nfc import is_blocked
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.service import ScanService
from campaigns.scanning.writer import WriterOverloaded

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShortLinkRoute:
    """A short-link prefix: ``channel`` the scans it serves come from (None: the tag's
    kind decides, ``qr`` or ``nfc``) and the HTTP ``methods`` it answers (others go on
    to FastAPI, e.g. ``POST /s/{click_id}/location``)."""

    channel: str | None = None
    methods: frozenset[str] = frozenset({"GET", "HEAD"})


_SCAN = ShortLinkRoute()
#: Every public short-link prefix. QR codes carry ``/S/`` (upper case, for the QR
#: alphanumeric mode; see links.qr_url).
SHORT_LINKS: dict[str, ShortLinkRoute] = {
    "/s/": _SCAN,
    "/S/": _SCAN,
    "/n/": ShortLinkRoute(channel="nfc"),
}

_REDIRECT_HEADERS = [
    (b"cache-control", b"no-store"),
    *((name.lower().encode(), value.encode()) for name, value in LOCKED_DOWN_HEADERS.items()),
    (b"content-length", b"0"),
]
_NOT_FOUND = not_found_page()
_GONE = gone_page()
_TAP_AGAIN = tap_again_page()


class ShortLinks:
    """ASGI application serving :data:`SHORT_LINKS`; ``app`` handles everything else.

    Reads the scan runtime and metrics from ``state`` (``scans``, ``metrics``), set up by
    :func:`api.app.create_app` and its lifespan.
    """

    def __init__(
        self, app: ASGIApp, *, state: Any, routes: dict[str, ShortLinkRoute] | None = None
    ) -> None:
        self.app = app
        self.state = state
        self.routes = SHORT_LINKS if routes is None else routes
        # Security headers that depend on settings (HSTS when BASE_URL is https), computed
        # once here: a scan adds nothing per request (api/security_headers.py).
        self.hsts = hsts_headers(state.settings.base_url)
        #: HSTS for the problem documents (500, 503), which set the other headers.
        self.problem_headers = hsts_header(state.settings.base_url)
        self.redirect_headers = [*_REDIRECT_HEADERS, *self.hsts]
        # Each page in English and French, the security headers added once.
        self.not_found, self.gone, self.tap_again = (
            {lang: with_headers(page, self.hsts) for lang, page in pages.items()}
            for pages in (_NOT_FOUND, _GONE, _TAP_AGAIN)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            end = path.find("/", 1) + 1
            route = self.routes.get(path[:end]) if end else None
            # Every GET under a prefix is a scan: /s/CODE/ and the like get the HTML 404
            # page, not the API's JSON.
            if route is not None and scope["method"] in route.methods:
                await self._guarded_scan(scope, send, path[:end], route)
                return
        await self.app(scope, receive, send)

    async def _guarded_scan(
        self, scope: Scope, send: Send, prefix: str, route: ShortLinkRoute
    ) -> None:
        """:meth:`_scan`, answering 500 ``internal_error`` for a bug: this application sits
        outside Starlette's error middleware."""
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._scan(scope, tracked_send, prefix, route)
        except Exception as exc:
            if started:
                log.exception(
                    "scan failed after its answer started: %s %r", scope["method"], scope["path"]
                )
                raise  # the server closes the connection
            self.state.metrics.count_response(500)
            response = internal_error(
                scope["method"], scope["path"], exc, traceback=True, headers=self.problem_headers
            )
            await response(scope, _no_receive, send)

    async def _scan(self, scope: Scope, send: Send, prefix: str, route: ShortLinkRoute) -> None:
        scans: ScanService = self.state.scans
        metrics: Metrics = self.state.metrics
        client = scope.get("client")
        request = ScanRequest.from_http(
            code=scope["path"][len(prefix) :],
            prefix=prefix,
            channel=route.channel,
            method=scope["method"],
            client_host=client[0] if client else None,
            headers=scope["headers"],
            query_string=scope.get("query_string", b""),
            received_at=utcnow(),
        )
        resolution = scans.resolve(request)
        if resolution is None or resolution.destination is None:
            pages = self.not_found if resolution is None else self.gone
            page = pages[page_language(request.accept_language)]
            metrics.count_response(page.status_code)
            await page(scope, _no_receive, send)
            return
        try:
            url, record, cookie = await scans.record(request, resolution)
        except WriterOverloaded as exc:  # shedding load: queue and spool past their bounds
            await _unavailable(scope, send, metrics, exc.retry_after_s, self.problem_headers)
            return
        except (OSError, RuntimeError):
            log.exception("scan could not be stored")
            await _unavailable(scope, send, metrics, 1, self.problem_headers)
            return
        metrics.count_scan(record.channel, record.outcome, is_bot=record.is_bot)
        set_cookie: bytes | None = None
        if cookie == "set":
            assert record.cookie_id is not None
            set_cookie = scans.cookie_headers.visitor(record.cookie_id).encode("latin-1")
        if is_blocked(record):
            metrics.count_response(403)
            tap_again = self.tap_again[page_language(request.accept_language)]
            await _page(tap_again, scope, send, set_cookie)
            return
        asks_location = scans.asks_location(record, resolution)
        if cookie == "ask" and record.method == "GET":
            # visitor_cookie_consent = ask: the cookie is set only on the person's yes.
            metrics.count_response(200)
            tokens, org = scans.click_tokens, record.organization_id
            page = cookie_consent_page(
                destination=url,
                click_id=record.click_id,
                token=tokens.sign(
                    "consent",
                    click_id=record.click_id,
                    organization_id=org,
                    scanned_at=record.scanned_at,
                    bound=url,
                ),
                accept_language=request.accept_language,
                location_token=tokens.sign(
                    "location",
                    click_id=record.click_id,
                    organization_id=org,
                    scanned_at=record.scanned_at,
                )
                if asks_location
                else None,
                extra_headers=self.hsts,
            )
            await page(scope, _no_receive, send)
            return
        if asks_location:
            # precise_location = ask: the consent page, which goes on to the destination.
            metrics.count_response(200)
            page = location_page(
                destination=url,
                click_id=record.click_id,
                accept_language=request.accept_language,
                token=scans.click_tokens.sign(
                    "location",
                    click_id=record.click_id,
                    organization_id=record.organization_id,
                    scanned_at=record.scanned_at,
                ),
                extra_headers=self.hsts,
            )
            await _page(page, scope, send, set_cookie)
            return
        metrics.count_response(302)
        headers = [(b"location", url.encode("latin-1")), *self.redirect_headers]
        if set_cookie is not None:
            headers.append((b"set-cookie", set_cookie))
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


async def _page(page: Response, scope: Scope, send: Send, set_cookie: bytes | None) -> None:
    """Send ``page``, with the ``Set-Cookie`` value ``set_cookie`` when given (the
    shared page objects are never modified)."""
    if set_cookie is None:
        await page(scope, _no_receive, send)
        return

    async def with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"set-cookie", set_cookie)]}
        await send(message)

    await page(scope, _no_receive, with_cookie)


async def _unavailable(
    scope: Scope, send: Send, metrics: Metrics, retry_after_s: int, headers: dict[str, str]
) -> None:
    metrics.count_response(503)
    response = problem(
        503,
        detail="The scan could not be recorded; try again.",
        headers={"Retry-After": str(max(1, retry_after_s)), **headers},
    )
    await response(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # pages never read the request body
    return {"type": "http.disconnect"}
