"""NFC payloads of tags: ``GET /v1/tags/{id}/ndef`` and ``GET /v1/tags/{id}/sdm``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from api.deps import CAMPAIGNS_READ, OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.payloads import ndef
from campaigns.schemas import NdefRead, SdmKeyNumbers, SdmRead
from campaigns.services import tags as service

router = APIRouter(tags=["tags"], route_class=CheckedRoute)

NdefFormat = Literal["bin", "hex", "json"]

_NDEF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The NDEF message (``bin``, ``hex``) or its description (``json``).",
        "content": {
            "application/json": {"schema": NdefRead.model_json_schema()},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    **problem_responses("tag_not_found", "ndef_too_large", "sun_tag_uses_sdm", "validation_error"),
}


@router.get(
    "/v1/tags/{tag_id}/ndef",
    dependencies=[CAMPAIGNS_READ],
    response_class=Response,
    responses=_NDEF_RESPONSES,
    summary="NDEF payload of a plain NFC tag",
)
async def get_tag_ndef(
    tag_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
    fmt: Annotated[NdefFormat, Query(alias="format")] = "json",
    chip: Annotated[
        ndef.Chip, Query(description="NFC Forum Type 2 chip: sets the capacity checked.")
    ] = "ntag213",
    aar: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=ndef.ANDROID_PACKAGE_PATTERN,
            description="Android package for an Android Application Record. Phones "
            "without that app then open the Play Store instead of the browser.",
        ),
    ] = None,
) -> Response:
    """The NDEF message with one URI record for the tag's ``short_url`` (and an Android
    Application Record when ``aar`` is given): ``bin`` raw bytes, ``hex`` the same as
    upper-case hex text, ``json`` with the Type 2 TLV area (``tlv_hex``) and the chip's
    capacity. 422 ``ndef_too_large`` when the TLV area exceeds the chip, 422
    ``sun_tag_uses_sdm`` for an ``nfc_sun`` tag (see ``/sdm``)."""
    payload = await service.tag_ndef(
        session,
        organization_id=organization_id,
        tag_id=tag_id,
        origin=settings.short_link_origin,
        chip=chip,
        aar=aar,
    )
    headers = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
    if fmt == "bin":
        headers["Content-Disposition"] = f'attachment; filename="tag-{tag_id}.ndef"'
        return Response(payload.message, media_type="application/octet-stream", headers=headers)
    if fmt == "hex":
        return Response(payload.message.hex().upper(), media_type="text/plain", headers=headers)
    body = NdefRead(
        url=payload.url,
        ndef_hex=payload.message.hex().upper(),
        tlv_hex=payload.tlv.hex().upper(),
        size_bytes=len(payload.message),
        capacity_bytes=payload.capacity_bytes,
        chip=payload.chip,
    )
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


@router.get(
    "/v1/tags/{tag_id}/sdm",
    dependencies=[CAMPAIGNS_READ],
    response_model=SdmRead,
    summary="NTAG 424 DNA SDM settings",
    responses=problem_responses("tag_not_found", "not_sun_tag", "ndef_too_large"),
)
async def get_tag_sdm(
    tag_id: int, session: SessionDep, organization_id: OrganizationId, settings: SettingsDep
) -> SdmRead:
    """What a personalisation tool needs for an ``nfc_sun`` tag: the URL template, the
    NDEF file (``NLEN`` then the message, hex), the SDM offsets (bytes from the start of
    that file) and which key slot holds which key. Never the keys. 422 ``not_sun_tag``
    for a tag of another kind, 422 ``ndef_too_large`` when the configured base URL makes
    the file longer than the tag's 256 bytes."""
    tag, layout = await service.tag_sdm(
        session, organization_id=organization_id, tag_id=tag_id, origin=settings.short_link_origin
    )
    assert tag.nfc_uid is not None
    return SdmRead(
        uid=tag.nfc_uid.hex().upper(),
        url_template=layout.url_template,
        ndef_file_hex=layout.ndef_file.hex().upper(),
        picc_data_offset=layout.picc_data_offset,
        sdm_mac_input_offset=layout.sdm_mac_input_offset,
        sdm_mac_offset=layout.sdm_mac_offset,
        key_numbers=SdmKeyNumbers(**service.SDM_KEY_NUMBERS),
    )
