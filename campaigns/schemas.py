"""Request and response schemas (``XCreate / XUpdate / XRead``).

Money is ``{"amount_minor": int >= 0, "currency": ISO 4217 code}``; times are ISO 8601
with a timezone (naive times are rejected); URLs must be absolute http(s).
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
import zoneinfo
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
    field_validator,
    model_validator,
)

from campaigns.attribution import Model

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


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_time_zone(value: str) -> str:
    """Accept IANA time zone names known to ``zoneinfo`` (``Europe/Paris``, ``UTC``).
    Checked against the list of zones rather than by loading the name, which would read a
    file named by the client."""
    if value not in _time_zones():
        raise ValueError("timezone must be an IANA time zone name such as Europe/Paris")
    return value


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
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_time_zone)]


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
    timezone: TimeZone = "UTC"


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
    timezone: TimeZone | None = None


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
    timezone: str
    created_at: dt.datetime
    updated_at: dt.datetime


class TagCreate(Schema):
    """Body of ``POST /v1/campaigns/{id}/tags``."""

    kind: Literal["qr", "nfc"] = "qr"
    label: Name | None = None
    destination_url: HttpUrl | None = None


class TagUpdate(Schema):
    """Body of ``PATCH /v1/tags/{id}``: re-point, relabel, disable or re-enable a tag."""

    label: Name | None = None
    destination_url: HttpUrl | None = None
    status: Literal["active", "disabled"] | None = None


class TagRead(Schema):
    """A tag: ``short_url`` is ``{BASE_URL}/s/{code}``; ``qr_content`` is the form encoded
    in QR codes (host and path upper case, for the alphanumeric mode)."""

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


class OrganizationRead(Schema):
    """The calling key's organization and its settings (``GET /v1/organization``).

    ``visitor_cookie``: whether scans may set a first-party visitor cookie, which links a
    visitor's scans across days for attribution (off by default: in the EU such a cookie
    needs the visitor's consent). ``visitor_cookie_consent``: who obtains that consent,
    ``organization`` (the organization's own consent management covers it) or ``ask``
    (Passerelle asks the visitor before setting it).
    """

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    name: str
    created_at: dt.datetime
    visitor_cookie: bool
    visitor_cookie_consent: Literal["organization", "ask"]


class OrganizationUpdate(Schema):
    """Body of ``PATCH /v1/organization``: only the fields sent change; none may be null."""

    name: Name | None = None
    visitor_cookie: bool | None = Field(default=None, strict=True)
    visitor_cookie_consent: Literal["organization", "ask"] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields that were sent: an explicit null is refused, an absent
        # field stays unchanged.
        if value is None:
            raise ValueError("must not be null")
        return value


class RefundCreate(Schema):
    """Body of ``POST /v1/conversions/{id}/refunds``: ``amount_minor`` in the conversion's
    currency; ``external_id`` (the merchant's refund id) makes the call idempotent;
    ``refunded_at`` defaults to the receive time."""

    amount_minor: int = Field(gt=0, le=10**15, strict=True)
    external_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_text)
    ]
    refunded_at: Timestamp | None = None


class RefundRead(Schema):
    """A stored refund (``amount_minor`` in ``currency``, the conversion's)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    conversion_id: int
    external_id: str
    amount_minor: int
    currency: str
    refunded_at: dt.datetime
    created_at: dt.datetime


class _AttributionFigures(Schema):
    conversions: float
    revenue: list[RevenueRead]


class TagAttribution(_AttributionFigures):
    """Credit earned by the scans of one tag."""

    tag_id: int


class LocationAttribution(_AttributionFigures):
    """Credit earned by the scans of the tags of one location (``null``: no location)."""

    location_id: int | None


class DayAttribution(_AttributionFigures):
    """Credit earned by the scans of one day (``YYYY-MM-DD`` in the campaign's time zone)."""

    day: dt.date


class AttributionTotals(_AttributionFigures):
    """The sum of the rows: everything credited to this campaign's scans."""


class Unattributed(Schema):
    """The organization's conversions in the window without a journey (no scan of their
    click id); ``revenue`` is their value less their refunds dated in the window."""

    conversions: int
    revenue: list[RevenueRead]


class AttributionReport(Schema):
    """Answer of ``GET /v1/campaigns/{id}/attribution`` (see the route's description).

    ``conversions`` are fractional credits (a JSON number, e.g. ``0.4``); ``revenue`` is in
    minor units per currency, after refunds dated in the window.
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, populate_by_name=True)

    campaign_id: int
    model: Model
    group_by: Literal["tag", "location", "day"]
    lookback_days: int
    half_life_days: float
    timezone: str
    from_: dt.datetime | None = Field(default=None, alias="from")
    to: dt.datetime | None = None
    rows: list[TagAttribution] | list[LocationAttribution] | list[DayAttribution]
    totals: AttributionTotals
    unattributed: Unattributed
