"""The OpenAPI description of ``GET|HEAD /s/{code}``.

Short links are answered by :class:`api.scan_endpoint.ScanEndpoint`, a plain ASGI handler
in front of FastAPI, so no FastAPI route serves them. The route below only puts the path in
the OpenAPI document; requests never reach it (the scan endpoint takes every GET and HEAD
under ``/s/`` first).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from api.errors import problem_responses

router = APIRouter(tags=["short links"])

_HTML = {"text/html": {"schema": {"type": "string"}}}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "HTML consent page, for a person's scan of a campaign with "
        "`precise_location: ask`: asks the browser's position once, posts it to "
        "`/s/{click_id}/location`, then goes on to the same destination as the 302 "
        "(also on refusal, error, 4 s without answer, or without JavaScript). Strict "
        "`Content-Security-Policy` (nonce), `X-Content-Type-Options: nosniff`, "
        "`Referrer-Policy: no-referrer`; French or English by `Accept-Language`.",
        "content": _HTML,
    },
    302: {
        "description": "Found: go to the destination. `Location` is the campaign's (or "
        "tag's) destination with UTM parameters and the click id `pcid` appended; "
        "`Cache-Control: no-store`, empty body. Never 301, so printed codes stay "
        "re-pointable and every scan is counted.",
        "headers": {
            "Location": {
                "description": "Destination with `utm_*` and `pcid` query parameters",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    },
    404: {
        "description": "HTML page: unknown, malformed or disabled code, or deleted campaign",
        "content": _HTML,
    },
    410: {
        "description": "HTML page: the campaign is outside its schedule and has no fallback URL",
        "content": _HTML,
    },
    **problem_responses("unavailable"),
}


@router.get(
    "/s/{code}",
    status_code=302,
    response_class=Response,
    responses=_RESPONSES,
    summary="Follow a short link (a scan)",
)
async def scan(
    code: Annotated[
        str,
        Path(
            description="The tag's code: 8 Crockford base32 characters, case-insensitive "
            "(`I`/`L` read as `1`, `O` as `0`); `/S/CODE`, the QR form, works the same.",
            examples=["7KQ2M9XD"],
        ),
    ],
) -> None:
    """Record a scan and redirect the phone. Public, no API key. Bots, link previewers
    and `HEAD` requests are redirected too, and counted apart in the stats."""
    raise RuntimeError("GET /s/{code} is served by api.scan_endpoint.ScanEndpoint")
