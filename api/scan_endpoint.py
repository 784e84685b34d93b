"""The public hot path, ``GET|HEAD /s/{code}``, as a plain ASGI handler.

It sits in front of FastAPI's router: a scan needs no body parsing, dependency
injection or validation beyond :func:`campaigns.scanning.links.normalize_code`, and
skipping that machinery leaves the CPU for the work that matters (resolving from memory
and the durable group commit). Every other path goes on to FastAPI unchanged.

Answers: ``302 Found`` (never 301: printed codes must stay re-pointable and every scan
countable) with ``Cache-Control: no-store``; an HTML 404 page for unknown, malformed or
disabled codes; an HTML 410 page for a campaign outside its schedule without a fallback
URL; 429 problem+json with ``Retry-After`` past the per-client rate limit; 503 when the
scan could be stored neither in the database nor in the spool.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem
from api.metrics import Metrics
from api.pages import gone_page, not_found_page
from campaigns.models import utcnow
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService

log = logging.getLogger(__name__)

PREFIX = "/s/"
#: QR codes carry ``/S/`` (upper case, for the alphanumeric mode; see links.qr_url).
_PREFIXES = (PREFIX, PREFIX.upper())
_REDIRECT_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-length", b"0"),
]
_NOT_FOUND = not_found_page()
_GONE = gone_page()


class ScanEndpoint:
    """ASGI middleware serving ``/s/{code}``; ``app`` handles everything else.

    Reads the scan runtime, metrics and rate limiter from ``scope["app"].state``
    (``scans``, ``metrics``, ``rate_limiter``), set up by :func:`api.app.create_app`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"][:3] not in _PREFIXES
        ):
            await self.app(scope, receive, send)
            return
        # Every GET under /s/ is a scan: /s/CODE/ and the like get the HTML 404 page,
        # not the API's JSON (other methods, e.g. POST /s/{click_id}/location, go on).
        await self._scan(scope, send, scope["path"][len(PREFIX) :])

    async def _scan(self, scope: Scope, send: Send, code: str) -> None:
        state = scope["app"].state
        scans: ScanService = state.scans
        metrics: Metrics = state.metrics
        limiter: RateLimiter | None = state.rate_limiter
        client = scope.get("client")
        ip: str | None = client[0] if client else None

        if limiter is not None and ip is not None:
            wait = limiter.check(ip)
            if wait:
                metrics.responses.labels("429").inc()
                retry_after = limiter.retry_after_header(wait)
                response = problem(
                    429,
                    detail=f"Too many requests; retry in {retry_after} s",
                    headers={"Retry-After": retry_after},
                )
                await response(scope, _no_receive, send)
                return

        now = utcnow()
        resolution = scans.resolve(code, now=now)
        if resolution is None or resolution.destination is None:
            page = _NOT_FOUND if resolution is None else _GONE
            metrics.responses.labels(str(page.status_code)).inc()
            await page(scope, _no_receive, send)
            return

        channel = "qr" if resolution.tag.kind == "qr" else "nfc"
        try:
            url, record = await scans.record(
                resolution,
                now=now,
                channel=channel,
                method=scope["method"],
                ip=ip,
                user_agent=_header(scope, b"user-agent"),
            )
        except (OSError, RuntimeError):
            log.exception("scan could not be stored")
            metrics.responses.labels("503").inc()
            response = problem(
                503,
                detail="The scan could not be recorded; try again.",
                headers={"Retry-After": "1"},
            )
            await response(scope, _no_receive, send)
            return
        metrics.scans.labels(
            channel, resolution.outcome, "true" if record.is_bot else "false"
        ).inc()
        metrics.responses.labels("302").inc()
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", url.encode("latin-1")), *_REDIRECT_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _no_receive() -> dict[str, Any]:  # pages never read the request body
    return {"type": "http.disconnect"}
