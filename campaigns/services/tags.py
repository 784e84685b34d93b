"""Tags: physical codes (QR prints, NFC stickers) of a campaign, and their NFC payloads."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any, Final, Literal

from geoalchemy2.elements import WKBElement
from sqlalchemy import BigInteger, String, any_, literal, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.crypto import SecretKeys
from campaigns.db import note_cache_changes, note_written_rows
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import Campaign, Location, Organization, Tag, utcnow
from campaigns.payloads import keys as sun_keys
from campaigns.payloads import ndef
from campaigns.payloads.keys import SunKeys
from campaigns.scanning.links import new_code, short_url
from campaigns.schemas import MAX_BULK_TAGS, NfcCreate, TagCreate, TagUpdate, shape_of_point
from campaigns.services.campaigns import MAX_ID, get_campaign, keyset_page
from campaigns.services.destinations import check_destinations
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

#: The partial unique index on (campaign_id, location_id, label).
LABEL_INDEX: Final = "uq_tags_campaign_id_location_id_label"


def _label_taken() -> Conflict:
    return Conflict(
        "Another tag of the campaign at this location has this label", code="tag_label_taken"
    )


def sun_tap_base(origin: str, code: str) -> str:
    """``{origin}/n/{code}``: the tap URL of an NTAG 424 DNA tag, before its query."""
    return f"{origin.rstrip('/')}/n/{code}"


async def nfc_master_secret(
    session: AsyncSession, *, organization_id: int, secret_key: SecretKeys
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
    session: AsyncSession, *, organization_id: int, nfc: NfcCreate, secret_key: SecretKeys
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
    secret_key: SecretKeys,
) -> Tag:
    """Create a tag with a fresh random code, placed at ``data.location_id`` (its point
    unless ``data.placement`` is given). For kind ``nfc_sun`` the UID and the SDM keys
    (supplied, else derived) are stored, the keys sealed under ``secret_key``
    (``PASSERELLE_SECRET_KEY``); read them back once with :func:`tag_sun_keys`.

    Raises :class:`NotFound` for a campaign or a location of another organization, or a
    deleted campaign; :class:`InvalidInput` (``redirect_loop``) for a ``destination_url``
    on ``short_link_origin``; :class:`Conflict` ``nfc_uid_taken`` when another
    ``nfc_sun`` tag of the organization has the UID, ``tag_label_taken`` when another
    tag of the campaign at ``data.location_id`` has ``data.label``."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    await check_destinations(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        destination_url=data.destination_url,
    )
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
            if LABEL_INDEX in str(exc.orig):
                raise _label_taken() from None
            if "uq_tags_code" not in str(exc.orig):
                raise
            continue
        return tag
    raise RuntimeError("could not draw a unique tag code")  # pragma: no cover


def tag_sun_keys(tag: Tag, *, secret_key: SecretKeys) -> SunKeys:
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
    ``redirect_loop``: a ``destination_url`` on ``short_link_origin``) and
    :class:`Conflict` ``tag_label_taken`` (another tag of the campaign at the location has
    the label)."""
    tag = await get_tag(session, organization_id=organization_id, tag_id=tag_id)
    fields = data.model_dump(exclude_unset=True)
    await check_destinations(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        destination_url=fields.get("destination_url"),
    )
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
    try:
        await session.flush()
    except IntegrityError as exc:
        if LABEL_INDEX in str(exc.orig):
            raise _label_taken() from None
        raise
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


#: Rows per ``INSERT`` of :func:`create_tags_bulk` (one array per column, so the
#: statement's size does not grow with it; the chunk bounds each round trip).
BULK_CHUNK = 5_000

_BULK_INSERT = text(
    """
    INSERT INTO tags (organization_id, campaign_id, code, kind, label, location_id, placement)
    SELECT :organization_id, :campaign_id, item.code, :kind, item.label, item.location_id,
           locations.point
    FROM unnest(CAST(:codes AS text[]), CAST(:labels AS text[]), CAST(:location_ids AS bigint[]))
         WITH ORDINALITY AS item (code, label, location_id, n)
    JOIN locations ON locations.id = item.location_id
    ORDER BY item.n
    ON CONFLICT DO NOTHING
    RETURNING id, location_id, label
    """
)


@dataclass(frozen=True, slots=True)
class BulkTags:
    """What :func:`create_tags_bulk` made: every tag of the request (ordered by location
    as requested, then label as requested) and how many of them it ``created``."""

    tags: list[Tag]
    created: int


def bulk_labels(*, per_location: int | None, labels: list[str] | None) -> list[str]:
    """The labels of each location's tags: ``labels``, else ``"1"`` ... ``"N"``.
    Raises :class:`InvalidInput` ``labels_mismatch`` when both are given and
    ``per_location`` is not the number of labels (``validation_error`` for neither)."""
    if labels is None:
        if per_location is None:
            raise InvalidInput("Send per_location, labels, or both")
        return [str(n) for n in range(1, per_location + 1)]
    if per_location is not None and per_location != len(labels):
        raise InvalidInput(
            f"per_location is {per_location} but {len(labels)} labels were given",
            code="labels_mismatch",
        )
    return list(labels)


async def _bulk_locations(
    session: AsyncSession, *, organization_id: int, location_ids: list[int] | Literal["all"]
) -> list[int]:
    """The location ids in request order (``"all"``: the organization's, by id), locked
    ``FOR KEY SHARE`` so none is deleted before its tags are in. Raises
    :class:`NotFound` ``location_not_found`` naming unknown or foreign ids, and
    :class:`InvalidInput` ``no_locations`` for ``"all"`` when there are none."""
    query = (
        select(Location.id)
        .where(Location.organization_id == organization_id)
        .order_by(Location.id)
        .with_for_update(read=True, key_share=True)
    )
    if location_ids == "all":
        found = list(await session.scalars(query))
        if not found:
            raise InvalidInput(
                "The organization has no locations: create or import them first",
                code="no_locations",
            )
        return found
    wanted = list(dict.fromkeys(location_ids))
    in_range = [i for i in wanted if 1 <= i <= MAX_ID]
    known = set(await session.scalars(query.where(Location.id == any_(_bigints(in_range)))))
    missing = [i for i in wanted if i not in known]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise NotFound(
            f"{len(missing)} location(s) not found: {shown}",
            code="location_not_found",
            members={"location_ids": missing[:100]},
        )
    return wanted


def _bigints(values: list[int]) -> Any:
    return literal(values, ARRAY(BigInteger))


async def _existing_pairs(
    session: AsyncSession, *, campaign_id: int, location_ids: list[int], labels: list[str]
) -> set[tuple[int, str]]:
    rows = await session.execute(
        select(Tag.location_id, Tag.label).where(
            Tag.campaign_id == campaign_id,
            Tag.location_id == any_(_bigints(location_ids)),
            Tag.label == any_(literal(labels, ARRAY(String))),
        )
    )
    return {(location_id, label) for location_id, label in rows if location_id and label}


async def create_tags_bulk(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    kind: Literal["qr", "nfc"],
    location_ids: list[int] | Literal["all"],
    per_location: int | None = None,
    labels: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BulkTags:
    """One tag of ``kind`` per location and label (:func:`bulk_labels`), placed at the
    location's point, in the caller's transaction: all of them or, on error, none.
    Idempotent on (campaign, location, label) through the partial unique index
    ``uq_tags_campaign_id_location_id_label``: existing tags are returned, not made
    again, whatever their kind, also when identical calls run concurrently (``INSERT
    ... ON CONFLICT DO NOTHING`` waits for the other transaction, then skips its rows).

    Codes are drawn in Python and inserted :data:`BULK_CHUNK` rows per statement; the
    rare rows skipped for a taken code are retried with fresh codes. ``progress(done,
    total)`` is called after each chunk (tags handled so far, tags of the request).

    Raises :class:`NotFound` (``campaign_not_found``; ``location_not_found`` for unknown
    or another organization's locations, with their ids in ``location_ids``) and
    :class:`InvalidInput` (``labels_mismatch``, ``no_locations``, ``too_many_tags``
    beyond :data:`~campaigns.schemas.MAX_BULK_TAGS`)."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    names = bulk_labels(per_location=per_location, labels=labels)
    locations = await _bulk_locations(
        session, organization_id=organization_id, location_ids=location_ids
    )
    total = len(locations) * len(names)
    if total > MAX_BULK_TAGS:
        raise InvalidInput(
            f"{len(locations)} locations x {len(names)} labels = {total} tags; at most "
            f"{MAX_BULK_TAGS} per call (split the locations)",
            code="too_many_tags",
        )
    existing = await _existing_pairs(
        session, campaign_id=campaign_id, location_ids=locations, labels=names
    )
    # Sorted, so concurrent calls over overlapping stores take row locks in one order.
    missing = sorted({(loc, name) for loc in locations for name in names} - existing)
    created: list[int] = []
    done = len(existing)
    if progress is not None:
        progress(done, total)
    for _ in range(CODE_ATTEMPTS):
        if not missing:
            break
        skipped: list[tuple[int, str]] = []
        for start in range(0, len(missing), BULK_CHUNK):
            chunk = missing[start : start + BULK_CHUNK]
            rows = await session.execute(
                _BULK_INSERT,
                {
                    "organization_id": organization_id,
                    "campaign_id": campaign_id,
                    "kind": kind,
                    "codes": [new_code() for _ in chunk],
                    "labels": [name for _, name in chunk],
                    "location_ids": [loc for loc, _ in chunk],
                },
            )
            inserted = {(loc, name): tag_id for tag_id, loc, name in rows}
            created.extend(inserted.values())
            skipped.extend(pair for pair in chunk if pair not in inserted)
            done += len(inserted)
            if progress is not None:
                progress(done, total)
        if not skipped:
            missing = []
            break
        # Skipped for a taken code, or because a concurrent call committed the pair.
        taken = await _existing_pairs(
            session,
            campaign_id=campaign_id,
            location_ids=sorted({loc for loc, _ in skipped}),
            labels=sorted({name for _, name in skipped}),
        )
        done += len(taken & set(skipped))
        missing = [pair for pair in skipped if pair not in taken]
    if missing:  # pragma: no cover - CODE_ATTEMPTS rounds of collisions
        raise RuntimeError("could not draw unique tag codes")
    if progress is not None:
        progress(total, total)
    note_cache_changes(session, tag_ids=created)
    note_written_rows(session, "tags", ids=created)
    tags = await session.scalars(
        select(Tag).where(
            Tag.campaign_id == campaign_id,
            Tag.location_id == any_(_bigints(locations)),
            Tag.label == any_(literal(names, ARRAY(String))),
        )
    )
    rank = {(loc, name): i for i, (loc, name) in enumerate(product(locations, names))}
    ordered = sorted(tags, key=lambda tag: rank[(tag.location_id or 0, tag.label or "")])
    return BulkTags(tags=ordered, created=len(created))
