"""ORM -> response schema conversions that need more than ``from_attributes``."""

from __future__ import annotations

from campaigns.models import Campaign, Conversion, Refund, Tag
from campaigns.scanning.links import qr_url, short_url
from campaigns.schemas import CampaignRead, ConversionRead, Money, RefundRead, TagRead, Utm


def _money(amount_minor: int | None, currency: str | None) -> Money | None:
    return (
        Money(amount_minor=amount_minor, currency=currency)
        if amount_minor is not None and currency
        else None
    )


def campaign_read(campaign: Campaign) -> CampaignRead:
    """The API view of a campaign (``cost`` and ``utm`` as objects)."""
    cost = _money(campaign.cost_amount_minor, campaign.cost_currency)
    return CampaignRead(
        id=campaign.id,
        name=campaign.name,
        slug=campaign.slug,
        destination_url=campaign.destination_url,
        fallback_url=campaign.fallback_url,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        utm=Utm(**campaign.utm),
        cost=cost,
        archived=campaign.archived,
        timezone=campaign.timezone,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )


def tag_read(tag: Tag, origin: str) -> TagRead:
    """The API view of a tag; ``origin`` is the public short-link origin (``BASE_URL``)."""
    return TagRead(
        id=tag.id,
        code=tag.code,
        short_url=short_url(origin, tag.code),
        qr_content=qr_url(origin, tag.code),
        kind=tag.kind,
        campaign_id=tag.campaign_id,
        label=tag.label,
        destination_url=tag.destination_url,
        status=tag.status,
        created_at=tag.created_at,
    )


def conversion_read(conversion: Conversion) -> ConversionRead:
    """The API view of a conversion (``value`` as an object, ``attributed`` derived)."""
    value = _money(conversion.value_amount_minor, conversion.value_currency)
    return ConversionRead(
        id=conversion.id,
        click_id=conversion.click_id,
        event=conversion.event,
        value=value,
        external_id=conversion.external_id,
        occurred_at=conversion.occurred_at,
        attributed=conversion.scan_id is not None,
        scan_id=conversion.scan_id,
        campaign_id=conversion.campaign_id,
        tag_id=conversion.tag_id,
    )


def refund_read(refund: Refund, conversion: Conversion) -> RefundRead:
    """The API view of a refund (``currency`` is its conversion's)."""
    assert conversion.value_currency is not None  # only conversions with a value refund
    return RefundRead(
        id=refund.id,
        conversion_id=refund.conversion_id,
        external_id=refund.external_id,
        amount_minor=refund.amount_minor,
        currency=conversion.value_currency,
        refunded_at=refund.refunded_at,
        created_at=refund.created_at,
    )
