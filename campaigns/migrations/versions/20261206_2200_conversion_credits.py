"""stored attribution credits: conversion_credits, conversions.credits_n, and the
triggers that make stored credits stale when a journey's scans change

Each settled conversion's touches at the default parameters (30-day lookback, 7-day
half-life) with every model's weight and value split (``campaigns.services.credits``).
``conversions.credits_n`` is NULL for every existing conversion: reports credit them
live (as before) until ``passerelle credits refresh`` has filled the table (the
backfill; the app's refresh worker also does it, a batch at a time).

The triggers make a conversion's stored credits stale (rows deleted, ``credits_n``
NULL, so reports credit it live until the next refresh) whatever deletes a scan
(erasure, retention purge), answers or erases a cookie consent, or unlinks a
conversion from its click id (erasure). They never fire on the scan path's inserts.

Revision ID: 5c2e8a7d1b93
Revises: 3d7b1f9e6a42
Create Date: 2026-12-06 22:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c2e8a7d1b93"
down_revision: str | None = "3d7b1f9e6a42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = """
CREATE FUNCTION passerelle_credits_stale(ids bigint[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    DELETE FROM conversion_credits WHERE conversion_id = ANY(ids);
    UPDATE conversions SET credits_n = NULL WHERE id = ANY(ids) AND credits_n IS NOT NULL;
$$;

-- Deleted scans (erasure, retention purge): the conversions they were a touch of.
CREATE FUNCTION passerelle_credits_scans_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM passerelle_credits_stale(ARRAY(
        SELECT DISTINCT cc.conversion_id FROM conversion_credits cc
        JOIN gone g ON g.id = cc.scan_id));
    RETURN NULL;
END $$;

-- A consent answered (or erased): the conversions whose click scan is the consented
-- scan, or carries its cookie (directly or through another consent).
CREATE FUNCTION passerelle_credits_consent_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r visitor_cookie_consents;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM passerelle_credits_stale(ARRAY(
        SELECT c.id FROM conversions c
        WHERE c.organization_id = r.organization_id AND c.credits_n IS NOT NULL
          AND c.click_id IN (
              SELECT r.click_id
              UNION ALL
              SELECT k.click_id FROM scans k
              WHERE k.cookie_id = r.cookie_id AND k.organization_id = r.organization_id
              UNION ALL
              SELECT v.click_id FROM visitor_cookie_consents v WHERE v.cookie_id = r.cookie_id)));
    RETURN NULL;
END $$;

-- A conversion unlinked from its click id (erasure): stored credits go.
CREATE FUNCTION passerelle_credits_click_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM conversion_credits WHERE conversion_id = NEW.id;
    NEW.credits_n := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER scans_credits_stale AFTER DELETE ON scans
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION passerelle_credits_scans_deleted();
CREATE TRIGGER visitor_cookie_consents_credits_stale
    AFTER INSERT OR DELETE ON visitor_cookie_consents FOR EACH ROW
    EXECUTE FUNCTION passerelle_credits_consent_changed();
CREATE TRIGGER conversions_credits_stale BEFORE UPDATE OF click_id ON conversions
    FOR EACH ROW WHEN (OLD.click_id IS DISTINCT FROM NEW.click_id)
    EXECUTE FUNCTION passerelle_credits_click_changed();
"""

DROP_FUNCTIONS = """
DROP TRIGGER conversions_credits_stale ON conversions;
DROP TRIGGER visitor_cookie_consents_credits_stale ON visitor_cookie_consents;
DROP TRIGGER scans_credits_stale ON scans;
DROP FUNCTION passerelle_credits_click_changed();
DROP FUNCTION passerelle_credits_consent_changed();
DROP FUNCTION passerelle_credits_scans_deleted();
DROP FUNCTION passerelle_credits_stale(bigint[]);
"""


def upgrade() -> None:
    # Nullable, no default: PostgreSQL adds the column without rewriting the table.
    op.add_column("conversions", sa.Column("credits_n", sa.Integer(), nullable=True))
    op.create_index(
        "ix_conversions_unsettled_credits",
        "conversions",
        ["organization_id", "occurred_at"],
        postgresql_where=sa.text("credits_n IS NULL"),
    )
    op.create_table(
        "conversion_credits",
        sa.Column("conversion_id", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value_currency", sa.String(length=3), nullable=True),
        sa.Column("w_time_decay", sa.BigInteger(), nullable=False),
        sa.Column("v_last_touch", sa.BigInteger(), nullable=False),
        sa.Column("v_first_touch", sa.BigInteger(), nullable=False),
        sa.Column("v_linear", sa.BigInteger(), nullable=False),
        sa.Column("v_time_decay", sa.BigInteger(), nullable=False),
        sa.Column("v_position_based", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversion_id"],
            ["conversions.id"],
            name=op.f("fk_conversion_credits_conversion_id_conversions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversion_id", "idx", name=op.f("pk_conversion_credits")),
    )
    op.create_index(
        "ix_conversion_credits_campaign_id_occurred_at",
        "conversion_credits",
        ["campaign_id", "occurred_at"],
    )
    op.create_index("ix_conversion_credits_scan_id", "conversion_credits", ["scan_id"])
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute(DROP_FUNCTIONS)
    op.drop_table("conversion_credits")
    op.drop_index("ix_conversions_unsettled_credits", table_name="conversions")
    op.drop_column("conversions", "credits_n")
