"""QR images of tags: ``GET /v1/tags/{id}/qr``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from campaigns.payloads import qr as payload
from campaigns.scanning.links import qr_url
from campaigns.services import tags as service

router = APIRouter(tags=["tags"])

#: The image of a tag never changes (its code and the short-link origin are fixed), but
#: it is per organization and the tag may be deleted: cache privately, for a day.
CACHE_CONTROL = "private, max-age=86400"

_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The QR symbol.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
        },
    },
    304: {"description": "Not modified (``If-None-Match`` matched the ``ETag``)."},
    **problem_responses("tag_not_found", "qr_content_too_long"),
}


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag equal under weak comparison."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@router.get(
    "/v1/tags/{tag_id}/qr",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
    summary="QR code of a tag",
)
async def get_tag_qr(
    tag_id: int,
    request: Request,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
    fmt: Annotated[payload.QrFormat, Query(alias="format")] = "png",
    size: Annotated[
        int,
        Query(
            ge=payload.MIN_SIZE,
            le=payload.MAX_SIZE,
            description="PNG width in pixels (rounded up to whole pixels per module).",
        ),
    ] = payload.DEFAULT_SIZE,
    ecc: Annotated[
        payload.EccLevel,
        Query(description="Error correction level (ISO/IEC 18004 §7.5.1)."),
    ] = payload.DEFAULT_ECC,
    border: Annotated[
        int,
        Query(
            ge=payload.MIN_BORDER,
            le=payload.MAX_BORDER,
            description="Quiet zone in modules (at least 4, ISO/IEC 18004 §6.3.8).",
        ),
    ] = payload.DEFAULT_BORDER,
) -> Response:
    """The tag's ``qr_content`` as a print-ready PNG or SVG (one module per mm).
    Strong ``ETag``; ``If-None-Match`` answers 304 without rendering. 404
    ``tag_not_found`` for another organization's tag."""
    tag = await service.get_tag(session, organization_id=organization_id, tag_id=tag_id)
    content = qr_url(settings.short_link_origin, tag.code)
    etag = payload.qr_etag(content, fmt=fmt, size=size, ecc=ecc, border=border)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    rendered = await payload.render_qr(content, fmt=fmt, size=size, ecc=ecc, border=border)
    headers["Content-Disposition"] = f'inline; filename="{tag.code}.{fmt}"'
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)
