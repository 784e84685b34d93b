"""Request and response schemas (``XCreate / XUpdate / XRead``).

Money is ``{"amount_minor": int >= 0, "currency": ISO 4217 code}``; times are ISO 8601
with a timezone (naive times are rejected); URLs must be absolute http(s).
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
import zoneinfo
from collections.abc import Callable
from functools import cache
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
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from campaigns.attribution import Model
from campaigns.models import MAX_RADIUS_M
from geo.geojson import Area, GeoError, area_from_geojson, point_from_geojson, to_geojson

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
PreciseLocation = Literal["off", "ask"]
_PRECISE_LOCATION = (
    "`ask`: a scan by a person gets a short page (French or English) asking the browser's "
    "position, with consent, before going on to the destination; `off`: a plain redirect"
)
_VISITOR_COOKIE = (
    "Scans set a first-party visitor cookie linking a visitor's scans across days (EU: needs "
    "consent; default false)"
)
_SCAN_RETENTION = (
    "Days scans are kept before the purge deletes them (1 to 3650; default 395, 13 months)"
)
_PRECISE_RETENTION = (
    "Days a consented GPS position is kept before it is reduced to the scan's matched store "
    "and city (1 to `scan_retention_days`; default 30)"
)
_DATA_SINCE = (
    "Since when the report covers every scan, UTC: the first midnight at or after the "
    "retention horizon (now minus the organization's `scan_retention_days`); older scans "
    "are purged"
)
_COOKIE_CONSENT = (
    "Who obtains the cookie consent: `organization` (its own consent management) or `ask` "
    "(Passerelle asks the visitor first)"
)
_CAMPAIGN_TZ = "IANA time zone of the campaign's reports (days, series), default UTC"
_NFC_INVALID_TAP = (
    "What a failed NTAG 424 DNA tap gets: `flag` (redirected, the scan counts in neither "
    "stats nor attribution) or `block` (a 403 page asking to tap again)"
)


#: Files of a system's zoneinfo directory that ``zoneinfo.available_timezones()`` may
#: list but are no time zone of a place: the host's own setting (``localtime``), the
#: tz database's "time zone unknown" placeholder (``Factory``, whose abbreviation is
#: "-00"), the POSIX TZ-string default rules, and the ``posix/`` and ``right/`` (leap
#: second) copies of the whole database.
NOT_PLACE_ZONES = frozenset({"localtime", "Factory", "posixrules", "posix", "right"})


@cache
def _timezones() -> frozenset[str]:
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in NOT_PLACE_ZONES and name.split("/", 1)[0] not in NOT_PLACE_ZONES
    )


def _check_timezone(value: str) -> str:
    """Accept a time zone of the tz database (IANA) that names a place or an offset
    (``Europe/Paris``, ``UTC``, ``Etc/GMT-2``); refuse pseudo-zones (:data:`NOT_PLACE_ZONES`)
    and anything else with the ``invalid_timezone`` error."""
    # Membership in the tz database's list, not ZoneInfo(value): that one also reads
    # paths and would accept "posixrules" or files under a custom TZPATH.
    if value not in _timezones():
        raise PydanticCustomError(
            "invalid_timezone",
            "{value} is not an IANA time zone such as Europe/Paris",
            {"value": value[:64]},
        )
    return value


Timezone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_timezone)]
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


def doc(description: str, *examples: Any, **field: Any) -> Any:
    """``Field(...)`` with the OpenAPI ``description`` and ``examples`` every field carries."""
    return Field(description=description, examples=list(examples), **field)


_ID = "Identifier (positive 64-bit integer)"
_NAME = "Display name, 1 to 200 characters (trimmed)"
_SLUG = (
    "URL-friendly identifier, unique among the organization's live campaigns: `a-z0-9` "
    "words joined by hyphens, at most 100 characters"
)
_DESTINATION = (
    "Where scans go: absolute http(s) URL; UTM parameters and `pcid` are appended. Must "
    "not point at this service's short links (`redirect_loop`)"
)
_FALLBACK = (
    "Where scans go outside the schedule (before `starts_at`, from `ends_at`); without it "
    "such scans get a 410 page. Same rules as `destination_url`"
)
_STARTS = "Start of the schedule, ISO 8601 with a timezone (stored in UTC); none: active at once"
_ENDS = "End of the schedule (exclusive), after `starts_at`; none: no end"
_UTM = "Default UTM parameters of the campaign's scans"
_COST = "What the campaign cost, for return on spend"
_SCANS = (
    "Human scans (bots, link previewers and HEAD requests excluded; NFC taps only when "
    "their SUN message is `valid`)"
)
_REPLAYED_TAPS = (
    "NFC taps of NTAG 424 DNA tags whose SUN message was authentic but already used "
    "(counter not above the last accepted one): counted in neither `scans` nor `bot_scans`"
)
_INTERNAL_SCANS = (
    "Scans from a phone signed into the organization's dashboard (store staff testing the "
    "posters they hang): counted in no other figure of any report"
)
_INVALID_TAPS = (
    "NFC taps of NTAG 424 DNA tags whose SUN message failed (bad MAC, another tag's "
    "message, missing or malformed parameters): counted in neither `scans` nor `bot_scans`"
)
_BOT_REASONS = (
    "Non-human scans by why: `head`, `prefetch`, `previewer`, `scanner`, `crawler`, "
    "`no_user_agent` (every reason present, zeros included)"
)
_BURST = (
    "Human scans from an address past the per-address rate (carrier NAT, venue Wi-Fi or a "
    "flood): redirected, stored and counted in `scans`"
)
_BOT_REASONS_EXAMPLE = {
    "head": 0,
    "prefetch": 2,
    "previewer": 3,
    "scanner": 1,
    "crawler": 1,
    "no_user_agent": 0,
}
_BOT_SCANS = "Scans by bots, link previewers and HEAD requests"
_UNIQUES = "Distinct daily visitors among human scans (summed over days)"
_CONVERSIONS = "Conversions attributed (last touch) with `occurred_at` in the window"
_REVENUE = (
    "Value of those conversions less refunds dated in the window (from their own time "
    "on), summed per currency; can be negative"
)
_RATE = "`conversions / scans`; 0.0 without scans; can exceed 1"
_TAG_LABEL = "Where the tag is placed, for people and as the default `utm_content`"
_TAG_DESTINATION = (
    "Overrides the campaign's destination for this tag; null uses the campaign's. Must not "
    "point at this service's short links"
)
_MONEY_EXAMPLE = {"amount_minor": 150000, "currency": "EUR"}
_UTM_EXAMPLE = {"source": "posters", "medium": "qr"}
_WHEN = "2026-11-29T11:16:01.501936Z"


class Money(Schema):
    """An amount in minor units (cents for EUR, yen for JPY) of an ISO 4217 currency."""

    amount_minor: int = doc(
        "Amount in minor units of the currency (cents for EUR), 0 to 10^15; an integer",
        4990,
        ge=0,
        le=10**15,
        strict=True,  # not true, "100" or 1.0
    )
    currency: Currency = doc("ISO 4217 currency code (upper-cased)", "EUR")


class Utm(Schema):
    """A campaign's UTM parameters, added to its destination on every scan unless the
    destination already sets them. Unset ones default to: ``source`` ``passerelle``,
    ``medium`` the channel (``qr``, ``nfc``), ``campaign`` the campaign slug, ``content``
    the tag label (which wins over a campaign-wide ``content``) else the tag code; ``term``
    is only sent when set."""

    source: UtmValue | None = doc("`utm_source`; default `passerelle`", "posters", default=None)
    medium: UtmValue | None = doc(
        "`utm_medium`; default the channel, `qr` or `nfc`", "qr", default=None
    )
    campaign: UtmValue | None = doc(
        "`utm_campaign`; default the campaign slug", "summer-2026", default=None
    )
    term: UtmValue | None = doc("`utm_term`; sent only when set", "sneakers", default=None)
    content: UtmValue | None = doc(
        "`utm_content`; default the tag label, else its code", "window-1", default=None
    )


class _Schedule(Schema):
    @model_validator(mode="after")
    def _ends_after_start(self) -> Any:
        starts, ends = getattr(self, "starts_at", None), getattr(self, "ends_at", None)
        if starts is not None and ends is not None and ends <= starts:
            raise ValueError("ends_at must be after starts_at")
        return self


class CampaignCreate(_Schedule):
    """Body of ``POST /v1/campaigns``."""

    name: Name = doc(_NAME, "Summer windows")
    slug: Slug | None = doc(
        _SLUG + "; generated from `name` when absent", "summer-windows", default=None
    )
    destination_url: HttpUrl = doc(_DESTINATION, "https://shop.example.com/summer")
    fallback_url: HttpUrl | None = doc(_FALLBACK, "https://shop.example.com/", default=None)
    starts_at: Timestamp | None = doc(_STARTS, "2026-06-01T00:00:00+02:00", default=None)
    ends_at: Timestamp | None = doc(_ENDS, "2026-09-01T00:00:00+02:00", default=None)
    utm: Utm = doc(_UTM, _UTM_EXAMPLE, default_factory=Utm)
    cost: Money | None = doc(_COST, _MONEY_EXAMPLE, default=None)
    nfc_invalid_tap: NfcInvalidTap = doc(_NFC_INVALID_TAP, "flag", default="flag")
    timezone: Timezone = doc(_CAMPAIGN_TZ, "Europe/Paris", default="UTC")
    precise_location: PreciseLocation = doc(_PRECISE_LOCATION, "ask", default="off")


class CampaignUpdate(_Schedule):
    """Body of ``PATCH /v1/campaigns/{id}``: only the fields sent change; ``null`` clears
    an optional field."""

    name: Name | None = doc(_NAME, "Summer windows (extended)", default=None)
    slug: Slug | None = doc(_SLUG, "summer-windows-2", default=None)
    destination_url: HttpUrl | None = doc(
        _DESTINATION + "; cannot be null", "https://shop.example.com/sale", default=None
    )
    fallback_url: HttpUrl | None = doc(_FALLBACK + "; null removes it", None, default=None)
    starts_at: Timestamp | None = doc(
        _STARTS + "; null removes it", "2026-06-15T00:00:00Z", default=None
    )
    ends_at: Timestamp | None = doc(
        _ENDS + "; null removes it", "2026-09-15T00:00:00Z", default=None
    )
    utm: Utm | None = doc(
        _UTM + "; replaces them all, null clears them", {"source": "flyers"}, default=None
    )
    cost: Money | None = doc(_COST + "; null removes it", _MONEY_EXAMPLE, default=None)
    archived: bool | None = doc(
        "Hide from default listings; tags keep resolving", True, default=None, strict=True
    )
    nfc_invalid_tap: NfcInvalidTap | None = doc(
        _NFC_INVALID_TAP + "; cannot be null", "block", default=None
    )
    timezone: Timezone | None = doc(_CAMPAIGN_TZ + "; cannot be null", "Europe/Paris", default=None)
    precise_location: PreciseLocation | None = doc(
        _PRECISE_LOCATION + "; cannot be null", "ask", default=None
    )


class CampaignRead(Schema):
    """A campaign as the API shows it."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    name: str = doc(_NAME, "Summer windows")
    slug: str = doc(_SLUG, "summer-windows")
    destination_url: str = doc(_DESTINATION, "https://shop.example.com/summer")
    fallback_url: str | None = doc(_FALLBACK, "https://shop.example.com/")
    starts_at: dt.datetime | None = doc(_STARTS, "2026-05-31T22:00:00Z")
    ends_at: dt.datetime | None = doc(_ENDS, "2026-08-31T22:00:00Z")
    utm: Utm = doc(_UTM, _UTM_EXAMPLE)
    cost: Money | None = doc(_COST, _MONEY_EXAMPLE)
    archived: bool = doc("Archived campaigns are left out of listings with `archived=false`", False)
    nfc_invalid_tap: NfcInvalidTap = doc(_NFC_INVALID_TAP, "flag")
    timezone: str = doc(_CAMPAIGN_TZ, "Europe/Paris")
    precise_location: PreciseLocation = doc(_PRECISE_LOCATION, "off")
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    updated_at: dt.datetime = doc("Last change, UTC", _WHEN)


#: Codes of geographic problems found by schemas. A 422 whose first field problem has one
#: of them answers it as its top-level ``code`` (api/errors.py), as services do.
GEO_ERROR_CODES = frozenset(
    {
        "invalid_geojson",
        "invalid_coordinates",
        "invalid_geometry",
        "invalid_radius",
        "area_conflict",
        "geofence_excludes_point",
        "invalid_timezone",
    }
)


def _geojson(convert: Callable[[Any], BaseGeometry]) -> Callable[[Any], dict[str, Any]]:
    """A validator turning GeoJSON into its normalised form, or a custom error carrying
    the :class:`geo.geojson.GeoError` code."""

    def validate(value: Any) -> dict[str, Any]:
        try:
            return to_geojson(convert(value))
        except GeoError as exc:
            raise PydanticCustomError(exc.code, "{detail}", {"detail": exc.detail}) from None

    return validate


def _position_schema(nesting: int) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 2,
        "maxItems": 3,
    }
    for _ in range(nesting):
        schema = {"type": "array", "items": schema}
    return schema


#: A GeoJSON Point (RFC 7946 §3.1.2), ``[longitude, latitude]`` in WGS 84 degrees.
GeoJSONPoint = Annotated[
    Any,
    AfterValidator(_geojson(point_from_geojson)),
    WithJsonSchema(
        {
            "type": "object",
            "title": "GeoJSON Point",
            "properties": {"type": {"const": "Point"}, "coordinates": _position_schema(0)},
            "required": ["type", "coordinates"],
            "example": {"type": "Point", "coordinates": [2.3522, 48.8566]},
        }
    ),
]
#: A GeoJSON Polygon or MultiPolygon (RFC 7946 §3.1.6-7): valid, rings closed.
GeoJSONArea = Annotated[
    Any,
    AfterValidator(_geojson(area_from_geojson)),
    WithJsonSchema(
        {
            "type": "object",
            "title": "GeoJSON Polygon or MultiPolygon",
            "properties": {
                "type": {"enum": ["Polygon", "MultiPolygon"]},
                "coordinates": {"oneOf": [_position_schema(2), _position_schema(3)]},
            },
            "required": ["type", "coordinates"],
        }
    ),
]


def _check_radius(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_RADIUS_M):
        raise PydanticCustomError(
            "invalid_radius",
            "radius_m must be more than 0 and at most {max} metres",
            {"max": MAX_RADIUS_M},
        )
    return value


def check_area(point: dict[str, Any] | None, geofence: dict[str, Any] | None, radius: Any) -> None:
    """The rules tying a location's point to its area, on normalised GeoJSON:
    ``area_conflict`` (a geofence and a radius), ``geofence_excludes_point``. Raises
    ``PydanticCustomError``."""
    if geofence is not None and radius is not None:
        raise PydanticCustomError(
            "area_conflict", "Give a geofence or a radius_m, not both (clear one with null)"
        )
    if point is not None and geofence is not None:
        if not shape_of_area(geofence).covers(shape_of_point(point)):
            raise PydanticCustomError(
                "geofence_excludes_point", "The location's point is outside its geofence"
            )


def shape_of_point(data: dict[str, Any]) -> Point:
    """The shapely point of a GeoJSON Point a schema validated."""
    return point_from_geojson(data)


def shape_of_area(data: dict[str, Any]) -> Area:
    """The shapely (multi)polygon of a GeoJSON area a schema validated."""
    return area_from_geojson(data)


ExternalId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_check_text),
]
Address = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_check_text),
]
RadiusM = Annotated[float | None, Field(strict=True), AfterValidator(_check_radius)]


class LocationCreate(Schema):
    """Body of ``POST /v1/locations`` (and one row of an import).

    ``point`` is required; the area is at most one of ``geofence`` (Polygon or
    MultiPolygon covering the point) and ``radius_m`` (a circle around the point, metres
    on the ellipsoid, 0 < r ≤ 50 km). Without an area, scans reach the location only
    through its tags. ``external_id`` (a store number) is unique per organization.
    """

    name: Name = doc("Store or venue name, 1 to 200 characters", "Lyon Part-Dieu")
    external_id: ExternalId | None = doc(
        "Your store number, unique in the organization (imports match on it)",
        "LY-012",
        default=None,
    )
    address: Address | None = doc(
        "Postal address, free text", "17 rue du Docteur Bouchut, 69003 Lyon", default=None
    )
    timezone: Timezone | None = doc("IANA time zone of the place", "Europe/Paris", default=None)
    point: GeoJSONPoint = doc(
        "Where the place is: GeoJSON Point `[lon, lat]`, WGS 84 degrees",
        {"type": "Point", "coordinates": [4.8567, 45.7607]},
    )
    geofence: GeoJSONArea | None = doc(
        "The place's area: GeoJSON Polygon or MultiPolygon covering `point`",
        {
            "type": "Polygon",
            "coordinates": [
                [
                    [4.855, 45.760],
                    [4.858, 45.760],
                    [4.858, 45.762],
                    [4.855, 45.762],
                    [4.855, 45.760],
                ]
            ],
        },
        default=None,
    )
    radius_m: RadiusM = doc(
        "The place's area as a circle around `point`, metres (0 < r <= 50,000)", 150, default=None
    )

    @model_validator(mode="after")
    def _area(self) -> LocationCreate:
        check_area(self.point, self.geofence, self.radius_m)
        return self


class LocationUpdate(Schema):
    """Body of ``PATCH /v1/locations/{id}``: only the fields sent change; ``null`` clears
    ``external_id``, ``address``, ``timezone``, ``geofence`` or ``radius_m``. To switch
    from a geofence to a radius, send ``{"geofence": null, "radius_m": 150}``."""

    name: Name | None = doc(
        "Store or venue name, 1 to 200 characters", "Lyon Part-Dieu", default=None
    )
    external_id: ExternalId | None = doc(
        "Your store number, unique in the organization (imports match on it)",
        "LY-012",
        default=None,
    )
    address: Address | None = doc(
        "Postal address, free text", "17 rue du Docteur Bouchut, 69003 Lyon", default=None
    )
    timezone: Timezone | None = doc("IANA time zone of the place", "Europe/Paris", default=None)
    point: GeoJSONPoint | None = doc(
        "Where the place is: GeoJSON Point `[lon, lat]`, WGS 84 degrees",
        {"type": "Point", "coordinates": [4.8567, 45.7607]},
        default=None,
    )
    geofence: GeoJSONArea | None = doc(
        "The place's area: GeoJSON Polygon or MultiPolygon covering `point`",
        {
            "type": "Polygon",
            "coordinates": [
                [
                    [4.855, 45.760],
                    [4.858, 45.760],
                    [4.858, 45.762],
                    [4.855, 45.762],
                    [4.855, 45.760],
                ]
            ],
        },
        default=None,
    )
    radius_m: RadiusM = doc(
        "The place's area as a circle around `point`, metres (0 < r <= 50,000)", 150, default=None
    )

    @model_validator(mode="after")
    def _area(self) -> LocationUpdate:
        check_area(self.point, self.geofence, self.radius_m)
        return self


class LocationRead(Schema):
    """A location as the API shows it; ``distance_m`` (geodesic metres) only in answers
    to ``GET /v1/locations?near=``."""

    model_config = ConfigDict(extra="ignore")

    id: int = doc(_ID, 1)
    name: str = doc("Store or venue name, 1 to 200 characters", "Lyon Part-Dieu")
    external_id: str | None = doc(
        "Your store number, unique in the organization (imports match on it)", "LY-012"
    )
    address: str | None = doc("Postal address, free text", "17 rue du Docteur Bouchut, 69003 Lyon")
    timezone: str | None = doc("IANA time zone of the place", "Europe/Paris")
    point: dict[str, Any] = doc(
        "Where the place is: GeoJSON Point `[lon, lat]`, WGS 84 degrees",
        {"type": "Point", "coordinates": [4.8567, 45.7607]},
    )
    geofence: dict[str, Any] | None = doc(
        "The place's area: GeoJSON Polygon or MultiPolygon covering `point`",
        {
            "type": "Polygon",
            "coordinates": [
                [
                    [4.855, 45.760],
                    [4.858, 45.760],
                    [4.858, 45.762],
                    [4.855, 45.762],
                    [4.855, 45.760],
                ]
            ],
        },
    )
    radius_m: float | None = doc(
        "The place's area as a circle around `point`, metres (0 < r <= 50,000)", 150
    )
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    updated_at: dt.datetime = doc("Last change, UTC", _WHEN)
    distance_m: float | None = doc(
        "With `near=`: geodesic distance from that point, metres", 412.5, default=None
    )


class LocationImportRead(Schema):
    """Answer of ``POST /v1/locations/import``: rows created and rows updated (matched on
    ``external_id``)."""

    created: int = doc("Locations created", 9950)
    updated: int = doc("Locations updated (matched on `external_id`)", 50)


class NfcCreate(Schema):
    """The ``nfc`` member of a tag of kind ``nfc_sun`` (NTAG 424 DNA): its ``uid`` (14 hex
    digits) and optionally both SDM keys (32 hex digits each); without keys Passerelle
    derives them (see :mod:`campaigns.payloads.keys`). Keys never show in ``repr``."""

    uid: NfcUid = doc("The tag's 7-byte UID, 14 hex digits", "04DE5F1EACC040")
    sdm_meta_read_key: AesKeyHex | None = doc(
        "SDM meta-read key (AES-128, 32 hex digits); derived when absent",
        "00000000000000000000000000000000",
        default=None,
        repr=False,
    )
    sdm_file_read_key: AesKeyHex | None = doc(
        "SDM file-read key (AES-128, 32 hex digits); derived when absent",
        "00000000000000000000000000000000",
        default=None,
        repr=False,
    )

    @model_validator(mode="after")
    def _both_keys_or_none(self) -> NfcCreate:
        if (self.sdm_meta_read_key is None) != (self.sdm_file_read_key is None):
            raise ValueError("send both sdm_meta_read_key and sdm_file_read_key, or neither")
        return self


class TagCreate(Schema):
    """Body of ``POST /v1/campaigns/{id}/tags``. ``placement`` (GeoJSON Point) defaults to
    the point of ``location_id`` when a location is given."""

    kind: Literal["qr", "nfc", "nfc_sun"] = doc(
        "Printed QR code, NFC sticker (NTAG21x) or NTAG 424 DNA secure tag (`nfc_sun`)",
        "qr",
        default="qr",
    )
    label: Name | None = doc(_TAG_LABEL, "window-1", default=None)
    destination_url: HttpUrl | None = doc(
        _TAG_DESTINATION, "https://shop.example.com/paris", default=None
    )
    location_id: int | None = Field(
        default=None,
        strict=True,
        description="The store or venue the tag is placed at (`GET /v1/locations`)",
        examples=[12],
    )
    placement: GeoJSONPoint | None = Field(
        default=None,
        description="Where the tag is, as a GeoJSON Point `[lon, lat]` (WGS 84 degrees); "
        "defaults to the location's point",
        examples=[{"type": "Point", "coordinates": [4.8567, 45.7607]}],
    )
    nfc: NfcCreate | None = doc(
        "Kind `nfc_sun` only (required there): the tag's UID and optionally its keys",
        {"uid": "04DE5F1EACC040"},
        default=None,
        validate_default=True,
    )

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
    """Body of ``PATCH /v1/tags/{id}``: re-point, relabel, disable or re-enable a tag,
    place it (``location_id``; ``placement`` then defaults to the new location's point
    unless sent; ``null`` detaches it and keeps the placement)."""

    label: Name | None = doc(_TAG_LABEL + "; null removes it", "door-left", default=None)
    destination_url: HttpUrl | None = doc(
        _TAG_DESTINATION, "https://shop.example.com/lyon", default=None
    )
    status: Literal["active", "disabled"] | None = doc(
        "`disabled`: scans get the 404 page", "disabled", default=None
    )
    location_id: int | None = Field(
        default=None,
        strict=True,
        description="The store or venue the tag is placed at (`GET /v1/locations`)",
        examples=[12],
    )
    placement: GeoJSONPoint | None = Field(
        default=None,
        description="Where the tag is, as a GeoJSON Point `[lon, lat]` (WGS 84 degrees); "
        "defaults to the location's point",
        examples=[{"type": "Point", "coordinates": [4.8567, 45.7607]}],
    )


class NfcRead(Schema):
    """The NTAG 424 DNA identity of an ``nfc_sun`` tag: ``uid`` (14 upper-case hex digits)
    and ``key_derivation_version`` (null when the keys were supplied). Never the keys."""

    uid: str = doc("The tag's 7-byte UID, 14 upper-case hex digits", "04DE5F1EACC040")
    key_derivation_version: int | None = doc(
        "Version of the key derivation that made its keys; null when they were supplied", 1
    )


class NfcCreated(NfcRead):
    """``nfc`` of the creation response only: also the two SDM keys (32 upper-case hex
    digits each), for the personalisation tool. They are never shown again."""

    sdm_meta_read_key: str = doc(
        "SDM meta-read key, shown this once", "6A2D9F0C1B3E4F5A6B7C8D9E0F1A2B3C"
    )
    sdm_file_read_key: str = doc(
        "SDM file-read key, shown this once", "1F2E3D4C5B6A79880716253443526170"
    )


class TagRead(Schema):
    """A tag: ``short_url`` is ``{BASE_URL}/s/{code}``; ``qr_content`` is the form encoded
    in QR codes (host and path upper case, for the alphanumeric mode)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    code: str = doc("8 characters of Crockford base32, unique across the service", "7KQ2M9XD")
    short_url: str = doc(
        "The link phones open: `{BASE_URL}/s/{code}`", "https://go.example.com/s/7KQ2M9XD"
    )
    qr_content: str = doc(
        "What the QR code encodes: the short link upper-cased (alphanumeric mode)",
        "HTTPS://GO.EXAMPLE.COM/S/7KQ2M9XD",
    )
    kind: str = doc("`qr`, `nfc` or `nfc_sun`", "qr")
    campaign_id: int = doc("The campaign the tag belongs to", 1)
    label: str | None = doc(_TAG_LABEL, "window-1")
    destination_url: str | None = doc(_TAG_DESTINATION, None)
    status: str = doc("`active` or `disabled`", "active")
    location_id: int | None = doc("The store or venue the tag is placed at", 12, default=None)
    placement: dict[str, Any] | None = Field(
        default=None,
        description="Where the tag is: a GeoJSON Point `[lon, lat]`",
        examples=[{"type": "Point", "coordinates": [4.8567, 45.7607]}],
    )
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    nfc: NfcRead | None = doc("Kind `nfc_sun` only: UID and key derivation version", None)


class TagCreated(TagRead):
    """Answer of ``POST /v1/campaigns/{id}/tags``: a :class:`TagRead` whose ``nfc`` (kind
    ``nfc_sun``) carries the keys, this once."""

    nfc: NfcCreated | None = doc("Kind `nfc_sun` only: UID, derivation version and keys", None)


#: Most tags one bulk call may create or return (locations x labels).
MAX_BULK_TAGS = 100_000
#: Most tags per location in one bulk call (``per_location``, or labels).
MAX_TAGS_PER_LOCATION = 100


def _unique_labels(labels: list[str] | None) -> list[str] | None:
    if labels is not None and len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")
    return labels


class TagBulkCreate(Schema):
    """Body of ``POST /v1/campaigns/{id}/tags/bulk``: tags for every location of
    ``location_ids`` (or ``"all"`` the organization's), one per label. Labels are
    ``labels``, else ``"1"`` ... ``"{per_location}"``; with both, ``per_location`` must
    equal the number of labels (422 ``labels_mismatch``)."""

    kind: Literal["qr", "nfc"] = doc(
        "Printed QR codes or NFC stickers (NTAG21x)", "qr", default="qr"
    )
    per_location: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_TAGS_PER_LOCATION,
        description="Tags per location, 1 to 100; labelled `1` ... `N` when `labels` is "
        "absent, else equal to the number of labels",
        examples=[3],
    )
    location_ids: (
        Annotated[
            list[Annotated[int, Field(strict=True)]], Field(min_length=1, max_length=MAX_BULK_TAGS)
        ]
        | Literal["all"]
    ) = doc(
        "The locations (`GET /v1/locations`) to place tags at (a repeated id counts once), "
        'or `"all"` of the organization\'s',
        [12, 13],
        "all",
    )
    labels: (
        Annotated[
            list[Name],
            Field(min_length=1, max_length=MAX_TAGS_PER_LOCATION),
            AfterValidator(_unique_labels),
        ]
        | None
    ) = doc(
        "Distinct labels of the tags at each location (1 to 100); default `1` ... `per_location`",
        ["window", "counter", "receipt"],
        default=None,
    )

    @model_validator(mode="after")
    def _count_given(self) -> TagBulkCreate:
        if self.per_location is None and self.labels is None:
            raise ValueError("send per_location, labels, or both")
        return self


class TagBulkRead(Schema):
    """Answer of ``POST /v1/campaigns/{id}/tags/bulk`` (201 when it created tags, 200
    when they all existed): every tag the request names, created or already there,
    ordered by location (as requested; by id for ``"all"``) then label (as requested),
    and how many of them this call ``created``."""

    created: int = doc("Tags this call created; the others already existed", 6)
    existing: int = doc("Tags that already existed (same campaign, location and label)", 0)
    tags: list[TagRead] = doc(
        "Every tag of the request, created or existing",
        [
            {
                "id": 1,
                "code": "7KQ2M9XD",
                "short_url": "https://go.example.com/s/7KQ2M9XD",
                "qr_content": "HTTPS://GO.EXAMPLE.COM/S/7KQ2M9XD",
                "kind": "qr",
                "campaign_id": 1,
                "label": "window",
                "destination_url": None,
                "status": "active",
                "location_id": 12,
                "placement": {"type": "Point", "coordinates": [4.8567, 45.7607]},
                "created_at": _WHEN,
                "nfc": None,
            }
        ],
    )


class NdefRead(Schema):
    """Answer of ``GET /v1/tags/{id}/ndef?format=json``: the NDEF message for ``url`` as
    ``ndef_hex`` (``size_bytes`` long), the Type 2 TLV area written from page 4 as
    ``tlv_hex``, and the ``chip`` with its ``capacity_bytes``. Hex is upper case."""

    url: str = doc("The URL in the URI record", "https://go.example.com/s/7KQ2M9XD")
    ndef_hex: str = doc(
        "The NDEF message", "D1011A5504676F2E6578616D706C652E636F6D2F732F374B51324D395844"
    )
    tlv_hex: str = doc(
        "What is written from page 4: NDEF Message TLV then Terminator TLV (FE)",
        "031ED1011A5504676F2E6578616D706C652E636F6D2F732F374B51324D395844FE",
    )
    size_bytes: int = doc("Length of the NDEF message, bytes", 30)
    capacity_bytes: int = doc("NDEF area declared by the chip's capability container", 144)
    chip: str = doc("`ntag213`, `ntag215` or `ntag216`", "ntag213")


class SdmKeyNumbers(Schema):
    """Which key slot (0-4) of the NTAG 424 DNA holds which key (AN12196's example)."""

    app_master: int = doc("Application master key slot", 0)
    sdm_meta_read: int = doc("SDM meta-read key slot (PICCData encryption)", 2)
    sdm_file_read: int = doc("SDM file-read key slot (SDMMAC)", 1)


class SdmRead(Schema):
    """Answer of ``GET /v1/tags/{id}/sdm``: what a personalisation tool writes on an
    NTAG 424 DNA. ``ndef_file_hex`` is the NDEF file (``NLEN`` then the message); the
    offsets are byte positions from its first byte."""

    uid: str = doc("The tag's UID", "04DE5F1EACC040")
    url_template: str = doc(
        "The tap URL with zeroed mirrors",
        "https://go.example.com/n/7KQ2M9XD?e=00000000000000000000000000000000&c=0000000000000000",
    )
    ndef_file_hex: str = doc("The NDEF file: 2-byte NLEN, then the message", "0054D101505504...")
    picc_data_offset: int = doc("Byte offset of the encrypted PICCData mirror (`e=`)", 35)
    sdm_mac_input_offset: int = doc("Byte offset where SDMMAC input starts (= MAC offset)", 70)
    sdm_mac_offset: int = doc("Byte offset of the SDMMAC mirror (`c=`)", 70)
    key_numbers: SdmKeyNumbers = doc(
        "Key slots", {"app_master": 0, "sdm_meta_read": 2, "sdm_file_read": 1}
    )


class Page(Schema, Generic[T]):
    """A page of a cursor-paginated list: pass ``next_cursor`` as ``cursor`` for more."""

    items: list[T] = doc("This page's items, newest first", [])
    next_cursor: str | None = doc("Pass as `cursor` for the next page; null on the last", "aWQ6NDI")


class ConversionCreate(Schema):
    """Body of ``POST /v1/conversions``. ``external_id`` is the idempotency key (the order
    number): the same one again with the same body answers the stored conversion."""

    click_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    ] = doc("The `pcid` the short link appended to the destination", "aTvF6AbnfnAUZXmG")
    event: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
        AfterValidator(_check_text),
    ] = doc("What happened, 1 to 100 characters", "purchase")
    value: Money | None = doc(
        "What the conversion is worth, if anything",
        {"amount_minor": 4990, "currency": "EUR"},
        default=None,
    )
    external_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_text)
    ] = doc("Your unique id for it (order number): the idempotency key", "order-1001")
    occurred_at: Timestamp | None = doc(
        "When it happened, ISO 8601 with a timezone; default the receive time; at most 24 h ahead",
        "2026-11-29T11:20:00Z",
        default=None,
    )


class ConversionRead(Schema):
    """A stored conversion and how it was attributed (last touch on its click id)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    click_id: str | None = doc(
        "The click id sent; null once the person behind it had their data erased "
        "(`DELETE /v1/privacy/scans`)",
        "aTvF6AbnfnAUZXmG",
    )
    event: str = doc("What happened", "purchase")
    value: Money | None = doc("What it is worth", {"amount_minor": 4990, "currency": "EUR"})
    external_id: str = doc("Your unique id for it", "order-1001")
    occurred_at: dt.datetime = doc("When it happened, UTC", _WHEN)
    attributed: bool = doc(
        "True when `click_id` is a scan of this organization (not an internal one: staff "
        "testing a poster from a phone signed into the dashboard)",
        True,
    )
    scan_id: int | None = doc("The scan credited (last touch); null if unattributed", 42)
    campaign_id: int | None = doc("That scan's campaign", 1)
    tag_id: int | None = doc("That scan's tag", 1)


class RevenueRead(Schema):
    """The summed value of conversions in one currency, in minor units (no conversion
    between currencies: one entry per ISO 4217 code, sorted by code)."""

    currency: str = doc("ISO 4217 currency code", "EUR")
    amount_minor: int = doc("Sum in minor units of the currency", 4990)


class TagStats(Schema):
    """One tag's share of :class:`CampaignStats` (same window, same definitions)."""

    tag_id: int = doc("The tag", 1)
    code: str = doc("Its code", "7KQ2M9XD")
    label: str | None = doc("Its label", "window-1")
    scans: int = doc(_SCANS, 120)
    bot_scans: int = doc(_BOT_SCANS, 7)
    bot_scans_by_reason: dict[str, int] = doc(
        _BOT_REASONS,
        {"head": 0, "prefetch": 2, "previewer": 3, "scanner": 1, "crawler": 1, "no_user_agent": 0},
    )
    burst_scans: int = doc(_BURST, 0)
    replayed_taps: int = doc(_REPLAYED_TAPS, 1)
    invalid_taps: int = doc(_INVALID_TAPS, 0)
    internal_scans: int = doc(_INTERNAL_SCANS, 2)
    unique_visitors: int = doc(_UNIQUES, 96)
    conversions: int = doc(_CONVERSIONS, 6)
    revenue: list[RevenueRead] = doc(_REVENUE, [{"currency": "EUR", "amount_minor": 29940}])
    conversion_rate: float = doc(_RATE, 0.05)


Interval = Literal["hour", "day", "week"]


class SeriesPoint(Schema):
    """One bucket of a stats series: the figures of ``[start, next start)`` with the same
    definitions as the totals (human scans, valid taps, refunds by their own time)."""

    start: dt.datetime = doc(
        "Bucket start: local midnight, local hour or Monday 00:00, ISO 8601 with the offset "
        "of the report's time zone",
        "2026-03-29T00:00:00+01:00",
    )
    scans: int = doc(_SCANS, 12)
    unique_visitors: int = doc("Distinct daily visitors among the bucket's human scans", 10)
    conversions: int = doc("Conversions attributed (last touch) with `occurred_at` in it", 1)
    revenue: list[RevenueRead] = doc(
        "Their value less refunds dated in the bucket, per currency",
        [{"currency": "EUR", "amount_minor": 4990}],
    )


class BreakdownRow(Schema):
    """Human scans with one value of a scan attribute, and the conversions credited (last
    touch: the scan of their click id) to those scans."""

    key: str | None = doc("The attribute's value (null: unknown)", "qr")
    scans: int = doc(_SCANS, 120)
    conversions: int = doc("Conversions in the window whose click scan has this value", 6)


class Breakdowns(Schema):
    """Scans and conversions per channel, device type, operating system and country;
    rows by scans (descending), then key."""

    channel: list[BreakdownRow] = doc("Per channel (`qr`, `nfc`, ...)", [])
    device_type: list[BreakdownRow] = doc("Per device type (`mobile`, `tablet`, ...)", [])
    os: list[BreakdownRow] = doc("Per operating system family", [])
    country: list[BreakdownRow] = doc(
        "Per ISO 3166-1 alpha-2 country of the scan (empty until scans are geolocated)", []
    )


class CampaignStats(Schema):
    """Answer of ``GET /v1/campaigns/{id}/stats`` over ``[from, to)``.

    ``scans`` excludes bots (``bot_scans``, split in ``bot_scans_by_reason``: every
    reason of ``head, prefetch, previewer, scanner, crawler, no_user_agent``, zeros
    included); ``burst_scans`` counts the human scans from an address past the per-address
    rate (included in ``scans``); NFC taps of NTAG 424 DNA tags count in ``scans`` (or
    ``bot_scans``) only when ``valid``, the others in ``replayed_taps`` or
    ``invalid_taps``; scans from a phone signed into the dashboard (staff) count only in
    ``internal_scans``; ``unique_visitors`` is the number of distinct
    daily visitor ids among human scans, so over several days it is the sum of daily
    uniques; ``conversions`` and ``revenue`` are conversions attributed to the campaign
    with ``occurred_at`` in the window; ``conversion_rate`` is ``conversions / scans``
    (0.0 without scans; it can exceed 1).
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, populate_by_name=True)

    campaign_id: int = doc("The campaign", 1)
    from_: dt.datetime | None = doc(
        "Window start (inclusive) as asked; null: from the beginning",
        "2026-11-01T00:00:00Z",
        default=None,
        alias="from",
    )
    to: dt.datetime | None = doc(
        "Window end (exclusive) as asked; null: until now", "2026-12-01T00:00:00Z", default=None
    )
    scans: int = doc(_SCANS, 240)
    bot_scans: int = doc(_BOT_SCANS, 12)
    bot_scans_by_reason: dict[str, int] = doc(
        _BOT_REASONS,
        {"head": 0, "prefetch": 2, "previewer": 3, "scanner": 1, "crawler": 1, "no_user_agent": 0},
    )
    burst_scans: int = doc(_BURST, 0)
    replayed_taps: int = doc(_REPLAYED_TAPS, 2)
    invalid_taps: int = doc(_INVALID_TAPS, 1)
    internal_scans: int = doc(_INTERNAL_SCANS, 4)
    unique_visitors: int = doc(_UNIQUES, 190)
    conversions: int = doc(_CONVERSIONS, 9)
    revenue: list[RevenueRead] = doc(_REVENUE, [{"currency": "EUR", "amount_minor": 44910}])
    conversion_rate: float = doc(_RATE, 0.0375)
    by_tag: list[TagStats] = doc(
        "The same figures per tag of the campaign (tags without scans included)", []
    )
    timezone: str = doc(
        "IANA time zone of the series buckets (`tz=` or the campaign's)", "Europe/Paris"
    )
    interval: Interval | None = doc("Bucket size of `series`; null: no series", "day", default=None)
    series: list[SeriesPoint] | None = doc(
        "One point per bucket from the bucket holding `from` (else the first scan or "
        "conversion) to the one holding `to` (else now), empty buckets included; null "
        "without `interval`",
        None,
        default=None,
    )
    cost: Money | None = doc("The campaign's cost; null when not set", _MONEY_EXAMPLE)
    roas: float | None = doc(
        "Return on ad spend: revenue credited by `model` (the `/attribution` totals for "
        "the same window) in the cost's currency, divided by the cost; null without a "
        "cost or with a zero cost",
        2.5,
    )
    breakdowns: Breakdowns = doc(
        "Scans and credited conversions per channel, device type, OS and country",
        {"channel": [{"key": "qr", "scans": 240, "conversions": 9}]},
    )


_ALLOWED_HOSTS = (
    "Hosts destination URLs may point at: exact hosts (`shop.example.com`) or "
    "`*.example.com` for any subdomain of example.com (not example.com itself); checked "
    "on every write of a campaign, tag, rule or split arm. Null or empty: unrestricted"
)


def _host_pattern(value: str) -> str:
    from campaigns.services.destinations import normalise_host_pattern

    return normalise_host_pattern(value)


HostPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_host_pattern)
]


class OrganizationRead(Schema):
    """The calling key's organization and its settings (``GET /v1/organization``).

    ``visitor_cookie``: whether scans may set a first-party visitor cookie, which links a
    visitor's scans across days for attribution (off by default: in the EU such a cookie
    needs the visitor's consent). ``visitor_cookie_consent``: who obtains that consent,
    ``organization`` (the organization's own consent management covers it) or ``ask``
    (Passerelle asks the visitor before setting it).
    """

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    name: str = doc(_NAME, "Acme")
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    visitor_cookie: bool = doc(_VISITOR_COOKIE, False)
    visitor_cookie_consent: Literal["organization", "ask"] = doc(_COOKIE_CONSENT, "organization")
    scan_retention_days: int = doc(_SCAN_RETENTION, 395)
    precise_location_retention_days: int = doc(_PRECISE_RETENTION, 30)
    allowed_destination_hosts: list[str] | None = doc(
        _ALLOWED_HOSTS, ["shop.example.com", "*.example.fr"], default=None
    )


class OrganizationUpdate(Schema):
    """Body of ``PATCH /v1/organization``: only the fields sent change; none may be null
    but ``allowed_destination_hosts`` (null: unrestricted)."""

    name: Name | None = doc(_NAME, "Acme France", default=None)
    visitor_cookie: bool | None = doc(_VISITOR_COOKIE, True, default=None, strict=True)
    visitor_cookie_consent: Literal["organization", "ask"] | None = doc(
        _COOKIE_CONSENT, "ask", default=None
    )
    scan_retention_days: int | None = doc(
        _SCAN_RETENTION, 395, default=None, ge=1, le=3650, strict=True
    )
    precise_location_retention_days: int | None = doc(
        _PRECISE_RETENTION, 30, default=None, ge=1, le=3650, strict=True
    )
    allowed_destination_hosts: list[HostPattern] | None = doc(
        _ALLOWED_HOSTS, ["shop.example.com", "*.example.fr"], default=None, max_length=100
    )

    @field_validator(
        "name",
        "visitor_cookie",
        "visitor_cookie_consent",
        "scan_retention_days",
        "precise_location_retention_days",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields that were sent: an explicit null is refused, an absent
        # field stays unchanged (allowed_destination_hosts alone takes null: unrestricted).
        if value is None:
            raise ValueError("must not be null")
        return value

    @field_validator("allowed_destination_hosts")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        # Stored normalised and without duplicates; an empty list means unrestricted.
        if value is None:
            return None
        return list(dict.fromkeys(value)) or None


class NoncompliantDestination(Schema):
    """A stored URL whose host ``allowed_destination_hosts`` no longer allows."""

    resource_type: Literal["campaign", "tag", "rule"] = doc("What holds the URL", "campaign")
    id: int = doc(_ID, 42)
    field: str = doc(
        "Which URL: `destination_url`, `fallback_url`, `split.<i>.destination_url`",
        "destination_url",
    )
    url: str = doc("The URL", "https://old-shop.example.net/summer")


class OrganizationUpdated(OrganizationRead):
    """The organization after ``PATCH``, with what its new ``allowed_destination_hosts``
    no longer allows (stored before the list shrank; fix or re-point them)."""

    noncompliant_destinations: list[NoncompliantDestination] = doc(
        "Live campaigns, tags and rules with a URL outside the allowed hosts "
        "(empty when the list is unrestricted or was not changed)",
        [],
        default_factory=list,
    )


class RefundCreate(Schema):
    """Body of ``POST /v1/conversions/{id}/refunds``: ``amount_minor`` in the conversion's
    currency; ``external_id`` (the merchant's refund id) makes the call idempotent;
    ``refunded_at`` defaults to the receive time."""

    amount_minor: int = doc(
        "Amount refunded, minor units of the conversion's currency",
        1999,
        gt=0,
        le=10**15,
        strict=True,
    )
    external_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_text)
    ] = doc("The merchant's refund id (idempotency key, unique per organization)", "refund-4411")
    refunded_at: Timestamp | None = doc(
        "When the refund happened; default: when received", "2026-11-30T10:00:00Z", default=None
    )


class RefundRead(Schema):
    """A stored refund (``amount_minor`` in ``currency``, the conversion's)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    conversion_id: int = doc("The refunded conversion", 1)
    external_id: str = doc("The merchant's refund id", "refund-4411")
    amount_minor: int = doc("Amount refunded, minor units", 1999)
    currency: str = doc("ISO 4217 code, the conversion's", "EUR")
    refunded_at: dt.datetime = doc("When the refund happened, UTC", _WHEN)
    created_at: dt.datetime = doc("When it was received, UTC", _WHEN)


class _AttributionFigures(Schema):
    conversions: float = doc(
        "Fractional conversions credited (credits sum to 1 per conversion)", 0.4
    )
    revenue: list[RevenueRead] = doc(
        "Credited value less credited refunds, minor units per currency",
        [{"currency": "EUR", "amount_minor": 4000}],
    )


class TagAttribution(_AttributionFigures):
    """Credit earned by the scans of one tag."""

    tag_id: int = doc("The tag", 1)


class LocationAttribution(_AttributionFigures):
    """Credit earned by the scans of the tags of one location (``null``: no location)."""

    location_id: int | None = doc("The tag's location; null for tags without one", 12)


class DayAttribution(_AttributionFigures):
    """Credit earned by the scans of one day (``YYYY-MM-DD`` in the campaign's time zone)."""

    day: dt.date = doc("The touch's day in the campaign's time zone", "2026-11-28")


class AttributionTotals(_AttributionFigures):
    """The sum of the rows: everything credited to this campaign's scans."""


class Unattributed(Schema):
    """The organization's conversions in the window without a journey (no scan of their
    click id); ``revenue`` is their value less their refunds dated in the window."""

    conversions: int = doc("Conversions without a journey", 3)
    revenue: list[RevenueRead] = doc(
        "Their value less refunds, per currency", [{"currency": "EUR", "amount_minor": 8990}]
    )


class AttributionReport(Schema):
    """Answer of ``GET /v1/campaigns/{id}/attribution`` (see the route's description).

    ``conversions`` are fractional credits (a JSON number, e.g. ``0.4``); ``revenue`` is in
    minor units per currency, after refunds dated in the window.
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, populate_by_name=True)

    campaign_id: int = doc("The campaign", 1)
    model: Model = doc("The attribution model", "linear")
    group_by: Literal["tag", "location", "day"] = doc("How rows are grouped", "tag")
    lookback_days: int = doc("Lookback window before each conversion, days (1 to 90)", 30)
    half_life_days: float = doc("Half-life of `time_decay`, days", 7.0)
    timezone: str = doc("Time zone of `day` rows (the campaign's)", "Europe/Paris")
    from_: dt.datetime | None = doc(
        "Conversions from (inclusive), by `occurred_at`",
        "2026-11-01T00:00:00Z",
        default=None,
        alias="from",
    )
    to: dt.datetime | None = doc("Conversions until (exclusive)", None, default=None)
    rows: list[TagAttribution] | list[LocationAttribution] | list[DayAttribution] = doc(
        "Credit per group key", [{"tag_id": 1, "conversions": 0.4, "revenue": []}]
    )
    totals: AttributionTotals = doc("Sum of the rows", {"conversions": 0.4, "revenue": []})
    data_since: dt.datetime = doc(_DATA_SINCE, "2025-11-06T00:00:00Z")
    unattributed: Unattributed = doc(
        "The organization's conversions in the window with no journey",
        {"conversions": 0, "revenue": []},
    )


#: Largest accuracy radius a browser fix may claim, in metres: past it the fix says less
#: than the IP position already does.
MAX_FIX_ACCURACY_M = 100_000.0


def _fix_number(low: float, high: float, what: str) -> Callable[[Any], float]:
    """A validator: a JSON number, finite, within ``[low, high]``; anything else is an
    ``invalid_coordinates`` problem (the beacon's one 422 code)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PydanticCustomError(
                "invalid_coordinates", "{what} must be a number", {"what": what}
            )
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits: out of range
            number = math.inf
        if not (math.isfinite(number) and low <= number <= high):
            raise PydanticCustomError(
                "invalid_coordinates",
                "{what} must be a finite number in [{low}, {high}]",
                {"what": what, "low": low, "high": high},
            )
        return number

    return check


def _fix_field(low: float, high: float, what: str) -> Any:
    return Annotated[
        Any,
        AfterValidator(_fix_number(low, high, what)),
        WithJsonSchema({"type": "number", "minimum": low, "maximum": high}),
    ]


class ScanLocationCreate(Schema):
    """Body of ``POST /s/{click_id}/location``: the browser's Geolocation API answer
    (``GeolocationCoordinates``: ``latitude``, ``longitude``, ``accuracy``; W3C
    Geolocation API §9)."""

    lat: _fix_field(-90.0, 90.0, "lat") = doc("Latitude, WGS 84 degrees", 48.8606)  # type: ignore[valid-type]
    lon: _fix_field(-180.0, 180.0, "lon") = doc("Longitude, WGS 84 degrees", 2.3376)  # type: ignore[valid-type]
    accuracy_m: _fix_field(0.0, MAX_FIX_ACCURACY_M, "accuracy_m") = doc(  # type: ignore[valid-type]
        "Radius of 95% confidence around the position, metres (0 to 100 km)", 12.5
    )


class ScanRead(Schema):
    """One scan as reports show it: never an address (not even truncated) nor a visitor
    id. ``position`` is the position of record, a consented browser fix when there is one
    (``geo_source: gps``), else the tag's placement (``placement``) or the IP position
    (``ip``)."""

    id: int = doc(_ID, 1042)
    click_id: str = doc("The click id (`pcid`) the redirect carried", "aTvF6AbnfnAUZXmG")
    tag_id: int = doc("The tag scanned", 7)
    scanned_at: dt.datetime = doc("When, UTC", _WHEN)
    channel: str = doc("`qr` or `nfc`", "qr")
    is_bot: bool = doc("Not a person's scan (see `bot_reason`)", False)
    bot_reason: str | None = doc(
        "`head`, `prefetch`, `previewer`, `scanner`, `crawler` or `no_user_agent`", None
    )
    device_type: str | None = doc("`mobile`, `tablet`, `desktop` or null", "mobile")
    os: str | None = doc("Operating system family", "iOS")
    browser: str | None = doc("Browser family", "Mobile Safari")
    country: str | None = doc("ISO 3166-1 alpha-2, from the address (GeoIP)", "FR")
    region: str | None = doc("ISO 3166-2 subdivision without the country prefix", "IDF")
    city: str | None = doc("City name (English), from the address", "Paris")
    position: dict[str, Any] | None = doc(
        "Position of record: GeoJSON Point `[lon, lat]`, WGS 84",
        {"type": "Point", "coordinates": [2.3376, 48.8606]},
    )
    geo_source: Literal["gps", "placement", "ip"] | None = doc(
        "Where `position` comes from: `gps` (consented browser fix), `placement` (the "
        "tag's), `ip` (the address's)",
        "placement",
    )
    accuracy_m: float | None = doc(
        "Radius around `position` in metres (null for a placement)", None
    )
    location_id: int | None = doc(
        "The store matched: the location whose area covers the position, else the tag's",
        3,
    )
    far_from_placement: bool | None = doc(
        "The IP position is farther from the tag's placement than its accuracy plus 50 km",
        False,
    )
    rule_id: int | None = doc("The redirect rule that chose the destination", None)
    variant: str | None = doc("The split variant served", None)
    internal: bool = doc(
        "From a phone signed into the organization's dashboard (staff testing a poster): "
        "left out of every figure",
        False,
    )
    outcome: str = doc(
        "What the scan got: `redirect` (the destination), `fallback` (the campaign's "
        "fallback URL, outside its schedule) or `blocked` (an NFC tap refused with the "
        '"tap again" page under `nfc_invalid_tap: block`)',
        "redirect",
    )
    nfc_counter: int | None = doc(
        "An NTAG 424 DNA tap's read counter (SDMReadCtr), from its authentic SUN message",
        None,
    )
    nfc_verification: Literal["valid", "replayed", "invalid"] | None = doc(
        "An `nfc_sun` tag's tap: `valid`, `replayed` (a counter not above the last "
        "accepted one) or `invalid` (no, forged or foreign SUN message); null otherwise",
        None,
    )


class ScanPage(Page[ScanRead]):
    """A page of a campaign's scans, newest first."""


class LocationStatsRow(Schema):
    """One store's share of a campaign's scans (:class:`LocationStats`); ``location_id``
    null for the scans matched to no store."""

    location_id: int | None = doc("The matched store (null: none)", 3)
    name: str | None = doc("Its name", "Paris Rivoli")
    external_id: str | None = doc("Its store number", "PAR-01")
    scans: int = doc("Human scans matched to it", 120)
    bot_scans: int = doc("Scans by bots, previewers and HEAD requests", 4)
    unique_visitors: int = doc("Distinct daily visitor ids among the human scans", 96)
    gps_scans: int = doc("Human scans with a consented browser position", 12)
    far_from_placement: int = doc(
        "Human scans whose IP position is far from the tag's placement", 3
    )
    conversions: int = doc(
        "Conversions in the window credited to this store: their click id's scan matched it",
        7,
        default=0,
    )
    revenue: list[RevenueRead] = doc(
        "Their value less refunds dated in the window, per currency",
        [{"currency": "EUR", "amount_minor": 34930}],
        default_factory=list,
    )


class LocationStats(Schema):
    """Answer of ``GET /v1/campaigns/{id}/stats/locations`` over ``[from, to)``: one row
    per store matched by at least one scan (most human scans first, then by id), and the
    unmatched scans last (``location_id: null``) when there are any."""

    campaign_id: int = doc(_ID, 1)
    rows: list[LocationStatsRow] = doc("One row per matched store", [])


def _check_country(value: str) -> str:
    if pycountry.countries.get(alpha_2=value) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


CountryCode = Annotated[
    str,
    StringConstraints(to_upper=True, pattern=r"^[A-Za-z]{2}$"),
    AfterValidator(_check_country),
]
LanguageCode = Annotated[str, StringConstraints(to_lower=True, pattern=r"^[A-Za-z]{2,3}$")]
DeviceType = Literal["mobile", "tablet", "desktop", "bot"]
OsName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_check_text),
]
VariantName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_-]{1,64}$")
]


class RuleConditions(Schema):
    """What a scan must have for the rule to apply: every condition given must hold (a
    scan whose value is unknown never matches it); none given: every scan."""

    countries: Annotated[list[CountryCode], Field(min_length=1, max_length=250)] | None = doc(
        "ISO 3166-1 alpha-2 countries of the scan's address (GeoIP)", ["FR", "BE"], default=None
    )
    location_ids: (
        Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=1000)] | None
    ) = doc(
        "Matched stores (the location whose area covers the scan, else the tag's)",
        [3, 4],
        default=None,
    )
    os: Annotated[list[OsName], Field(min_length=1, max_length=20)] | None = doc(
        "Operating system families (`iOS`, `Android`...), without case", ["iOS"], default=None
    )
    device_types: Annotated[list[DeviceType], Field(min_length=1, max_length=4)] | None = doc(
        "`mobile`, `tablet`, `desktop` or `bot`", ["mobile"], default=None
    )
    languages: Annotated[list[LanguageCode], Field(min_length=1, max_length=50)] | None = doc(
        "Primary language subtags; the visitor's most preferred `Accept-Language`",
        ["fr"],
        default=None,
    )


class SplitVariant(Schema):
    """One arm of a weighted split."""

    name: VariantName | None = doc(
        "Its name, stored on the scan as `variant`; default `A`, `B`, ... by position",
        "A",
        default=None,
    )
    destination_url: HttpUrl = doc(_DESTINATION, "https://shop.example.com/a")
    weight: int = doc("Relative weight, 1 to 10,000", 50, ge=1, le=10_000)


Split = Annotated[list[SplitVariant], Field(min_length=2, max_length=10)]
_RULE_PRIORITY = "Evaluation order: the lowest matching number wins (ties: the oldest rule)"
_RULE_TARGET = "Give `destination_url` or `split`, not both"


def _named(split: list[SplitVariant] | None) -> list[SplitVariant] | None:
    """``split`` with every arm named: an arm without a name gets the letter of its
    position (``A``, ``B``, ...). Raises ``ValueError`` for names used twice."""
    if split is None:
        return None
    named = [
        arm if arm.name is not None else arm.model_copy(update={"name": chr(ord("A") + i)})
        for i, arm in enumerate(split)
    ]
    if len({arm.name for arm in named}) != len(named):
        raise ValueError("split names must be unique within a split")
    return named


class RuleCreate(Schema):
    """Body of ``POST /v1/campaigns/{id}/rules``: conditions (``when``) and one target."""

    priority: int = doc(_RULE_PRIORITY, 10, default=100, ge=0, le=1_000_000)
    when: RuleConditions = doc(
        "What a scan must have", {"countries": ["BE"]}, default_factory=RuleConditions
    )
    destination_url: HttpUrl | None = doc(
        "Where matching scans go; " + _RULE_TARGET, "https://shop.example.com/be", default=None
    )
    split: Split | None = doc(
        "Weighted variants (2 to 10); " + _RULE_TARGET,
        None,
        default=None,
    )

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        if (self.destination_url is None) == (self.split is None):
            raise ValueError("give exactly one of destination_url or split")
        self.split = _named(self.split)
        return self


class RuleUpdate(Schema):
    """Body of ``PATCH /v1/rules/{id}``: only the fields sent change; sending
    `destination_url` replaces a split and sending `split` replaces a destination."""

    priority: int | None = doc(_RULE_PRIORITY, 5, default=None, ge=0, le=1_000_000)
    when: RuleConditions | None = doc(
        "Replaces all the conditions", {"os": ["Android"]}, default=None
    )
    destination_url: HttpUrl | None = doc(
        "New single target", "https://shop.example.com/android", default=None
    )
    split: Split | None = doc("New weighted target", None, default=None)

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        if self.destination_url is not None and self.split is not None:
            raise ValueError("give destination_url or split, not both")
        if self.split is not None:  # assigning would mark an absent split as sent
            self.split = _named(self.split)
        return self


class RuleRead(Schema):
    """A redirect rule."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    campaign_id: int = doc("Its campaign", 1)
    priority: int = doc(_RULE_PRIORITY, 10)
    when: RuleConditions = doc(
        "What a scan must have", {"countries": ["BE"]}, validation_alias="conditions"
    )
    destination_url: str | None = doc("Single target", "https://shop.example.com/be")
    split: list[SplitVariant] | None = doc("Weighted target", None)
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    updated_at: dt.datetime = doc("Last change, UTC", _WHEN)


class RuleList(Schema):
    """A campaign's rules in evaluation order."""

    items: list[RuleRead] = doc("The rules, lowest priority number first", [])


WebhookEvent = Literal["scan.created", "conversion.created"]
_WEBHOOK_URL = (
    "Where events are POSTed: https (http only in development and test), no credentials; "
    "its host must resolve to public addresses only"
)
_WEBHOOK_EVENTS = "Events sent: `scan.created`, `conversion.created` (at least one)"


class WebhookCreate(Schema):
    """Body of ``POST /v1/webhooks``."""

    url: HttpUrl = doc(_WEBHOOK_URL, "https://hooks.example.com/passerelle")
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=2)] = doc(
        _WEBHOOK_EVENTS, ["scan.created", "conversion.created"]
    )

    @field_validator("events")
    @classmethod
    def _unique_events(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookRead(Schema):
    """A webhook (its secret is never shown again after creation)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc(_ID, 1)
    url: str = doc(_WEBHOOK_URL, "https://hooks.example.com/passerelle")
    events: list[WebhookEvent] = doc(_WEBHOOK_EVENTS, ["scan.created"])
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)


class WebhookCreated(WebhookRead):
    """A new webhook with its signing secret, shown only in this answer."""

    secret: str = doc(
        "Signing secret: the HMAC-SHA256 key of `Passerelle-Signature` (its UTF-8 bytes). "
        "Shown once: store it now",
        "whsec_3q2-7wEjsW4L2yXfZpHk0N1lqA8mTzVvYb6cRdUeF9g",
    )


class WebhookPage(Page[WebhookRead]):
    """A page of webhooks, newest first."""


class DeliveryAttempt(Schema):
    """One attempt at a delivery."""

    at: str = doc("When it started, ISO 8601 UTC", _WHEN)
    response_code: int | None = doc("The HTTP status answered; null: no answer", 500)
    error: str | None = doc(
        "Why it failed (`http_500`, `timeout`, `connect_failed`, `webhook_url_not_public`...); "
        "null on success",
        "http_500",
    )
    duration_ms: int = doc("How long it took, milliseconds", 120)


class WebhookDeliveryRead(Schema):
    """One event sent (or to send) to a webhook, and how its attempts went."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int = doc("Delivery id, sent as `Passerelle-Delivery-Id`", 7)
    event_id: str = doc(
        "Event id, sent as `Passerelle-Event-Id`: the same for every attempt and webhook "
        "(deduplicate on it)",
        "evt_scan_aTvF6AbnfnAUZXmG",
    )
    event: str = doc(
        "`scan.created`, `conversion.created` or `ping`",
        "scan.created",
        validation_alias="event_type",
    )
    status: Literal["pending", "succeeded", "failed"] = doc(
        "`pending` (to be attempted at `next_attempt_at`), `succeeded` (a 2xx answer) or "
        "`failed` (gave up after the last attempt)",
        "succeeded",
    )
    attempts: int = doc("Attempts made (since the last manual retry)", 1)
    response_code: int | None = doc("HTTP status of the last attempt; null: no answer", 200)
    error: str | None = doc("Why the last attempt failed; null if it did not", None)
    last_attempt_at: dt.datetime | None = doc("When the last attempt started, UTC", _WHEN)
    next_attempt_at: dt.datetime | None = doc(
        "When the next attempt is due, UTC; null unless `pending`", None
    )
    created_at: dt.datetime = doc("When the event was stored, UTC", _WHEN)
    recent_attempts: list[DeliveryAttempt] = doc(
        "The last ten attempts, oldest first", [], validation_alias="attempt_log"
    )

    @model_validator(mode="after")
    def _no_next_unless_pending(self) -> Any:
        if self.status != "pending":
            self.next_attempt_at = None
        return self


class WebhookDeliveryPage(Page[WebhookDeliveryRead]):
    """A page of a webhook's deliveries, newest first."""


class PrivacyScan(Schema):
    """Everything stored about one scan (an access request): every column of ``scans``.
    ``ip_truncated`` is the only address kept (IPv4 /24, IPv6 /48): the full address is
    never stored. ``visitor_id`` is the day's keyed hash (hex), ``cookie_id`` the visitor
    cookie. ``position``: ``[lon, lat]`` WGS 84 of the scan's own position (placement or
    IP), the consented GPS fix being in ``positions``."""

    id: int = doc(_ID, 1042)
    click_id: str = doc("The click id (`pcid`)", "aTvF6AbnfnAUZXmG")
    organization_id: int = doc(_ID, 1)
    campaign_id: int = doc("The campaign", 1)
    tag_id: int = doc("The tag scanned", 7)
    scanned_at: dt.datetime = doc("When, UTC", _WHEN)
    channel: str = doc("`qr` or `nfc`", "qr")
    method: str = doc("HTTP method", "GET")
    outcome: str = doc("What the scan got (`redirect`, `fallback` or `blocked`)", "redirect")
    destination: str = doc("Where it was sent", "https://shop.example.com/summer")
    user_agent: str | None = doc("The browser's User-Agent", "Mozilla/5.0 (iPhone)")
    device_type: str | None = doc("`mobile`, `tablet`, `desktop` or null", "mobile")
    os: str | None = doc("Operating system family", "iOS")
    browser: str | None = doc("Browser family", "Mobile Safari")
    is_bot: bool = doc("Not a person's scan", False)
    bot_reason: str | None = doc("Why it is not a person's", None)
    burst: bool = doc("From an address past the per-address rate", False)
    ip_truncated: str | None = doc("Address truncated to /24 (IPv4) or /48 (IPv6)", "203.0.113.0")
    visitor_id: str | None = doc("Daily visitor id, hex (salt forgotten after the day)", None)
    cookie_id: str | None = doc("Visitor cookie id (UUID)", None)
    nfc_counter: int | None = doc("SDMReadCtr of an NFC tap", None)
    nfc_verification: str | None = doc("NFC verdict", None)
    country: str | None = doc("ISO 3166-1 alpha-2 (GeoIP)", "FR")
    region: str | None = doc("ISO 3166-2 subdivision", "IDF")
    city: str | None = doc("City (GeoIP)", "Paris")
    ip_lat: float | None = doc("IP position latitude, WGS 84 degrees", 48.86)
    ip_lon: float | None = doc("IP position longitude, WGS 84 degrees", 2.34)
    ip_accuracy_m: int | None = doc("IP position accuracy, metres", 20000)
    position: list[float] | None = doc("Scan's position `[lon, lat]`, WGS 84", [2.3376, 48.8606])
    geo_source: str | None = doc("`placement` or `ip`", "placement")
    accuracy_m: float | None = doc("Accuracy of `position`, metres", None)
    location_id: int | None = doc("Store matched", 3)
    far_from_placement: bool | None = doc("IP position far from the placement", False)
    rule_id: int | None = doc("Redirect rule applied", None)
    variant: str | None = doc("Split variant served", None)
    internal: bool = doc("From a phone signed into the organization's dashboard", False)


class PrivacyPosition(Schema):
    """A consented GPS fix (``scan_locations``), WGS 84 degrees, accuracy in metres."""

    click_id: str = doc("The scan's click id", "aTvF6AbnfnAUZXmG")
    lat: float = doc("Latitude, WGS 84 degrees", 48.8606)
    lon: float = doc("Longitude, WGS 84 degrees", 2.3376)
    accuracy_m: float = doc("Accuracy radius, metres", 12.0)
    recorded_at: dt.datetime = doc("When it was recorded, UTC", _WHEN)


class PrivacyRecord(Schema):
    """Answer of ``GET /v1/privacy/scans``: everything held about the person identified
    by ``click_id`` or ``visitor`` (the visitor cookie id), oldest scan first."""

    click_id: str | None = doc("The click id asked for", "aTvF6AbnfnAUZXmG")
    visitor: str | None = doc("The visitor cookie id asked for", None)
    scans: list[PrivacyScan] = doc("Their scans", [])
    positions: list[PrivacyPosition] = doc("Consented GPS fixes of those scans", [])
    conversions: list[ConversionRead] = doc("Conversions linked to those scans", [])
    other: dict[str, list[dict[str, Any]]] = doc(
        "Rows of other tables keyed by those click ids (webhook deliveries...), per table",
        {},
    )


class PrivacyErasure(Schema):
    """Answer of ``DELETE /v1/privacy/scans``: rows per table. ``scans`` and holders such
    as ``scan_locations``: deleted; ``conversions``: kept but unlinked (click id null,
    unattributed)."""

    click_id: str | None = doc("The click id erased", "aTvF6AbnfnAUZXmG")
    visitor: str | None = doc("The visitor cookie id erased", None)
    counts: dict[str, int] = doc(
        "Rows per table", {"scans": 1, "scan_locations": 1, "conversions": 1}
    )


_SCOPES_DOC = (
    "What the key may do: `campaigns:read`, `campaigns:write`, `conversions:write`, "
    "`reports:read`, `admin` (implies all)"
)
ScopeName = Literal[
    "campaigns:read", "campaigns:write", "conversions:write", "reports:read", "admin"
]


class ApiKeyCreate(Schema):
    """Body of ``POST /v1/api-keys``: a name and at least one scope."""

    name: Name = doc("What the key is for", "shop checkout")
    scopes: list[ScopeName] = doc(_SCOPES_DOC, ["conversions:write"], min_length=1, max_length=5)


class ApiKeyRead(Schema):
    """An API key as listed: never its secret nor its hash, only the visible ``prefix``.
    ``last_used_at`` is written at most once a minute per key."""

    id: int = doc(_ID, 3)
    name: str = doc("What the key is for", "shop checkout")
    prefix: str = doc("The key's first characters, to recognise it", "psk_Xy12Ab")
    scopes: list[str] = doc(_SCOPES_DOC, ["conversions:write"])
    created_at: dt.datetime = doc("Creation time, UTC", _WHEN)
    last_used_at: dt.datetime | None = doc(
        "Last use, UTC, to the minute (null: never used)", _WHEN, default=None
    )
    revoked_at: dt.datetime | None = doc("Revocation time, UTC (null: live)", None, default=None)


class ApiKeyCreated(ApiKeyRead):
    """A new API key with its ``secret``, shown this once: only its hash is stored."""

    secret: str = doc(
        "The full key, for `Authorization: Bearer ...`; shown once",
        "psk_Xy12Ab3cD4eF5gH6iJ7kL8mN9oP0qR1sT2uV3wX4yZ5a",
    )


class ApiKeyList(Schema):
    """The organization's API keys, revoked ones included, oldest first."""

    items: list[ApiKeyRead] = doc("The keys", [])


class AuditEventRead(Schema):
    """One management write: who (``actor_type`` ``api_key``, ``user``, ``cli`` or
    ``system``; ``actor_id`` and ``actor_label``: the key's id and prefix, or the user's
    id and e-mail), when, which operation (``action``), on what (``resource_type``, the
    table; ``resource_id`` when exactly one row was written) and how many ``rows``."""

    id: int = doc(_ID, 17)
    occurred_at: dt.datetime = doc("When, UTC", _WHEN)
    actor_type: Literal["api_key", "user", "cli", "system"] = doc("Kind of actor", "api_key")
    actor_id: int | None = doc("The key's or user's id", 3)
    actor_label: str | None = doc("The key's prefix or the user's e-mail", "psk_Xy12Ab")
    action: str = doc("The API operation id or command", "campaigns_update")
    resource_type: str = doc("What was written (table)", "campaigns")
    resource_id: int | None = doc("The row, when exactly one was written", 42)
    rows: int = doc("How many rows were written", 1)


class AuditPage(Schema):
    """A page of audit events, newest first."""

    items: list[AuditEventRead] = doc("The events", [])
    next_cursor: str | None = doc("Cursor of the next page; null on the last", None)
