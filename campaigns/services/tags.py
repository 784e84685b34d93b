"""Tags: physical codes (QR prints, NFC stickers) of a campaign."""

from __future__ import annotations

from typing import Any

from geoalchemy2.elements import WKBElement
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput, NotFound
from campaigns.models import Campaign, Tag, utcnow
from campaigns.scanning.links import new_code
from campaigns.schemas import TagCreate, TagUpdate, shape_of_point
from campaigns.services.campaigns import MAX_ID, get_campaign, keyset_page
from campaigns.services.destinations import check_not_own_origin
from campaigns.services.locations import get_location
from geo.geojson import to_wkb_element

#: A fresh 40-bit code collides with an existing one with probability n / 2^40; retries
#: make a failure astronomically unlikely even with hundreds of millions of tags.
CODE_ATTEMPTS = 8


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
) -> Tag:
    """Create a tag with a fresh random code, placed at ``data.location_id`` (its point
    unless ``data.placement`` is given). Raises :class:`NotFound` for a campaign or a
    location of another organization, or a deleted campaign; :class:`InvalidInput`
    (``redirect_loop``) for a ``destination_url`` on ``short_link_origin``."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    placement = await _placement(
        session,
        organization_id=organization_id,
        location_id=data.location_id,
        placement=data.placement,
    )
    check_not_own_origin(short_link_origin, destination_url=data.destination_url)
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
        )
        try:
            async with session.begin_nested():
                session.add(tag)
                await session.flush()
        except IntegrityError as exc:
            if "uq_tags_code" not in str(exc.orig):
                raise
            continue
        return tag
    raise RuntimeError("could not draw a unique tag code")  # pragma: no cover


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
