"""The public, unauthenticated hot path: ``GET /s/{code}`` (QR scans)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from api.guards import public_rate_limit
from api.metrics import Metrics
from api.pages import gone_page, not_found_page
from campaigns.models import utcnow
from campaigns.scanning.service import ScanService

#: Every public endpoint goes on this router, so each gets the same rate limit.
router = APIRouter(tags=["public"], dependencies=[Depends(public_rate_limit)])

_REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.api_route("/s/{code}", methods=["GET", "HEAD"], include_in_schema=True)
async def scan(code: str, request: Request) -> Response:
    """Resolve a scanned code and answer ``302 Found`` to its destination with UTM
    parameters and the click id (``pcid``). Never 301: printed codes must stay
    re-pointable and every scan countable. 404 page for unknown codes, 410 page for a
    campaign outside its schedule without a fallback URL. ``HEAD`` is redirected and
    recorded as a non-human scan."""
    scans: ScanService = request.app.state.scans
    metrics: Metrics = request.app.state.metrics
    now = utcnow()
    resolution = scans.resolve(code, now=now)
    if resolution is None:
        metrics.responses.labels("404").inc()
        return not_found_page()
    if resolution.destination is None:
        metrics.responses.labels("410").inc()
        return gone_page()
    channel = "qr" if resolution.tag.kind == "qr" else "nfc"
    url, record = await scans.record(
        resolution,
        now=now,
        channel=channel,
        method=request.method,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    metrics.scans.labels(channel, resolution.outcome, "true" if record.is_bot else "false").inc()
    metrics.responses.labels("302").inc()
    return RedirectResponse(url, status_code=302, headers=_REDIRECT_HEADERS)
