"""privacy: retention settings, nullable conversion click ids, maintenance runs

Revision ID: 8c4f1e2a9d73
Revises: 5b8e2d4c7a19
Create Date: 2026-12-06 15:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8c4f1e2a9d73"
down_revision: str | None = "8c4f1e7a2d05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column("scan_retention_days", sa.Integer(), server_default="395", nullable=False),
    )
    op.add_column(
        "organizations",
        sa.Column(
            "precise_location_retention_days", sa.Integer(), server_default="30", nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_organizations_retention_range"),
        "organizations",
        "scan_retention_days BETWEEN 1 AND 3650 "
        "AND precise_location_retention_days BETWEEN 1 AND scan_retention_days",
    )
    # An erased person's conversions stay (the merchant's sales) but lose their click id.
    op.alter_column("conversions", "click_id", existing_type=sa.String(length=64), nullable=True)
    # The purge deletes scans: each deletion's SET NULL looks up the conversions crediting
    # that scan.
    op.create_index(op.f("ix_conversions_scan_id"), "conversions", ["scan_id"])
    op.create_table(
        "maintenance_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "result",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_maintenance_runs")),
    )


def downgrade() -> None:
    op.drop_table("maintenance_runs")
    op.drop_index(op.f("ix_conversions_scan_id"), table_name="conversions")
    op.execute("DELETE FROM conversions WHERE click_id IS NULL")
    op.alter_column("conversions", "click_id", existing_type=sa.String(length=64), nullable=False)
    op.drop_constraint(op.f("ck_organizations_retention_range"), "organizations", type_="check")
    op.drop_column("organizations", "precise_location_retention_days")
    op.drop_column("organizations", "scan_retention_days")
