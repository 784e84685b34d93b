"""Printing: the organization's logo, a campaign's artwork as a streamed zip, label
sheets. Like ``/v1/tags/{id}/qr``, these routes hold no database connection while they
wait for the render pool (see :mod:`api.routers.qr`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import (
    ADMIN,
    CAMPAIGNS_READ,
    ReleasedOrganizationId,
    SessionFactory,
    SettingsDep,
    audited_unit_of_work,
)
from api.errors import problem_responses
from api.routers.qr import StyleDep, load_logo
from api.routing import CheckedRoute
from campaigns.db import unit_of_work
from campaigns.errors import DomainError
from campaigns.payloads import artwork, logo, qr, sheets
from campaigns.payloads.exports import stream_print_zip
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.links import largest_qr_url, qr_url, short_url
from campaigns.services import logos, printing

router = APIRouter(tags=["printing"], route_class=CheckedRoute)


class UnsupportedMediaType(DomainError):
    """The request body's ``Content-Type`` is not one this route accepts (415)."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class LogoRead(BaseModel):
    """The stored logo: its media type, size in bytes and SHA-256 (hex)."""

    media_type: str = Field(description="`image/png` or `image/svg+xml`", examples=["image/png"])
    size_bytes: int = Field(description="Size of the stored file, bytes", examples=[18422])
    sha256: str = Field(
        description="SHA-256 of the file, hex",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )


@router.put(
    "/v1/organization/logo",
    dependencies=[ADMIN],
    response_model=LogoRead,
    summary="Upload the organization's logo (PNG or SVG body)",
    responses=problem_responses("unsupported_media_type", "invalid_logo", "payload_too_large"),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/svg+xml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def put_logo(
    request: Request, organization_id: ReleasedOrganizationId, sessions: SessionFactory
) -> LogoRead:
    """Store the logo used by ``logo=true`` (replacing any previous one). The body is
    the image, declared by ``Content-Type: image/png`` or ``image/svg+xml`` (else 415).
    422 ``invalid_logo`` for anything that is not a safe image (see
    :mod:`campaigns.payloads.logo`); nothing is stored then."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in logo.LOGO_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Send the logo as {' or '.join(logo.LOGO_MEDIA_TYPES)}, not {media_type or 'nothing'}"
        )
    upload = logo.Logo(media_type=media_type, content=await request.body())
    pool: RenderPool = request.app.state.render_pool
    # Decoding an untrusted image is CPU work: in the pool, outside any transaction.
    await pool.run(organization_id, logo.validate_logo, upload)
    async with audited_unit_of_work(request, sessions) as session:
        await logos.put_logo(session, organization_id=organization_id, logo=upload)
    return LogoRead(media_type=media_type, size_bytes=len(upload.content), sha256=upload.sha256)


def _sample_content(origin: str) -> str:
    # Codes have the same length but not the same QR version (digit runs may use the
    # denser numeric mode): checking the largest symbol covers the whole export.
    return largest_qr_url(origin)


@router.get(
    "/v1/campaigns/{campaign_id}/print.zip",
    dependencies=[CAMPAIGNS_READ],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One artwork file per QR tag and manifest.csv (streamed).",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(
            "campaign_not_found",
            "logo_not_found",
            "validation_error",
            "too_small_to_scan",
            "low_contrast",
            "inverted_colours",
            "render_busy",
        ),
    },
    summary="All of a campaign's QR artwork as a zip",
)
async def get_print_zip(
    campaign_id: int,
    request: Request,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    settings: SettingsDep,
    style: StyleDep,
) -> StreamingResponse:
    """``{store}_{label}_{code}.{ext}`` per QR tag in the artwork style of
    ``/v1/tags/{id}/qr`` (same parameters), plus ``manifest.csv`` (``code, short_url,
    store, label, kind, file, ndef_hex``; NFC tags are rows without a file). Streamed
    while rendering; errors in the parameters are answered before the stream starts."""
    origin = settings.short_link_origin
    style = artwork.check_style(_sample_content(origin), style)
    async with unit_of_work(sessions) as session:
        items = await printing.load_print_items(
            session, organization_id=organization_id, campaign_id=campaign_id
        )
        stored_logo = await load_logo(session, organization_id=organization_id, wanted=style.logo)
    pool: RenderPool = request.app.state.render_pool
    pool.check_capacity(organization_id)
    body = stream_print_zip(
        pool, owner=organization_id, items=items, origin=origin, style=style, logo=stored_logo
    )
    filename = f"campaign-{campaign_id}-{style.fmt}.zip"
    return StreamingResponse(
        body,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    "/v1/campaigns/{campaign_id}/sheets.pdf",
    dependencies=[CAMPAIGNS_READ],
    response_class=Response,
    responses={
        200: {
            "description": "Label sheets (vector PDF).",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(
            "campaign_not_found",
            "logo_not_found",
            "validation_error",
            "too_small_to_scan",
            "low_contrast",
            "inverted_colours",
            "render_busy",
            "too_many_labels",
        ),
    },
    summary="Printable label sheets of a campaign's QR tags",
)
async def get_sheets(
    campaign_id: int,
    request: Request,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    settings: SettingsDep,
    paper: Annotated[sheets.Paper, Query(description="A4 or Letter.")] = "A4",
    layout: Annotated[
        str, Query(max_length=5, description="Labels per page, COLUMNSxROWS, e.g. 3x8.")
    ] = "3x8",
    caption: Annotated[
        str | None,
        Query(
            max_length=artwork.MAX_CAPTION,
            description="Text on every label (default: each tag's label).",
        ),
    ] = None,
    ecc: Annotated[qr.EccLevel, Query(description="Error correction level.")] = qr.DEFAULT_ECC,
    border: Annotated[
        int, Query(ge=qr.MIN_BORDER, le=qr.MAX_BORDER, description="Quiet zone in modules.")
    ] = qr.DEFAULT_BORDER,
) -> Response:
    """Every QR tag of the campaign on label sheets: the code, the caption (or the tag's
    label) and the short link in clear text, crop-safe margins (see
    :mod:`campaigns.payloads.sheets`). 422 ``too_small_to_scan`` (with
    ``min_size_mm``) when the layout is too dense, ``too_many_labels`` past 1000."""
    origin = settings.short_link_origin
    async with unit_of_work(sessions) as session:
        items = await printing.load_print_items(
            session, organization_id=organization_id, campaign_id=campaign_id
        )
    qr_items = [item for item in items if item.kind == "qr"]
    sheet = sheets.check_layout(
        _sample_content(origin),
        paper=paper,
        layout=layout,
        ecc=ecc,
        border=border,
        labels=len(qr_items),
        caption=caption,
    )
    labels = [
        sheets.SheetLabel(
            content=qr_url(origin, item.code),
            caption=caption if caption is not None else (item.label or ""),
            short_text=short_url(origin, item.code).partition("://")[2],
        )
        for item in qr_items
    ]
    pool: RenderPool = request.app.state.render_pool
    pdf: Any = await pool.run(organization_id, sheets.render_sheets, labels, sheet)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="campaign-{campaign_id}-labels.pdf"',
            "X-Content-Type-Options": "nosniff",
        },
    )
