"""QR artwork of tags: ``GET /v1/tags/{id}/qr``.

No request holds a database connection while it waits for a render: the API key is
checked in its own unit of work (:data:`ReleasedOrganizationId`), the tag and logo are
loaded in another short one, and only then is the render queued in the app's
:class:`~campaigns.payloads.rendering.RenderPool` (bounded, fair between
organizations; 503 ``render_busy`` with ``Retry-After`` when full).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CAMPAIGNS_READ, ReleasedOrganizationId, SessionFactory, SettingsDep
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.db import unit_of_work
from campaigns.errors import NotFound
from campaigns.payloads import artwork, qr
from campaigns.payloads.logo import Logo
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.links import qr_url
from campaigns.services import logos
from campaigns.services import tags as service

router = APIRouter(tags=["tags"], route_class=CheckedRoute)

#: The image of a tag never changes (its code and the short-link origin are fixed), but
#: it is per organization and the tag may be deleted: cache privately, for a day.
CACHE_CONTROL = "private, max-age=86400"
_COLOUR = r"^#?[0-9A-Fa-f]{6}$"

_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The QR symbol.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    304: {"description": "Not modified (``If-None-Match`` matched the ``ETag``)."},
    **problem_responses(
        "tag_not_found",
        "logo_not_found",
        "qr_content_too_long",
        "validation_error",
        "too_small_to_scan",
        "low_contrast",
        "inverted_colours",
        "render_busy",
    ),
}


def style_params(
    fmt: Annotated[artwork.Format, Query(alias="format")] = "png",
    size: Annotated[
        int | None,
        Query(
            ge=artwork.MIN_SIZE,
            le=artwork.MAX_SIZE,
            description="PNG width in pixels, rounded up to whole pixels per module "
            "(default 512; exclusive with size_mm).",
        ),
    ] = None,
    size_mm: Annotated[
        float | None,
        Query(
            gt=0,
            le=artwork.MAX_SIZE_MM,
            description="Printed width in millimetres, quiet zone included; a module must "
            "be at least 0.4 mm (else 422 too_small_to_scan with min_size_mm).",
        ),
    ] = None,
    dpi: Annotated[
        int,
        Query(ge=artwork.MIN_DPI, le=artwork.MAX_DPI, description="PNG resolution for size_mm."),
    ] = artwork.DEFAULT_DPI,
    ecc: Annotated[
        qr.EccLevel,
        Query(description="Error correction level (ISO/IEC 18004 §7.5.1); H with a logo."),
    ] = qr.DEFAULT_ECC,
    border: Annotated[
        int,
        Query(
            ge=qr.MIN_BORDER,
            le=qr.MAX_BORDER,
            description="Quiet zone in modules (at least 4, ISO/IEC 18004 §6.3.8).",
        ),
    ] = qr.DEFAULT_BORDER,
    fg: Annotated[str, Query(pattern=_COLOUR, description="Module colour, #RRGGBB.")] = "000000",
    bg: Annotated[str, Query(pattern=_COLOUR, description="Background, #RRGGBB.")] = "FFFFFF",
    allow_inverted: Annotated[
        bool, Query(description="Allow light modules on a dark background.")
    ] = False,
    caption: Annotated[
        str | None,
        Query(max_length=artwork.MAX_CAPTION, description="One line of text under the code."),
    ] = None,
    logo: Annotated[
        bool,
        Query(description="The organization's logo in the centre (PUT /v1/organization/logo)."),
    ] = False,
) -> artwork.Style:
    """The artwork parameters shared by every printing route, as a :class:`Style`."""
    return artwork.Style(
        fmt=fmt,
        ecc=ecc,
        border=border,
        size=size,
        size_mm=size_mm,
        dpi=dpi,
        fg=fg,
        bg=bg,
        allow_inverted=allow_inverted,
        caption=caption,
        logo=logo,
    )


async def load_logo(session: AsyncSession, *, organization_id: int, wanted: bool) -> Logo | None:
    """The organization's logo when ``wanted``. Raises :class:`NotFound`
    (``logo_not_found``) when wanted and none was uploaded."""
    if not wanted:
        return None
    logo = await logos.get_logo(session, organization_id=organization_id)
    if logo is None:
        raise NotFound(
            "The organization has no logo; upload one with PUT /v1/organization/logo",
            code="logo_not_found",
        )
    return logo


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag equal under weak comparison."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


StyleDep = Annotated[artwork.Style, Depends(style_params)]


@router.get(
    "/v1/tags/{tag_id}/qr",
    dependencies=[CAMPAIGNS_READ],
    response_class=Response,
    responses=_IMAGE_RESPONSES,
    summary="QR code of a tag",
)
async def get_tag_qr(
    tag_id: int,
    request: Request,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    settings: SettingsDep,
    style: StyleDep,
) -> Response:
    """The tag's ``qr_content`` as print-ready PNG, SVG or PDF artwork (see
    :mod:`campaigns.payloads.artwork`). Strong ``ETag``; ``If-None-Match`` answers 304
    without rendering. 404 ``tag_not_found`` for another organization's tag."""
    async with unit_of_work(sessions) as session:
        tag = await service.get_tag(session, organization_id=organization_id, tag_id=tag_id)
        logo = await load_logo(session, organization_id=organization_id, wanted=style.logo)
    # The unit of work is over: nothing below holds a connection.
    content = qr_url(settings.short_link_origin, tag.code)
    style = artwork.check_style(content, style)
    etag = artwork.artwork_etag(content, style, logo.sha256 if logo else None)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    pool: RenderPool = request.app.state.render_pool
    image = await pool.run_cached(
        etag, organization_id, artwork.render_artwork, content, style, logo
    )
    headers["Content-Disposition"] = f'inline; filename="{tag.code}.{style.fmt}"'
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(image, media_type=artwork.MEDIA_TYPES[style.fmt], headers=headers)
