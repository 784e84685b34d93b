"""The public, unauthenticated hot path: ``GET /s/{code}`` (QR scans)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from api.pages import gone_page, not_found_page
from campaigns.models import utcnow
from campaigns.scanning.service import ScanService

router = APIRouter(tags=["public"])

_REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.api_route("/s/{code}", methods=["GET", "HEAD"], include_in_schema=True)
async def scan(code: str, request: Request) -> Response:
    """Resolve a scanned code and answer ``302 Found`` to its destination with UTM
    parameters and the click id (``pcid``). Never 301: printed codes must stay
    re-pointable and every scan countable. 404 page for unknown codes, 410 page for a
    campaign outside its schedule without a fallback URL. ``HEAD`` is redirected and
    recorded as a non-human scan."""
    scans: ScanService = request.app.state.scans
    now = utcnow()
    resolution = scans.resolve(code, now=now)
    if resolution is None:
        return not_found_page()
    if resolution.destination is None:
        return gone_page()
    url = await scans.record(
        resolution,
        now=now,
        channel=resolution.tag.kind if resolution.tag.kind == "qr" else "nfc",
        method=request.method,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    return RedirectResponse(url, status_code=302, headers=_REDIRECT_HEADERS)
