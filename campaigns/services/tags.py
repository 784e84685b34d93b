"""Tags: physical codes (QR prints, NFC stickers) of a campaign, and their NFC payloads."""

from __future__ import annotations

import os
from typing import Any, Final

from geoalchemy2.elements import WKBElement
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import Campaign, Organization, Tag, utcnow
from campaigns.payloads import keys as sun_keys
from campaigns.payloads import ndef
from campaigns.payloads.keys import SunKeys
from campaigns.scanning.links import new_code, short_url
from campaigns.schemas import NfcCreate, TagCreate, TagUpdate, shape_of_point
from campaigns.services.campaigns import MAX_ID, get_campaign, keyset_page
from campaigns.services.destinations import check_not_own_origin
from campaigns.services.locations import get_location
from geo.geojson import to_wkb_element

#: A fresh 40-bit code collides with an existing one with probability n / 2^40; retries
#: make a failure astronomically unlikely even with hundreds of millions of tags.
CODE_ATTEMPTS = 8
#: Key slots of an NTAG 424 DNA personalised for Passerelle, as in NXP AN12196 Rev. 1.5
#: §6.9 "Change NDEF File Settings" (SDMAccessRights F1 21: SDMCtrRet key 1, SDMMetaRead
#: key 2, SDMFileRead key 1). Key 0 is the application master key, which Passerelle
#: never needs.
SDM_KEY_NUMBERS: Final = {"app_master": 0, "sdm_meta_read": 2, "sdm_file_read": 1}


def sun_tap_base(origin: str, code: str) -> str:
    """``{origin}/n/{code}``: the tap URL of an NTAG 424 DNA tag, before its query."""
    return f"{origin.rstrip('/')}/n/{code}"


async def nfc_master_secret(
    session: AsyncSession, *, organization_id: int, secret_key: str
) -> bytes:
    """The organization's NFC master secret (32 bytes), created on first need. Concurrent
    first uses agree: the secret is set only where it is still NULL, then read back."""
    column = Organization.nfc_master_secret_encrypted
    query = select(column).where(Organization.id == organization_id)
    sealed = await session.scalar(query)
    if sealed is None:
        candidate = sun_keys.seal_master_secret(
            secret_key,
            organization_id=organization_id,
            master=os.urandom(sun_keys.MASTER_SECRET_BYTES),
        )
        await session.execute(
            update(Organization)
            .where(Organization.id == organization_id, column.is_(None))
            .values(nfc_master_secret_encrypted=candidate)
        )
        sealed = await session.scalar(query)
    if sealed is None:  # pragma: no cover - the organization row is gone
        raise NotFound(f"Organization {organization_id} not found")
    return sun_keys.unseal_master_secret(secret_key, organization_id=organization_id, sealed=sealed)


async def _sun_fields(
    session: AsyncSession, *, organization_id: int, nfc: NfcCreate, secret_key: str
) -> dict[str, object]:
    """The ``nfc_*`` columns of a new ``nfc_sun`` tag: supplied keys, or keys derived with
    the current derivation version."""
    uid = bytes.fromhex(nfc.uid)
    version: int | None = None
    if nfc.sdm_meta_read_key is not None and nfc.sdm_file_read_key is not None:
        keys = SunKeys(
            meta_read=bytes.fromhex(nfc.sdm_meta_read_key),
            file_read=bytes.fromhex(nfc.sdm_file_read_key),
        )
    else:
        master = await nfc_master_secret(
            session, organization_id=organization_id, secret_key=secret_key
        )
        version = sun_keys.current_derivation_version()
        keys = sun_keys.derive_sun_keys(master, uid, version=version)
    return {
        "nfc_uid": uid,
        "nfc_keys_encrypted": sun_keys.seal_sun_keys(
            secret_key, organization_id=organization_id, uid=uid, keys=keys
        ),
        "nfc_key_derivation_version": version,
    }


async def _placement(
    session: AsyncSession,
    *,
    organization_id: int,
    location_id: int | None,
    placement: dict[str, Any] | None,
) -> WKBElement | None:
    """The placement to store: the one given, else the location's point. Raises
    :class:`NotFound` ``location_not_found`` for a location of another organization."""
    if location_id is not None:
        location = await get_location(
            session, organization_id=organization_id, location_id=location_id
        )
        if placement is None:
            return location.point
    return to_wkb_element(shape_of_point(placement)) if placement is not None else None


async def create_tag(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    data: TagCreate,
    short_link_origin: str,
    secret_key: str,
) -> Tag:
    """Create a tag with a fresh random code, placed at ``data.location_id`` (its point
    unless ``data.placement`` is given). For kind ``nfc_sun`` the UID and the SDM keys
    (supplied, else derived) are stored, the keys sealed under ``secret_key``
    (``PASSERELLE_SECRET_KEY``); read them back once with :func:`tag_sun_keys`.

    Raises :class:`NotFound` for a campaign or a location of another organization, or a
    deleted campaign; :class:`InvalidInput` (``redirect_loop``) for a ``destination_url``
    on ``short_link_origin``; :class:`Conflict` ``nfc_uid_taken`` when another
    ``nfc_sun`` tag of the organization has the UID."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    check_not_own_origin(short_link_origin, destination_url=data.destination_url)
    placement = await _placement(
        session,
        organization_id=organization_id,
        location_id=data.location_id,
        placement=data.placement,
    )
    nfc_fields: dict[str, object] = {}
    if data.kind == "nfc_sun" and data.nfc is not None:
        nfc_fields = await _sun_fields(
            session, organization_id=organization_id, nfc=data.nfc, secret_key=secret_key
        )
    for _ in range(CODE_ATTEMPTS):
        tag = Tag(
            organization_id=organization_id,
            campaign_id=campaign_id,
            code=new_code(),
            kind=data.kind,
            label=data.label,
            destination_url=data.destination_url,
            location_id=data.location_id,
            placement=placement,
            **nfc_fields,
        )
        try:
            async with session.begin_nested():
                session.add(tag)
                await session.flush()
        except IntegrityError as exc:
            if "uq_tags_organization_id_nfc_uid" in str(exc.orig):
                raise Conflict(
                    "Another NFC tag of the organization has this uid", code="nfc_uid_taken"
                ) from None
            if "uq_tags_code" not in str(exc.orig):
                raise
            continue
        return tag
    raise RuntimeError("could not draw a unique tag code")  # pragma: no cover


def tag_sun_keys(tag: Tag, *, secret_key: str) -> SunKeys:
    """The SDM keys of an ``nfc_sun`` tag, unsealed. Raises ``ValueError`` for another
    kind, :class:`campaigns.crypto.SealedValueError` if they do not open."""
    if tag.nfc_uid is None or tag.nfc_keys_encrypted is None:
        raise ValueError("not an nfc_sun tag")
    return sun_keys.unseal_sun_keys(
        secret_key,
        organization_id=tag.organization_id,
        uid=tag.nfc_uid,
        sealed=tag.nfc_keys_encrypted,
    )


async def get_tag(session: AsyncSession, *, organization_id: int, tag_id: int) -> Tag:
    """The organization's tag (of a live campaign). Raises :class:`NotFound`."""
    if not 1 <= tag_id <= MAX_ID:
        raise NotFound(f"Tag {tag_id} not found", code="tag_not_found")
    tag = await session.scalar(
        select(Tag)
        .join(Campaign, Campaign.id == Tag.campaign_id)
        .where(
            Tag.id == tag_id,
            Tag.organization_id == organization_id,
            Campaign.deleted_at.is_(None),
        )
    )
    if tag is None:
        raise NotFound(f"Tag {tag_id} not found", code="tag_not_found")
    return tag


async def list_tags(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Tag], str | None]:
    """A campaign's tags, newest first, cursor-paginated. Raises :class:`NotFound`."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    query = select(Tag).where(
        Tag.campaign_id == campaign_id, Tag.organization_id == organization_id
    )
    return await keyset_page(session, query, Tag.id, limit=limit, cursor=cursor)


async def update_tag(
    session: AsyncSession,
    *,
    organization_id: int,
    tag_id: int,
    data: TagUpdate,
    short_link_origin: str,
) -> Tag:
    """Relabel, re-point (``destination_url``; ``null`` falls back to the campaign's),
    disable or re-enable a tag, place it: a new ``location_id`` moves ``placement`` to
    that location's point unless one is sent; ``"location_id": null`` keeps the
    placement; ``"placement": null`` clears it. Raises :class:`NotFound` (also
    ``location_not_found``) and :class:`InvalidInput` (``status_required``:
    ``"status": null``;
    ``redirect_loop``: a ``destination_url`` on ``short_link_origin``)."""
    tag = await get_tag(session, organization_id=organization_id, tag_id=tag_id)
    fields = data.model_dump(exclude_unset=True)
    check_not_own_origin(short_link_origin, destination_url=fields.get("destination_url"))
    if "status" in fields and fields["status"] is None:
        raise InvalidInput("status cannot be removed", code="status_required")
    if "label" in fields:
        tag.label = fields["label"]
    if "destination_url" in fields:
        tag.destination_url = fields["destination_url"]
    if fields.get("status") is not None:
        tag.status = fields["status"]
    if fields.get("location_id") is not None or fields.get("placement") is not None:
        location_id = fields.get("location_id", None)
        tag.placement = await _placement(
            session,
            organization_id=organization_id,
            location_id=location_id,
            placement=fields.get("placement"),
        )
    elif "placement" in fields:
        tag.placement = None
    if "location_id" in fields:
        tag.location_id = fields["location_id"]
    tag.updated_at = utcnow()
    await session.flush()
    return tag


async def tag_ndef(
    session: AsyncSession,
    *,
    organization_id: int,
    tag_id: int,
    origin: str,
    chip: ndef.Chip,
    aar: str | None = None,
) -> ndef.Type2Payload:
    """The NDEF payload of a plain NFC sticker (NTAG213/215/216) for the tag's
    ``short_url``, optionally with an Android Application Record for package ``aar``.

    Raises :class:`NotFound`, :class:`campaigns.payloads.ndef.NdefTooLarge` (422
    ``ndef_too_large``) and :class:`InvalidInput` ``sun_tag_uses_sdm`` for an ``nfc_sun``
    tag (its payload comes from :func:`tag_sdm`)."""
    tag = await get_tag(session, organization_id=organization_id, tag_id=tag_id)
    if tag.kind == "nfc_sun":
        raise InvalidInput(
            f"Tag {tag_id} is an NTAG 424 DNA (nfc_sun) tag: personalise it from "
            f"/v1/tags/{tag_id}/sdm",
            code="sun_tag_uses_sdm",
        )
    return ndef.type2_payload(short_url(origin, tag.code), chip=chip, aar=aar)


async def tag_sdm(
    session: AsyncSession, *, organization_id: int, tag_id: int, origin: str
) -> tuple[Tag, ndef.SdmLayout]:
    """The tag and the SDM layout of its NTAG 424 DNA NDEF file (tap URL
    ``{origin}/n/{code}?e=...&c=...``). Raises :class:`NotFound`, :class:`InvalidInput`
    ``not_sun_tag`` for a tag of another kind, and
    :class:`campaigns.payloads.ndef.NdefTooLarge` when ``origin`` is so long the file
    exceeds 256 bytes."""
    tag = await get_tag(session, organization_id=organization_id, tag_id=tag_id)
    if tag.kind != "nfc_sun":
        raise InvalidInput(
            f"Tag {tag_id} is of kind {tag.kind!r}; SDM settings exist for nfc_sun tags only",
            code="not_sun_tag",
        )
    return tag, ndef.sdm_layout(sun_tap_base(origin, tag.code))
