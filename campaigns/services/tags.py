"""Tags: physical codes (QR prints, NFC stickers) of a campaign."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput, NotFound
from campaigns.models import Campaign, Tag, utcnow
from campaigns.scanning.links import new_code
from campaigns.schemas import TagCreate, TagUpdate
from campaigns.services.campaigns import MAX_ID, get_campaign, keyset_page
from campaigns.services.destinations import check_not_own_origin

#: A fresh 40-bit code collides with an existing one with probability n / 2^40; retries
#: make a failure astronomically unlikely even with hundreds of millions of tags.
CODE_ATTEMPTS = 8


async def create_tag(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    data: TagCreate,
    short_link_origin: str,
) -> Tag:
    """Create a tag with a fresh random code. Raises :class:`NotFound` for a campaign of
    another organization or a deleted one, :class:`InvalidInput` (``redirect_loop``) for
    a ``destination_url`` on ``short_link_origin`` (the service's own origin)."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    check_not_own_origin(short_link_origin, destination_url=data.destination_url)
    for _ in range(CODE_ATTEMPTS):
        tag = Tag(
            organization_id=organization_id,
            campaign_id=campaign_id,
            code=new_code(),
            kind=data.kind,
            label=data.label,
            destination_url=data.destination_url,
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
    disable or re-enable a tag. Raises :class:`NotFound` and :class:`InvalidInput`
    (``status_required``: ``"status": null``; ``redirect_loop``: a ``destination_url`` on
    ``short_link_origin``)."""
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
    tag.updated_at = utcnow()
    await session.flush()
    return tag
