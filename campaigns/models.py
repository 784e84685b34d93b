"""ORM models (DESIGN §3). Every row is scoped by ``organization_id``.

Times are timezone-aware UTC; money is minor currency units plus an ISO 4217 code.
Relationships are ``lazy="raise"``: eager loads are written out where needed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
    """A tenant: a brand or agency with its API keys, campaigns and data."""

    __tablename__ = "organizations"

    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = _created_at()


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

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    created_at: Mapped[dt.datetime] = _created_at()
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Campaign(Base):
    """A marketing campaign: where its tags send people, when, and what it cost.

    ``utm`` holds default UTM parameters (``{"source": ..., "medium": ..., ...}``);
    ``cost_amount_minor`` is in minor units of ``cost_currency`` (ISO 4217).
    A deleted campaign keeps its rows (scans, conversions) but leaves the API.
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
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )
    deleted_at: Mapped[dt.datetime | None]


class Tag(Base):
    """A physical code (QR print, NFC sticker) that sends scans to its campaign.

    ``code`` is 8 characters of Crockford base32, upper case, globally unique;
    ``destination_url`` overrides the campaign's when set.
    """

    __tablename__ = "tags"
    __table_args__ = (
        CheckConstraint("kind IN ('qr', 'nfc', 'nfc_sun')", name="kind"),
        # The tag cache's periodic reconcile reads rows changed since its last sync.
        Index("ix_tags_updated_at", "updated_at"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
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
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )


class Scan(Base):
    """One resolved scan (append-only). Written by the group-commit scan writer.

    ``ip_truncated`` is the client address cut to /24 (IPv4) or /48 (IPv6): the full
    address is never stored. ``visitor_id`` is a keyed hash of (IP, user agent,
    campaign) under a salt that rotates daily (16 bytes).
    """

    __tablename__ = "scans"
    __table_args__ = (
        # The only secondary index besides click_id: every index slows the hot path's
        # inserts, and reports always filter by campaign (per-tag figures group within it).
        Index("ix_scans_campaign_id_scanned_at", "campaign_id", "scanned_at"),
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
    )

    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(100))
    click_id: Mapped[str] = mapped_column(String(64), index=True)
    value_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    value_currency: Mapped[str | None] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = _created_at()
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    tag_id: Mapped[int | None] = mapped_column(ForeignKey("tags.id", ondelete="SET NULL"))


class VisitorSalt(Base):
    """The random salt of one UTC day for visitor ids; older salts are deleted (forgotten)."""

    __tablename__ = "visitor_salts"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))
