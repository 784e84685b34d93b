"""attribution: refunds, organization visitor-cookie settings, campaign time zone, scan
cookie id, journey indexes

Revision ID: a7c3e91f02d4
Revises: 3f1c9a7d2b64
Create Date: 2026-11-29 16:48:45.887935+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7c3e91f02d4"
down_revision: str | None = "3f1c9a7d2b64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("conversion_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["conversion_id"],
            ["conversions.id"],
            name=op.f("fk_refunds_conversion_id_conversions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_refunds_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint(
            "organization_id", "external_id", name=op.f("uq_refunds_organization_id_external_id")
        ),
    )
    op.create_index(op.f("ix_refunds_conversion_id"), "refunds", ["conversion_id"], unique=False)
    op.add_column(
        "campaigns",
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
    )
    op.create_index(
        "ix_conversions_organization_id_occurred_at",
        "conversions",
        ["organization_id", "occurred_at"],
        unique=False,
    )
    op.add_column(
        "organizations",
        sa.Column("visitor_cookie", sa.Boolean(), server_default="false", nullable=False),
    )
    op.add_column(
        "organizations",
        sa.Column(
            "visitor_cookie_consent",
            sa.String(length=16),
            server_default="organization",
            nullable=False,
        ),
    )
    op.create_check_constraint(
        op.f("ck_organizations_visitor_cookie_consent"),
        "organizations",
        "visitor_cookie_consent IN ('organization', 'ask')",
    )
    op.add_column("scans", sa.Column("cookie_id", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_scans_cookie_id_scanned_at",
        "scans",
        ["cookie_id", "scanned_at"],
        unique=False,
        postgresql_where="cookie_id IS NOT NULL",
    )
    op.create_index(
        "ix_scans_visitor_id_scanned_at",
        "scans",
        ["visitor_id", "scanned_at"],
        unique=False,
        postgresql_where="visitor_id IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_scans_visitor_id_scanned_at",
        table_name="scans",
        postgresql_where="visitor_id IS NOT NULL",
    )
    op.drop_index(
        "ix_scans_cookie_id_scanned_at",
        table_name="scans",
        postgresql_where="cookie_id IS NOT NULL",
    )
    op.drop_column("scans", "cookie_id")
    op.drop_constraint(
        op.f("ck_organizations_visitor_cookie_consent"), "organizations", type_="check"
    )
    op.drop_column("organizations", "visitor_cookie_consent")
    op.drop_column("organizations", "visitor_cookie")
    op.drop_index("ix_conversions_organization_id_occurred_at", table_name="conversions")
    op.drop_column("campaigns", "timezone")
    op.drop_index(op.f("ix_refunds_conversion_id"), table_name="refunds")
    op.drop_table("refunds")
