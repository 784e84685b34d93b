"""ORM -> response schema conversions that need more than ``from_attributes``."""

from __future__ import annotations

from campaigns.models import Campaign, Conversion, Location, Refund, Tag
from campaigns.payloads.keys import SunKeys
from campaigns.scanning.links import qr_url, short_url
from campaigns.schemas import (
    CampaignRead,
    ConversionRead,
    LocationRead,
    Money,
    NfcCreated,
    NfcRead,
    RefundRead,
    TagCreated,
    TagRead,
    Utm,
)
from campaigns.services.locations import location_geojson
from geo.geojson import from_wkb_element, to_geojson


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
        nfc_invalid_tap=campaign.nfc_invalid_tap,
        timezone=campaign.timezone,
        precise_location=campaign.precise_location,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )


def tag_read(tag: Tag, origin: str) -> TagRead:
    """The API view of a tag; ``origin`` is the public short-link origin (``BASE_URL``).
    ``nfc`` shows an ``nfc_sun`` tag's UID and key derivation version, never its keys."""
    nfc = (
        NfcRead(
            uid=tag.nfc_uid.hex().upper(), key_derivation_version=tag.nfc_key_derivation_version
        )
        if tag.nfc_uid is not None
        else None
    )
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
        location_id=tag.location_id,
        placement=to_geojson(from_wkb_element(tag.placement)) if tag.placement else None,
        created_at=tag.created_at,
        nfc=nfc,
    )


def location_read(location: Location, distance_m: float | None = None) -> LocationRead:
    """The API view of a location (``point``/``geofence`` as GeoJSON); ``distance_m`` in
    geodesic metres for answers to ``near=``."""
    return LocationRead(
        id=location.id,
        name=location.name,
        external_id=location.external_id,
        address=location.address,
        timezone=location.timezone,
        radius_m=location.radius_m,
        created_at=location.created_at,
        updated_at=location.updated_at,
        distance_m=distance_m,
        **location_geojson(location),
    )


def tag_created(tag: Tag, origin: str, keys: SunKeys | None) -> TagCreated:
    """The creation answer: :func:`tag_read` plus, for an ``nfc_sun`` tag, its SDM
    ``keys`` (upper-case hex), shown this once for the personalisation tool."""
    read = tag_read(tag, origin)
    nfc = None
    if read.nfc is not None and keys is not None:
        nfc = NfcCreated(
            uid=read.nfc.uid,
            key_derivation_version=read.nfc.key_derivation_version,
            sdm_meta_read_key=keys.meta_read.hex().upper(),
            sdm_file_read_key=keys.file_read.hex().upper(),
        )
    return TagCreated(**read.model_dump(exclude={"nfc"}), nfc=nfc)


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
