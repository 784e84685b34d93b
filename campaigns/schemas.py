"""Request and response schemas (``XCreate / XUpdate / XRead``).

Money is ``{"amount_minor": int >= 0, "currency": ISO 4217 code}``; times are ISO 8601
with a timezone (naive times are rejected); URLs must be absolute http(s).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import idna
import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

T = TypeVar("T")


_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _check_url(value: str) -> str:
    """Accept absolute http(s) URLs with a host, no credentials, no control characters."""
    if len(value) > 2048:
        raise ValueError("URL is longer than 2048 characters")
    # Separators, controls, format characters (bidi overrides, zero-width) and unassigned
    # code points have no place in a link and are used to disguise one.
    if any(ord(c) < 0x21 or unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in value):
        raise ValueError("URL contains whitespace, control or invisible characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("URL scheme must be http or https")
    if not parts.hostname:
        raise ValueError("URL must have a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("URL must not carry credentials")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("URL port is invalid") from exc
    if not parts.hostname.isascii():
        # Internationalised host: store its ASCII (punycode) form, mapped as browsers do
        # (UTS #46), so Location headers stay ASCII and full-width look-alikes fold.
        try:
            host = idna.encode(parts.hostname, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError("URL host is not a valid internationalised domain name") from exc
        netloc = host if port is None else f"{host}:{port}"
        value = parts._replace(netloc=netloc).geturl()
    return value


#: ISO 4217 "X" codes that are not money: precious metals, bond-market units, SDR, the
#: testing and "no currency" codes. XAF, XCD, XOF and XPF are real currencies.
_NOT_MONEY = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)


def _check_currency(value: str) -> str:
    if len(value) != 3 or value in _NOT_MONEY or pycountry.currencies.get(alpha_3=value) is None:
        raise ValueError("currency must be an ISO 4217 currency code such as EUR")
    return value


#: Bidirectional overrides and isolates: they make text display differently from what it
#: is ("abc\u202egnp.exe" shows as "abcexe.png").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _check_text(value: str) -> str:
    """Refuse control characters (NUL, escapes, newlines), bidi overrides, and text that is
    nothing but invisible characters. Emoji sequences (zero-width joiners) are fine."""
    if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in value):
        raise ValueError("text contains control characters")
    if not any(unicodedata.category(c) not in ("Cf", "Zs", "Mn") for c in value):
        raise ValueError("text is empty or invisible")
    return value


def _check_time(value: dt.datetime) -> dt.datetime:
    """Normalise to UTC; refuse instants PostgreSQL or Python cannot hold once converted
    (year 1 with a positive offset, 9999 with a negative one)."""
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError("date is out of range") from exc
    if not 1970 <= utc.year <= 9998:
        raise ValueError("date must be between 1970 and 9998")
    return utc


def _hex_digits(count: int, what: str) -> AfterValidator:
    """A validator accepting exactly ``count`` hexadecimal digits (either case); its
    message names ``what`` and never repeats the value (keys must not reach errors)."""

    def check(value: str) -> str:
        if len(value) != count or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError(f"{what} must be {count} hexadecimal digits")
        return value.upper()

    return AfterValidator(check)


NfcUid = Annotated[str, _hex_digits(14, "uid (7 bytes)")]
AesKeyHex = Annotated[str, _hex_digits(32, "an AES-128 key")]
NfcInvalidTap = Literal["flag", "block"]

HttpUrl = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_check_url)]
Currency = Annotated[str, StringConstraints(to_upper=True), AfterValidator(_check_currency)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=100)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_check_text),
]
UtmValue = Name
Timestamp = Annotated[AwareDatetime, AfterValidator(_check_time)]


class Schema(BaseModel):
    """Base: unknown fields are errors, ORM objects can be read."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


class Money(Schema):
    """An amount in minor units (cents for EUR, yen for JPY) of an ISO 4217 currency."""

    amount_minor: int = Field(ge=0, le=10**15, strict=True)  # not true, "100" or 1.0
    currency: Currency


class Utm(Schema):
    """A campaign's UTM parameters, added to its destination on every scan unless the
    destination already sets them. Unset ones default to: ``source`` ``passerelle``,
    ``medium`` the channel (``qr``, ``nfc``), ``campaign`` the campaign slug, ``content``
    the tag label (which wins over a campaign-wide ``content``) else the tag code; ``term``
    is only sent when set."""

    source: UtmValue | None = None
    medium: UtmValue | None = None
    campaign: UtmValue | None = None
    term: UtmValue | None = None
    content: UtmValue | None = None


class _Schedule(Schema):
    @model_validator(mode="after")
    def _ends_after_start(self) -> Any:
        starts, ends = getattr(self, "starts_at", None), getattr(self, "ends_at", None)
        if starts is not None and ends is not None and ends <= starts:
            raise ValueError("ends_at must be after starts_at")
        return self


class CampaignCreate(_Schedule):
    """Body of ``POST /v1/campaigns``."""

    name: Name
    slug: Slug | None = None
    destination_url: HttpUrl
    fallback_url: HttpUrl | None = None
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
    utm: Utm = Field(default_factory=Utm)
    cost: Money | None = None
    #: What a failed NTAG 424 DNA tap gets: ``flag`` (redirect, scan marked) or ``block``.
    nfc_invalid_tap: NfcInvalidTap = "flag"


class CampaignUpdate(_Schedule):
    """Body of ``PATCH /v1/campaigns/{id}``: only the fields sent change; ``null`` clears
    an optional field."""

    name: Name | None = None
    slug: Slug | None = None
    destination_url: HttpUrl | None = None
    fallback_url: HttpUrl | None = None
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
    utm: Utm | None = None
    cost: Money | None = None
    archived: bool | None = Field(default=None, strict=True)
    nfc_invalid_tap: NfcInvalidTap | None = None


class CampaignRead(Schema):
    """A campaign as the API shows it."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    name: str
    slug: str
    destination_url: str
    fallback_url: str | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    utm: Utm
    cost: Money | None
    archived: bool
    nfc_invalid_tap: NfcInvalidTap
    created_at: dt.datetime
    updated_at: dt.datetime


class NfcCreate(Schema):
    """The ``nfc`` member of a tag of kind ``nfc_sun`` (NTAG 424 DNA): its ``uid`` (14 hex
    digits) and optionally both SDM keys (32 hex digits each); without keys Passerelle
    derives them (see :mod:`campaigns.payloads.keys`). Keys never show in ``repr``."""

    uid: NfcUid
    sdm_meta_read_key: AesKeyHex | None = Field(default=None, repr=False)
    sdm_file_read_key: AesKeyHex | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _both_keys_or_none(self) -> NfcCreate:
        if (self.sdm_meta_read_key is None) != (self.sdm_file_read_key is None):
            raise ValueError("send both sdm_meta_read_key and sdm_file_read_key, or neither")
        return self


class TagCreate(Schema):
    """Body of ``POST /v1/campaigns/{id}/tags``. ``nfc`` is required for kind
    ``nfc_sun`` and refused for the others."""

    kind: Literal["qr", "nfc", "nfc_sun"] = "qr"
    label: Name | None = None
    destination_url: HttpUrl | None = None
    nfc: NfcCreate | None = Field(default=None, validate_default=True)

    @field_validator("nfc")
    @classmethod
    def _nfc_matches_kind(cls, value: NfcCreate | None, info: ValidationInfo) -> NfcCreate | None:
        kind = info.data.get("kind")
        if kind == "nfc_sun" and value is None:
            raise ValueError("a tag of kind nfc_sun needs nfc.uid")
        if kind is not None and kind != "nfc_sun" and value is not None:
            raise ValueError("nfc is only for tags of kind nfc_sun")
        return value


class TagUpdate(Schema):
    """Body of ``PATCH /v1/tags/{id}``: re-point, relabel, disable or re-enable a tag."""

    label: Name | None = None
    destination_url: HttpUrl | None = None
    status: Literal["active", "disabled"] | None = None


class NfcRead(Schema):
    """The NTAG 424 DNA identity of an ``nfc_sun`` tag: ``uid`` (14 upper-case hex digits)
    and ``key_derivation_version`` (null when the keys were supplied). Never the keys."""

    uid: str
    key_derivation_version: int | None


class NfcCreated(NfcRead):
    """``nfc`` of the creation response only: also the two SDM keys (32 upper-case hex
    digits each), for the personalisation tool. They are never shown again."""

    sdm_meta_read_key: str
    sdm_file_read_key: str


class TagRead(Schema):
    """A tag: ``short_url`` is ``{BASE_URL}/s/{code}``; ``qr_content`` is the form encoded
    in QR codes (host and path upper case, for the alphanumeric mode); ``nfc`` is set for
    kind ``nfc_sun``."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    code: str
    short_url: str
    qr_content: str
    kind: str
    campaign_id: int
    label: str | None
    destination_url: str | None
    status: str
    created_at: dt.datetime
    nfc: NfcRead | None = None


class TagCreated(TagRead):
    """Answer of ``POST /v1/campaigns/{id}/tags``: a :class:`TagRead` whose ``nfc`` (kind
    ``nfc_sun``) carries the keys, this once."""

    nfc: NfcCreated | None = None


class NdefRead(Schema):
    """Answer of ``GET /v1/tags/{id}/ndef?format=json``: the NDEF message for ``url`` as
    ``ndef_hex`` (``size_bytes`` long), the Type 2 TLV area written from page 4 as
    ``tlv_hex``, and the ``chip`` with its ``capacity_bytes``. Hex is upper case."""

    url: str
    ndef_hex: str
    tlv_hex: str
    size_bytes: int
    capacity_bytes: int
    chip: str


class SdmKeyNumbers(Schema):
    """Which key slot (0-4) of the NTAG 424 DNA holds which key (AN12196's example)."""

    app_master: int
    sdm_meta_read: int
    sdm_file_read: int


class SdmRead(Schema):
    """Answer of ``GET /v1/tags/{id}/sdm``: what a personalisation tool writes on an
    NTAG 424 DNA. ``ndef_file_hex`` is the NDEF file (``NLEN`` then the message); the
    offsets are byte positions from its first byte."""

    uid: str
    url_template: str
    ndef_file_hex: str
    picc_data_offset: int
    sdm_mac_input_offset: int
    sdm_mac_offset: int
    key_numbers: SdmKeyNumbers


class Page(Schema, Generic[T]):
    """A page of a cursor-paginated list: pass ``next_cursor`` as ``cursor`` for more."""

    items: list[T]
    next_cursor: str | None


class ConversionCreate(Schema):
    """Body of ``POST /v1/conversions``. ``external_id`` is the idempotency key (the order
    number): the same one again with the same body answers the stored conversion."""

    click_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    ]
    event: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
        AfterValidator(_check_text),
    ]
    value: Money | None = None
    external_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_text)
    ]
    occurred_at: Timestamp | None = None


class ConversionRead(Schema):
    """A stored conversion and how it was attributed (last touch on its click id)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    click_id: str
    event: str
    value: Money | None
    external_id: str
    occurred_at: dt.datetime
    attributed: bool
    scan_id: int | None
    campaign_id: int | None
    tag_id: int | None


class RevenueRead(Schema):
    """The summed value of conversions in one currency, in minor units (no conversion
    between currencies: one entry per ISO 4217 code, sorted by code)."""

    currency: str
    amount_minor: int


class TagStats(Schema):
    """One tag's share of :class:`CampaignStats` (same window, same definitions)."""

    tag_id: int
    code: str
    label: str | None
    scans: int
    bot_scans: int
    unique_visitors: int
    conversions: int
    revenue: list[RevenueRead]
    conversion_rate: float


class CampaignStats(Schema):
    """Answer of ``GET /v1/campaigns/{id}/stats`` over ``[from, to)``.

    ``scans`` excludes bots (``bot_scans``); ``unique_visitors`` is the number of distinct
    daily visitor ids among human scans, so over several days it is the sum of daily
    uniques; ``conversions`` and ``revenue`` are conversions attributed to the campaign
    with ``occurred_at`` in the window; ``conversion_rate`` is ``conversions / scans``
    (0.0 without scans; it can exceed 1).
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, populate_by_name=True)

    campaign_id: int
    from_: dt.datetime | None = Field(default=None, alias="from")
    to: dt.datetime | None = None
    scans: int
    bot_scans: int
    unique_visitors: int
    conversions: int
    revenue: list[RevenueRead]
    conversion_rate: float
    by_tag: list[TagStats]
