"""initial schema: PostGIS, organizations, API keys, campaigns, tags, scans, conversions

Revision ID: 8549a32267aa
Revises:
Create Date: 2026-11-29 11:02:11.077626+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8549a32267aa"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Every change to what decides a redirect (tags, campaigns) is broadcast on this channel so
# that each server process refreshes its in-memory tag cache (campaigns/scanning/cache.py).
# Statement-level triggers with transition tables: one notification per statement,
# "<table>:<id>,<id>,..." for up to 200 rows, "<table>:*" (reconcile) beyond, so a bulk
# import of a million tags sends one notification, not a million (payloads stop at 8000 B).
NOTIFY_FUNCTION = """
CREATE FUNCTION passerelle_notify_cache() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    ids text;
BEGIN
    SELECT count(*), string_agg(id::text, ',') INTO n, ids
    FROM (SELECT id FROM changed LIMIT 201) AS some_changed;
    IF n > 200 THEN
        PERFORM pg_notify('passerelle_cache', TG_TABLE_NAME || ':*');
    ELSIF n > 0 THEN
        PERFORM pg_notify('passerelle_cache', TG_TABLE_NAME || ':' || ids);
    END IF;
    RETURN NULL;
END;
$$
"""
#: (trigger suffix, event, transition table) for each table of CACHED_TABLES.
NOTIFY_TRIGGERS = (
    ("ins", "INSERT", "NEW TABLE"),
    ("upd", "UPDATE", "NEW TABLE"),
    ("del", "DELETE", "OLD TABLE"),
)
CACHED_TABLES = ("tags", "campaigns")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "organizations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "visitor_salts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("salt", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_visitor_salts")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_api_keys_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
    )
    op.create_index(
        op.f("ix_api_keys_organization_id"), "api_keys", ["organization_id"], unique=False
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("destination_url", sa.Text(), nullable=False),
        sa.Column("fallback_url", sa.Text(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "utm", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("cost_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("cost_currency", sa.String(length=3), nullable=True),
        sa.Column("archived", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("cost_amount_minor >= 0", name=op.f("ck_campaigns_cost_non_negative")),
        sa.CheckConstraint(
            "ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at",
            name=op.f("ck_campaigns_schedule"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_campaigns_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(
        op.f("ix_campaigns_organization_id"), "campaigns", ["organization_id"], unique=False
    )
    op.create_index(
        "uq_campaigns_organization_id_slug",
        "campaigns",
        ["organization_id", "slug"],
        unique=True,
        postgresql_where="deleted_at IS NULL",
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("destination_url", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('qr', 'nfc', 'nfc_sun')", name=op.f("ck_tags_kind")),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_tags_status")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_tags_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_tags_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("code", name=op.f("uq_tags_code")),
    )
    op.create_index(op.f("ix_tags_campaign_id"), "tags", ["campaign_id"], unique=False)
    op.create_index(op.f("ix_tags_organization_id"), "tags", ["organization_id"], unique=False)
    op.create_index("ix_tags_updated_at", "tags", ["updated_at"], unique=False)
    op.create_index("ix_campaigns_updated_at", "campaigns", ["updated_at"], unique=False)
    op.create_table(
        "scans",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("click_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), server_default="GET", nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("device_type", sa.Text(), nullable=True),
        sa.Column("os", sa.Text(), nullable=True),
        sa.Column("browser", sa.Text(), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("ip_truncated", postgresql.INET(), nullable=True),
        sa.Column("visitor_id", sa.LargeBinary(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
        sa.UniqueConstraint("click_id", name=op.f("uq_scans_click_id")),
    )
    op.create_index(
        "ix_scans_campaign_id_scanned_at", "scans", ["campaign_id", "scanned_at"], unique=False
    )
    op.create_table(
        "conversions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=False),
        sa.Column("click_id", sa.String(length=64), nullable=False),
        sa.Column("value_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("value_currency", sa.String(length=3), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scan_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=True),
        sa.Column("tag_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "value_amount_minor >= 0", name=op.f("ck_conversions_value_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_conversions_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_conversions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scan_id"],
            ["scans.id"],
            name=op.f("fk_conversions_scan_id_scans"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_conversions_tag_id_tags"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint(
            "organization_id",
            "external_id",
            name=op.f("uq_conversions_organization_id_external_id"),
        ),
    )
    op.create_index(
        "ix_conversions_campaign_id_occurred_at",
        "conversions",
        ["campaign_id", "occurred_at"],
        unique=False,
    )
    op.create_index(op.f("ix_conversions_click_id"), "conversions", ["click_id"], unique=False)
    op.execute(NOTIFY_FUNCTION)
    for table in CACHED_TABLES:
        for suffix, event, transition in NOTIFY_TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {table}_notify_cache_{suffix} AFTER {event} ON {table} "
                f"REFERENCING {transition} AS changed "
                "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_cache()"
            )


def downgrade() -> None:
    for table in CACHED_TABLES:
        for suffix, _, _ in NOTIFY_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_cache_{suffix} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS passerelle_notify_cache()")
    op.drop_index(op.f("ix_conversions_click_id"), table_name="conversions")
    op.drop_index("ix_conversions_campaign_id_occurred_at", table_name="conversions")
    op.drop_table("conversions")
    op.drop_index("ix_scans_campaign_id_scanned_at", table_name="scans")
    op.drop_table("scans")
    op.drop_index("ix_campaigns_updated_at", table_name="campaigns")
    op.drop_index("ix_tags_updated_at", table_name="tags")
    op.drop_index(op.f("ix_tags_organization_id"), table_name="tags")
    op.drop_index(op.f("ix_tags_campaign_id"), table_name="tags")
    op.drop_table("tags")
    op.drop_index(
        "uq_campaigns_organization_id_slug",
        table_name="campaigns",
        postgresql_where="deleted_at IS NULL",
    )
    op.drop_index(op.f("ix_campaigns_organization_id"), table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_index(op.f("ix_api_keys_organization_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("visitor_salts")
    op.drop_table("organizations")
