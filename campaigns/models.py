"""ORM models (DESIGN §3). Every row is scoped by ``organization_id``.

Times are timezone-aware UTC; money is minor currency units plus an ISO 4217 code.
There are no ORM relationships: services join explicitly, so no query loads rows lazily.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

from geoalchemy2 import Geography, Geometry
from geoalchemy2.elements import WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


def _pk() -> Mapped[int]:
    return mapped_column(BigInteger, Identity(always=False), primary_key=True)


def _created_at() -> Mapped[dt.datetime]:
    return mapped_column(server_default=func.now(), default=utcnow)


class Organization(Base):
    """A tenant: a brand or agency with its API keys, campaigns and data.

    ``nfc_master_secret_encrypted`` is the organization's NFC master secret (32 random
    bytes, sealed: :func:`campaigns.payloads.keys.seal_master_secret`), from which the
    keys of its NTAG 424 DNA tags are derived; created on first need.
    """

    __tablename__ = "organizations"

    __table_args__ = (
        CheckConstraint(
            "visitor_cookie_consent IN ('organization', 'ask')", name="visitor_cookie_consent"
        ),
        CheckConstraint(
            "scan_retention_days BETWEEN 1 AND 3650 "
            "AND precise_location_retention_days BETWEEN 1 AND scan_retention_days",
            name="retention_range",
        ),
    )

    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = _created_at()
    nfc_master_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Whether scans set a first-party visitor cookie (journeys across days). Off by
    #: default: in the EU such a cookie needs the visitor's consent (ePrivacy art. 5(3)).
    visitor_cookie: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    #: Who obtains that consent: ``organization`` (the organization's own consent
    #: management covers it) or ``ask`` (the scan path asks the visitor).
    visitor_cookie_consent: Mapped[str] = mapped_column(
        String(16), default="organization", server_default="organization"
    )
    #: Days a scan is kept (``passerelle purge`` deletes older ones): 395 by default,
    #: 13 months, the CNIL's limit for audience-measurement data.
    scan_retention_days: Mapped[int] = mapped_column(Integer, default=395, server_default="395")
    #: Days a consented GPS fix is kept before it is reduced to the scan's matched store
    #: and city (its ``scan_locations`` row deleted); at most ``scan_retention_days``.
    precise_location_retention_days: Mapped[int] = mapped_column(
        Integer, default=30, server_default="30"
    )
    #: Hosts destination URLs may point at (``shop.example.com`` exactly, or
    #: ``*.example.com`` for its subdomains); ``None`` (or empty) leaves them unrestricted.
    #: Checked by :func:`campaigns.services.destinations.check_allowed_hosts`.
    allowed_destination_hosts: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class OrganizationLogo(Base):
    """The organization's logo for QR artwork (one per organization): ``media_type``
    ``image/png`` or ``image/svg+xml``, validated on upload
    (:func:`campaigns.payloads.logo.validate_logo`); ``sha256`` (hex) keys render caches."""

    __tablename__ = "organization_logos"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    media_type: Mapped[str] = mapped_column(String(32))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )


class ApiKey(Base):
    """A management API key. Only the SHA-256 of the secret is stored; ``prefix`` is shown."""

    __tablename__ = "api_keys"
    # Every key holds at least one scope (campaigns.scopes); keys from before scopes
    # existed were given ``admin`` by the migration that added this check.
    __table_args__ = (CheckConstraint("cardinality(scopes) > 0", name="scopes_not_empty"),)

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{admin}")
    #: ``admin``, ``campaigns:read``... (:data:`campaigns.scopes.SCOPES`).
    created_at: Mapped[dt.datetime] = _created_at()
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class AuditEvent(Base):
    """One management write (issue 12), stored in the transaction of the write itself
    (:func:`campaigns.services.audit.record_changes`).

    Who: ``actor_type`` ``api_key`` (``actor_id`` the key's id, ``actor_label`` its
    prefix), ``user`` (a dashboard user), ``cli`` or ``system`` (scheduled jobs). What:
    ``action`` (the API operation id, such as ``campaigns_update``, or the command),
    ``resource_type`` (the table written), ``resource_id`` when exactly one row of it
    was written, ``rows`` how many were.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_organization_id_id", "organization_id", "id"),
        CheckConstraint("actor_type IN ('api_key', 'user', 'cli', 'system')", name="actor_type"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    occurred_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_label: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)


class Campaign(Base):
    """A marketing campaign: where its tags send people, when, and what it cost.

    ``utm`` holds default UTM parameters (``{"source": ..., "medium": ..., ...}``);
    ``cost_amount_minor`` is in minor units of ``cost_currency`` (ISO 4217).
    A deleted campaign keeps its rows (scans, conversions) but leaves the API.
    ``nfc_invalid_tap`` says what a tap on an NTAG 424 DNA tag whose SUN message fails
    verification (or replays an old counter) gets: ``flag`` (redirected, the scan marked)
    or ``block`` (no redirect).
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        Index(
            "uq_campaigns_organization_id_slug",
            "organization_id",
            "slug",
            unique=True,
            postgresql_where="deleted_at IS NULL",
        ),
        CheckConstraint("cost_amount_minor >= 0", name="cost_non_negative"),
        Index("ix_campaigns_updated_at", "updated_at"),
        CheckConstraint(
            "ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at", name="schedule"
        ),
        CheckConstraint("nfc_invalid_tap IN ('flag', 'block')", name="nfc_invalid_tap"),
        CheckConstraint("precise_location IN ('off', 'ask')", name="precise_location"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
    destination_url: Mapped[str] = mapped_column(Text)
    fallback_url: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[dt.datetime | None]
    ends_at: Mapped[dt.datetime | None]
    utm: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    cost_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    cost_currency: Mapped[str | None] = mapped_column(String(3))
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    nfc_invalid_tap: Mapped[str] = mapped_column(String(8), default="flag", server_default="flag")
    #: ``ask``: ``GET /s/{code}`` answers a page asking the browser's position (with
    #: consent) before going on; ``off``: a plain redirect.
    precise_location: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    #: IANA time zone of the campaign's reports (days of the attribution report).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )
    deleted_at: Mapped[dt.datetime | None]


#: Largest circle a location may draw around its point, in metres (DESIGN §3).
MAX_RADIUS_M = 50_000


class Location(Base):
    """A store or venue: where tags are placed and scans are matched.

    ``point`` is WGS 84 ``geography(Point)`` (distances in metres); the optional area is
    either ``geofence`` (a Polygon or MultiPolygon, ``geometry`` so coverage tests are
    planar as in GeoJSON) or ``radius_m`` (a circle around ``point`` on the ellipsoid),
    never both. ``external_id`` (a store number) is unique per organization.
    """

    __tablename__ = "locations"
    __table_args__ = (
        UniqueConstraint("organization_id", "external_id"),
        CheckConstraint(f"radius_m > 0 AND radius_m <= {MAX_RADIUS_M}", name="radius_range"),
        CheckConstraint("geofence IS NULL OR radius_m IS NULL", name="one_area"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(100))
    address: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(String(64))
    point: Mapped[WKBElement] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=True)
    )
    geofence: Mapped[WKBElement | None] = mapped_column(
        Geometry(geometry_type="GEOMETRY", srid=4326, spatial_index=True)
    )
    radius_m: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )


class Tag(Base):
    """A physical code (QR print, NFC sticker) that sends scans to its campaign.

    ``code`` is 8 characters of Crockford base32, upper case, globally unique;
    ``destination_url`` overrides the campaign's when set. ``location_id`` is the store it
    is placed in (kept NULL when the location is deleted) and ``placement`` where exactly
    (WGS 84; defaults to the location's point).

    NTAG 424 DNA tags (kind ``nfc_sun``) also have ``nfc_uid`` (7 bytes, unique per
    organization), ``nfc_keys_encrypted`` (the SDM meta-read and file-read keys, sealed:
    :func:`campaigns.payloads.keys.seal_sun_keys`), ``nfc_key_derivation_version`` (the
    derivation that made the keys, NULL when the client supplied them); the last counter
    accepted is in :class:`NfcCounter`. Other kinds have none of them.
    """

    __tablename__ = "tags"
    __table_args__ = (
        CheckConstraint("kind IN ('qr', 'nfc', 'nfc_sun')", name="kind"),
        # The tag cache's periodic reconcile reads rows changed since its last sync.
        Index("ix_tags_updated_at", "updated_at"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        CheckConstraint(
            "(kind = 'nfc_sun') = (nfc_uid IS NOT NULL AND nfc_keys_encrypted IS NOT NULL)",
            name="nfc_sun_fields",
        ),
        CheckConstraint("octet_length(nfc_uid) = 7", name="nfc_uid_length"),
        Index(
            "uq_tags_organization_id_nfc_uid",
            "organization_id",
            "nfc_uid",
            unique=True,
            postgresql_where="kind = 'nfc_sun'",
        ),
        # One tag per (campaign, location, label): what makes bulk creation idempotent
        # (campaigns.services.bulk_tags inserts with ON CONFLICT DO NOTHING).
        Index(
            "uq_tags_campaign_id_location_id_label",
            "campaign_id",
            "location_id",
            "label",
            unique=True,
            postgresql_where="location_id IS NOT NULL AND label IS NOT NULL",
        ),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    destination_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    location_id: Mapped[int | None] = mapped_column(
        ForeignKey("locations.id", ondelete="SET NULL"), index=True
    )
    placement: Mapped[WKBElement | None] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=False)
    )
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )
    nfc_uid: Mapped[bytes | None] = mapped_column(LargeBinary(7))
    nfc_keys_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    nfc_key_derivation_version: Mapped[int | None] = mapped_column(SmallInteger)


class NfcCounter(Base):
    """The highest SDMReadCtr accepted for an ``nfc_sun`` tag (``last_counter``,
    0..16 777 215: a 24-bit counter); no row before its first accepted tap. Written only by
    :func:`campaigns.scanning.nfc.accept_counters`, under the tag row's lock. A table of
    its own, not a column of ``tags``: every accepted tap writes it, and a ``tags`` row
    update runs the tags trigger (migration ``nfc_counters``)."""

    __tablename__ = "nfc_counters"
    __table_args__ = (
        CheckConstraint("last_counter BETWEEN 0 AND 16777215", name="last_counter_range"),
    )

    tag_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
    )
    last_counter: Mapped[int] = mapped_column(Integer)


class Xid8(UserDefinedType[int]):
    """PostgreSQL's ``xid8``: a 64-bit transaction id that never wraps around (read as
    an ``int``). Registered for reflection so ``alembic check`` compares it."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


ischema_names["xid8"] = Xid8


class FeedBatch(Base):
    """One committed batch of the live feed (``campaigns.feed``): the scans of one group
    commit (``click_ids``) or the conversions credited in one transaction
    (``conversion_ids``), written in that transaction. ``xid`` is the writing
    transaction's id (``pg_current_xact_id()``): readers take the batches whose ``xid``
    became visible between two snapshots. ``campaign_ids`` lists the campaigns the batch
    touches (distinct). Rows older than ``PASSERELLE_FEED_RETENTION_S`` are deleted.
    No foreign keys, like ``scans``: written on the hot path."""

    __tablename__ = "feed_batches"
    __table_args__ = (CheckConstraint("kind IN ('scan', 'conversion')", name="kind"),)

    # The primary key leads with xid: one index for uniqueness and the range reads.
    xid: Mapped[int] = mapped_column(
        Xid8, primary_key=True, server_default=func.pg_current_xact_id()
    )
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    campaign_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    click_ids: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    conversion_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class FeedHorizon(Base):
    """The one row saying which feed batches may be gone: ``last_deleted`` is the
    highest ``xid`` the retention deleted ('0' before any). A ``Last-Event-ID`` whose
    snapshot does not see it may miss deleted batches: it cannot resume without a gap."""

    __tablename__ = "feed_horizon"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    last_deleted: Mapped[int] = mapped_column(Xid8)


class Scan(Base):
    """One resolved scan (append-only). Written by the group-commit scan writer, whose
    record type ``campaigns.scanning.record.ScanRecord`` must list the same columns (a test
    checks it).

    ``ip_truncated`` is the client address cut to /24 (IPv4) or /48 (IPv6): the full
    address is never stored. ``visitor_id`` is a keyed hash of (IP, user agent,
    campaign) under a salt that rotates daily (16 bytes).
    ``nfc_counter`` is the SDMReadCtr of a verified NTAG 424 DNA tap and
    ``nfc_verification`` its verdict: ``valid``, ``replayed`` (right MAC, counter not above
    the last accepted) or ``invalid``; both NULL for other scans.
    """

    __tablename__ = "scans"
    __table_args__ = (
        # Every index slows the hot path's inserts: reports filter by campaign (per-tag
        # figures group within it); journeys need the two partial indexes below.
        Index("ix_scans_campaign_id_scanned_at", "campaign_id", "scanned_at"),
        CheckConstraint(
            "bot_reason IN ('head', 'prefetch', 'previewer', 'scanner', 'crawler', "
            "'no_user_agent')",
            name="bot_reason",
        ),
        CheckConstraint("geo_source IN ('gps', 'placement', 'ip')", name="geo_source"),
        # Journeys (attribution): a visitor's other scans. Partial, so scans without the
        # key cost nothing; see docs/DECISIONS.md for the cost on the hot path.
        Index(
            "ix_scans_cookie_id_scanned_at",
            "cookie_id",
            "scanned_at",
            postgresql_where="cookie_id IS NOT NULL",
        ),
        Index(
            "ix_scans_visitor_id_scanned_at",
            "visitor_id",
            "scanned_at",
            postgresql_where="visitor_id IS NOT NULL",
        ),
    )

    id: Mapped[int] = _pk()
    click_id: Mapped[str] = mapped_column(String(32), unique=True)
    # No foreign keys on this append-only log: a scan is answered before it is written,
    # so its row must never be refused (nor a whole group commit with it) because its tag
    # or organization was deleted meanwhile. Deleting an organization deletes its scans
    # explicitly (see docs/DECISIONS.md).
    organization_id: Mapped[int] = mapped_column(BigInteger)
    campaign_id: Mapped[int] = mapped_column(BigInteger)
    tag_id: Mapped[int] = mapped_column(BigInteger)
    scanned_at: Mapped[dt.datetime]
    channel: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8), default="GET", server_default="GET")
    outcome: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str | None] = mapped_column(Text)
    os: Mapped[str | None] = mapped_column(Text)
    browser: Mapped[str | None] = mapped_column(Text)
    is_bot: Mapped[bool] = mapped_column(Boolean)
    ip_truncated: Mapped[str | None] = mapped_column(INET)
    visitor_id: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    #: Why the scan is not a person's (``campaigns.scanning.record.BOT_REASONS``); null
    #: for people.
    bot_reason: Mapped[str | None] = mapped_column(Text)
    #: From an address past the per-address scan rate.
    burst: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    nfc_counter: Mapped[int | None] = mapped_column(Integer)
    nfc_verification: Mapped[str | None] = mapped_column(Text)
    #: First-party visitor cookie (a random UUID), when the organization enables it and
    #: the visitor agreed: links a visitor's scans across days for attribution journeys.
    cookie_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Geolocation (campaigns/scanning/steps/geolocation.py). From the GeoIP database, the
    # full address used in memory only: ISO 3166-1 alpha-2 ``country``, ISO 3166-2
    # ``region`` (without the country prefix), ``city``, and the IP position (WGS 84)
    # with its accuracy radius in metres.
    country: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    ip_lat: Mapped[float | None] = mapped_column(Double)
    ip_lon: Mapped[float | None] = mapped_column(Double)
    ip_accuracy_m: Mapped[int | None] = mapped_column(Integer)
    #: The position of record (WGS 84) from ``geo_source`` (``placement`` or ``ip``; a
    #: consented fix is read as ``gps`` through the ``scan_positions`` view) and its
    #: accuracy in metres (null for a placement). ``position`` is computed from the two
    #: doubles, so the group commit's COPY writes plain numbers.
    position_lat: Mapped[float | None] = mapped_column(Double)
    position_lon: Mapped[float | None] = mapped_column(Double)
    geo_source: Mapped[str | None] = mapped_column(Text)
    accuracy_m: Mapped[float | None] = mapped_column(Double)
    #: The store matched: the organization's location whose area covers the position,
    #: else the tag's location.
    location_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The IP position is farther from the tag's placement than its accuracy plus 50 km;
    #: null when either is unknown.
    far_from_placement: Mapped[bool | None] = mapped_column(Boolean)
    #: The redirect rule that chose the destination (null: the campaign's or tag's) and,
    #: for a weighted split, the variant served.
    rule_id: Mapped[int | None] = mapped_column(BigInteger)
    variant: Mapped[str | None] = mapped_column(Text)
    #: From a phone signed into the organization's dashboard (store staff testing the
    #: poster they hang, issue 11; ``campaigns.scanning.installers``): stored, but left
    #: out of every figure and counted apart as ``internal_scans``.
    internal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    position: Mapped[WKBElement | None] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=False),
        Computed(
            "CASE WHEN position_lon IS NOT NULL AND position_lat IS NOT NULL "
            "THEN (ST_SetSRID(ST_MakePoint(position_lon, position_lat), 4326))::geography END",
            persisted=True,
        ),
    )


class RedirectRule(Base):
    """A campaign's conditional destination (:mod:`campaigns.scanning.rules`). Scans
    whose geography, device and language meet every condition of ``conditions``
    (``{"countries": [...], "location_ids": [...], "os": [...], "device_types": [...],
    "languages": [...]}``, each optional) go to ``destination_url``, or to one variant of
    ``split`` (``[{"variant", "destination_url", "weight"}]``); the lowest ``priority``
    matching wins (then the lowest id)."""

    __tablename__ = "redirect_rules"
    __table_args__ = (
        CheckConstraint("(destination_url IS NULL) <> (split IS NULL)", name="one_target"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    priority: Mapped[int] = mapped_column(Integer)
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    destination_url: Mapped[str | None] = mapped_column(Text)
    # none_as_null: None is SQL NULL (the CHECK tells targets apart), not JSON null.
    split: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )


class ScanLocation(Base):
    """A consented precise position (the browser's Geolocation API) for one scan, keyed by
    its click id: at most one per scan, within ten minutes of it
    (:mod:`campaigns.services.scan_locations`). ``position`` WGS 84, ``accuracy_m``
    metres. Read as the scan's position with ``geo_source = 'gps'``, and its store
    (``location_id``, else the scan's own) as the scan's, through the ``scan_positions``
    view. Scans stay append-only."""

    __tablename__ = "scan_locations"
    __table_args__ = (
        Index(
            "ix_scan_locations_location_id",
            "location_id",
            postgresql_where="location_id IS NOT NULL",
        ),
    )

    click_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    #: None once the retention purge took the position (``location_id`` stays).
    position: Mapped[WKBElement | None] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=False)
    )
    accuracy_m: Mapped[float | None] = mapped_column(Double)
    #: The store whose area covers ``position`` (the scan path's rule, matched when the fix
    #: is recorded); None: no area covers it (the scan's own store then applies), or the
    #: store was deleted since.
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id", ondelete="SET NULL"))
    recorded_at: Mapped[dt.datetime] = _created_at()


class VisitorCookieConsent(Base):
    """A visitor's "yes" on the consent page of an organization with
    ``visitor_cookie_consent = ask``: the scan that showed the page (``click_id``) and the
    visitor cookie set on that answer (``cookie_id``, a random UUID). Scans stay
    append-only: the scan was stored before the answer, without a cookie, and attribution
    reads its cookie from here (:mod:`campaigns.services.attribution`). Also the record
    that consent was given, and when (GDPR art. 7(1))."""

    __tablename__ = "visitor_cookie_consents"

    click_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    cookie_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    consented_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), default=utcnow)


class Conversion(Base):
    """An online outcome (signup, purchase) reported by the merchant.

    ``external_id`` is unique per organization (idempotency key); ``fingerprint`` is the
    SHA-256 of the canonical request body, used to tell a retry from a conflicting reuse.
    ``scan_id``/``campaign_id``/``tag_id`` are set when ``click_id`` resolved to a scan of
    the same organization (last-touch).
    """

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint("organization_id", "external_id"),
        CheckConstraint("value_amount_minor >= 0", name="value_non_negative"),
        Index("ix_conversions_campaign_id_occurred_at", "campaign_id", "occurred_at"),
        # Attribution reports and the conversion list read an organization's window.
        Index("ix_conversions_organization_id_occurred_at", "organization_id", "occurred_at"),
        # The rollup worker finds the conversions received since its last pass.
        Index("ix_conversions_received_at", "received_at"),
        # Attribution reports credit live only the conversions without stored credits.
        Index(
            "ix_conversions_unsettled_credits",
            "organization_id",
            "occurred_at",
            postgresql_where=text("credits_n IS NULL"),
        ),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(100))
    #: Null once the person behind the click asked for erasure (the conversion is kept,
    #: unattributed: ``campaigns.services.privacy``).
    click_id: Mapped[str | None] = mapped_column(String(64), index=True)
    value_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    value_currency: Mapped[str | None] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = _created_at()
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: Indexed: every scan the purge deletes looks up the conversions crediting it (the
    #: foreign key's ``SET NULL``).
    scan_id: Mapped[int | None] = mapped_column(
        ForeignKey("scans.id", ondelete="SET NULL"), index=True
    )
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    tag_id: Mapped[int | None] = mapped_column(ForeignKey("tags.id", ondelete="SET NULL"))
    #: Stored attribution credits (:mod:`campaigns.services.credits`): the length of the
    #: conversion's journey at the default parameters, its touches' credits in
    #: ``conversion_credits`` (0: no journey, unattributed); NULL while not settled (not
    #: computed yet, within the settle margin of its click scan, or made stale), when
    #: reports credit it live.
    credits_n: Mapped[int | None] = mapped_column(Integer)


class ConversionCredit(Base):
    """One touch of a settled conversion's journey at the default attribution parameters
    (lookback :data:`~campaigns.services.attribution.DEFAULT_LOOKBACK_DAYS`, half-life
    :data:`~campaigns.services.attribution.DEFAULT_HALF_LIFE_DAYS`), credited by every
    model (:mod:`campaigns.services.credits`). ``idx`` is the touch's rank (1 = oldest) of
    ``n`` (integer weights of the other models follow from them); ``w_time_decay`` is the
    time-decay weight over :data:`~campaigns.attribution.TIME_DECAY_DENOMINATOR`;
    ``v_<model>`` the touch's share of the conversion's value in minor units of
    ``value_currency`` (0 without a value). ``organization_id``, ``occurred_at`` and
    ``value_currency`` are copies of the conversion's (immutable) columns. Rows exist
    if and only if ``conversions.credits_n`` is not NULL."""

    __tablename__ = "conversion_credits"
    __table_args__ = (
        # Reports: a campaign's touches of conversions in a window.
        Index(
            "ix_conversion_credits_campaign_id_occurred_at",
            "campaign_id",
            "occurred_at",
        ),
        # Erasure and purge: the conversions a deleted scan was a touch of.
        Index("ix_conversion_credits_scan_id", "scan_id"),
    )

    conversion_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversions.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    organization_id: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[dt.datetime]
    n: Mapped[int] = mapped_column(Integer)
    scan_id: Mapped[int] = mapped_column(BigInteger)
    campaign_id: Mapped[int] = mapped_column(BigInteger)
    tag_id: Mapped[int] = mapped_column(BigInteger)
    scanned_at: Mapped[dt.datetime]
    value_currency: Mapped[str | None] = mapped_column(String(3))
    w_time_decay: Mapped[int] = mapped_column(BigInteger)
    v_last_touch: Mapped[int] = mapped_column(BigInteger)
    v_first_touch: Mapped[int] = mapped_column(BigInteger)
    v_linear: Mapped[int] = mapped_column(BigInteger)
    v_time_decay: Mapped[int] = mapped_column(BigInteger)
    v_position_based: Mapped[int] = mapped_column(BigInteger)


class Refund(Base):
    """Money given back on a conversion: ``amount_minor`` in the conversion's currency,
    dated ``refunded_at``. Reports subtract it from revenue in the window holding
    ``refunded_at``. ``external_id`` (the merchant's refund id) is unique per organization
    (idempotency key); ``fingerprint`` tells a retry from a conflicting reuse."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("organization_id", "external_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    conversion_id: Mapped[int] = mapped_column(
        ForeignKey("conversions.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(String(200))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = _created_at()
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))


class Webhook(Base):
    """An endpoint of the organization that receives signed events
    (:mod:`campaigns.webhooks`): ``url`` (https; http only in development and test),
    ``events`` (``scan.created``, ``conversion.created``). ``secret_encrypted`` is the
    signing secret sealed with :func:`campaigns.crypto.seal` (purpose
    :data:`campaigns.webhooks.signing.SECRET_PURPOSE`, bound to organization and id):
    shown once, in the creation answer."""

    __tablename__ = "webhooks"

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _created_at()


class WebhookDelivery(Base):
    """The outbox: one event to send to one webhook, and how its attempts went.

    Written in the transaction that stores the event (the scan writer's group commit, the
    conversion's unit of work), so an event is sent if and only if it is stored; sent by
    :class:`campaigns.webhooks.delivery.WebhookDispatcher` at least once. ``event_id`` is
    the event's idempotency id (the same for every webhook and every attempt);
    ``status``: ``pending`` (due at ``next_attempt_at``; a claimed row's lease moves it
    ahead), ``succeeded`` or ``failed`` (gave up). ``attempts`` counts the attempts since
    creation or the last manual retry; ``attempt_log`` keeps the last ten
    (``[{"at", "response_code", "error", "duration_ms"}]``). No ``organization_id``: rows
    belong to their webhook, which cascades from its organization."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Idempotent outbox: a scan replayed from a spool writes no second delivery.
        UniqueConstraint("webhook_id", "event_id"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        # The dispatcher's claim: due pending rows, oldest first.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
        ),
        # GET /v1/webhooks/{id}/deliveries: newest first by id.
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    )

    id: Mapped[int] = _pk()
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(Text, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), default=utcnow)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_attempt_at: Mapped[dt.datetime | None]
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default="[]"
    )
    created_at: Mapped[dt.datetime] = _created_at()


class MaintenanceRun(Base):
    """The last run of a periodic job shared by every process (``purge``): when it last
    ran (UTC) and what it reported (JSON). Read and written under the job's advisory
    lock (:mod:`campaigns.services.retention`)."""

    __tablename__ = "maintenance_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[dt.datetime]
    result: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class VisitorSalt(Base):
    """The random salt of one UTC day for visitor ids; older salts are deleted (forgotten)."""

    __tablename__ = "visitor_salts"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))


# Rollups (campaigns/services/rollups.py): the reports' figures per campaign and UTC hour,
# recomputed from raw rows by the rollup worker, one (campaign, UTC day) at a time. Core
# tables without primary key where a dimension value may be null; every table is read by
# (campaign_id, hour) and cascades from campaigns (so from organizations).


def _rollup_key() -> list[Column[Any]]:
    return [
        Column(
            "campaign_id",
            BigInteger,
            ForeignKey("campaigns.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("hour", DateTime(timezone=True), nullable=False),
    ]


def _count(name: str) -> Column[Any]:
    return Column(name, Integer, nullable=False, server_default="0")


#: Scan figures per (campaign, tag, UTC hour), with the stats definitions: ``scans``
#: human (and counted) scans, ``bot_scans`` and ``bot_<reason>``, ``burst_scans``,
#: ``replayed_taps``, ``invalid_taps``, ``internal_scans`` (staff's, counted nowhere
#: else); ``visitors`` distinct visitor ids of the hour's
#: human scans, ``first_visitors`` / ``last_visitors`` those whose first / last human
#: scan of the UTC day (on this tag) falls in this hour.
scan_rollups = Table(
    "scan_rollups",
    Base.metadata,
    *_rollup_key(),
    Column("tag_id", BigInteger, nullable=False),
    _count("scans"),
    _count("bot_scans"),
    _count("burst_scans"),
    _count("replayed_taps"),
    _count("invalid_taps"),
    *(
        _count(f"bot_{reason}")
        for reason in ("head", "prefetch", "previewer", "scanner", "crawler", "no_user_agent")
    ),
    _count("internal_scans"),
    _count("visitors"),
    _count("first_visitors"),
    _count("last_visitors"),
    UniqueConstraint("campaign_id", "hour", "tag_id"),
)

#: The same per (campaign, tag, UTC day), from the day's hour rows (``visitors``: the
#: day's distinct visitors): whole days of a long window are read here, 24 times fewer
#: rows.
scan_day_rollups = Table(
    "scan_day_rollups",
    Base.metadata,
    Column(
        "campaign_id",
        BigInteger,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("day", Date, nullable=False),
    Column("tag_id", BigInteger, nullable=False),
    _count("scans"),
    _count("bot_scans"),
    _count("burst_scans"),
    _count("replayed_taps"),
    _count("invalid_taps"),
    *(
        _count(f"bot_{reason}")
        for reason in ("head", "prefetch", "previewer", "scanner", "crawler", "no_user_agent")
    ),
    _count("internal_scans"),
    _count("visitors"),
    UniqueConstraint("campaign_id", "day", "tag_id"),
)

#: The same human-scan and visitor figures for the whole campaign (visitors do not add
#: up across tags: one person scanning two tags is one visitor of the campaign).
campaign_rollups = Table(
    "campaign_rollups",
    Base.metadata,
    *_rollup_key(),
    _count("scans"),
    _count("visitors"),
    _count("first_visitors"),
    _count("last_visitors"),
    UniqueConstraint("campaign_id", "hour"),
)

#: The campaign's human scans and visitors per UTC quarter hour (``quarter``: its start),
#: for series in time zones whose buckets do not start on whole UTC hours (offsets of 30
#: or 45 minutes: Asia/Kolkata, Asia/Kathmandu, America/St_Johns): ``first_visitors`` /
#: ``last_visitors`` count the visitors whose first / last human scan of the UTC day
#: falls in this quarter (any prefix or suffix of a day cut at a quarter hour), and
#: ``hour_visitors`` the distinct visitors of ``[quarter, quarter + 1 hour)`` within its
#: UTC day (an hour bucket starting at a quarter hour).
campaign_quarter_rollups = Table(
    "campaign_quarter_rollups",
    Base.metadata,
    Column(
        "campaign_id",
        BigInteger,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("quarter", DateTime(timezone=True), nullable=False),
    _count("scans"),
    _count("first_visitors"),
    _count("last_visitors"),
    _count("hour_visitors"),
    UniqueConstraint("campaign_id", "quarter"),
)

#: The campaign's conversions per (UTC quarter hour of ``occurred_at``, currency), as
#: ``campaign_conversion_rollups`` per hour: for the same series.
campaign_conversion_quarter_rollups = Table(
    "campaign_conversion_quarter_rollups",
    Base.metadata,
    Column(
        "campaign_id",
        BigInteger,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("quarter", DateTime(timezone=True), nullable=False),
    Column("currency", String(3)),
    _count("conversions"),
    Column("amount_minor", BigInteger, nullable=False, server_default="0"),
    Index("ix_campaign_conversion_quarter_rollups_campaign_id_quarter", "campaign_id", "quarter"),
)

#: Human scans per (campaign, UTC hour, dimension, value); ``dimension`` one of
#: ``channel``, ``device_type``, ``os``, ``country`` (``value`` null: unknown).
scan_breakdown_rollups = Table(
    "scan_breakdown_rollups",
    Base.metadata,
    *_rollup_key(),
    Column("dimension", Text, nullable=False),
    Column("value", Text),
    _count("scans"),
    Index("ix_scan_breakdown_rollups_campaign_id_hour", "campaign_id", "hour"),
)

#: Conversions of the campaign per (UTC hour of ``occurred_at``, tag, currency): their
#: count and the sum of their values (minor units; 0 without a value). ``tag_id`` null:
#: the tag was deleted; ``currency`` null: conversions without a value.
conversion_rollups = Table(
    "conversion_rollups",
    Base.metadata,
    *_rollup_key(),
    Column("tag_id", BigInteger),
    Column("currency", String(3)),
    _count("conversions"),
    Column("amount_minor", BigInteger, nullable=False, server_default="0"),
    Index("ix_conversion_rollups_campaign_id_hour", "campaign_id", "hour"),
)

#: The same per (campaign, UTC day, tag, currency), for whole days of long windows.
conversion_day_rollups = Table(
    "conversion_day_rollups",
    Base.metadata,
    Column(
        "campaign_id",
        BigInteger,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("day", Date, nullable=False),
    Column("tag_id", BigInteger),
    Column("currency", String(3)),
    _count("conversions"),
    Column("amount_minor", BigInteger, nullable=False, server_default="0"),
    Index("ix_conversion_day_rollups_campaign_id_day", "campaign_id", "day"),
)

#: Conversions of the campaign per (UTC hour, currency), all tags: the series' reading.
campaign_conversion_rollups = Table(
    "campaign_conversion_rollups",
    Base.metadata,
    *_rollup_key(),
    Column("currency", String(3)),
    _count("conversions"),
    Column("amount_minor", BigInteger, nullable=False, server_default="0"),
    Index("ix_campaign_conversion_rollups_campaign_id_hour", "campaign_id", "hour"),
)

#: Conversions per (UTC hour of ``occurred_at``, dimension, value of their click scan).
conversion_breakdown_rollups = Table(
    "conversion_breakdown_rollups",
    Base.metadata,
    *_rollup_key(),
    Column("dimension", Text, nullable=False),
    Column("value", Text),
    _count("conversions"),
    Index("ix_conversion_breakdown_rollups_campaign_id_hour", "campaign_id", "hour"),
)

#: (campaign, UTC day) to recompute at the next pass, written where rows arrive out of
#: the worker's sight (the spool replay); no foreign key, like ``scans``.
rollup_dirty = Table(
    "rollup_dirty",
    Base.metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("campaign_id", BigInteger, nullable=False),
    Column("day", Date, nullable=False),
)

#: One row: the worker's last pass. Hours before ``folded_until`` are complete in the
#: rollups; reports read later hours from the raw tables.
rollup_state = Table(
    "rollup_state",
    Base.metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("last_pass_at", DateTime(timezone=True), nullable=False),
    Column("folded_until", DateTime(timezone=True), nullable=False),
    #: The earliest time any process's worker may start the next pass (NULL: at once).
    Column("next_pass_at", DateTime(timezone=True)),
    CheckConstraint("id = 1", name="single_row"),
)


#: Views, apart from ``Base.metadata`` (Alembic compares tables only; the migration that
#: creates a view owns its definition).
VIEWS = MetaData()

#: ``scan_positions``: every scan with its position of record, where a consented GPS fix
#: (``scan_locations``) replaces the scan's own (``geo_source = 'gps'``). The one place
#: reports read scans' positions from; it carries no address and no visitor id.
scan_positions = Table(
    "scan_positions",
    VIEWS,
    Column("scan_id", BigInteger, primary_key=True),
    Column("click_id", String(32)),
    Column("organization_id", BigInteger),
    Column("campaign_id", BigInteger),
    Column("tag_id", BigInteger),
    Column("scanned_at", DateTime(timezone=True)),
    Column("channel", Text),
    Column("is_bot", Boolean),
    Column("bot_reason", Text),
    Column("device_type", Text),
    Column("os", Text),
    Column("browser", Text),
    Column("position", Geography(geometry_type="POINT", srid=4326, spatial_index=False)),
    Column("geo_source", Text),
    Column("accuracy_m", Double),
    Column("location_id", BigInteger),
    Column("far_from_placement", Boolean),
    Column("country", Text),
    Column("region", Text),
    Column("city", Text),
    Column("rule_id", BigInteger),
    Column("variant", Text),
    Column("internal", Boolean),
    Column("outcome", Text),
    Column("nfc_counter", Integer),
    Column("nfc_verification", Text),
)


class DashboardUser(Base):
    """A person signed into the web dashboard (``/app``), member of one organization.

    ``email`` is stored lower case and unique across the service. ``role`` is ``admin``
    (everything, users and API keys included), ``editor`` (campaigns, tags, stores) or
    ``viewer`` (reads only). ``password_hash`` is an argon2id PHC string
    (``$argon2id$v=19$m=...``), null until the user chose a password. A pending sign-in
    link is kept as the SHA-256 of its token (``link_token_hash``) with its expiry; it is
    cleared when used, so a link works once.
    """

    __tablename__ = "dashboard_users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'editor', 'viewer')", name="role"),
        CheckConstraint("email = lower(email)", name="email_lower_case"),
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text)
    link_token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    link_expires_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created_at()


class DashboardSession(Base):
    """A signed-in browser: the cookie carries a random token, the row its SHA-256
    (``token_hash``), so a database read does not yield usable cookies. ``csrf_token`` is
    the per-session token every form posts back; ``last_seen_at`` moves with each request
    and the session ends after ``PASSERELLE_DASHBOARD_SESSION_IDLE_S`` seconds without one.
    """

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = _pk()
    user_id: Mapped[int] = mapped_column(
        ForeignKey("dashboard_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created_at()
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), default=utcnow)
