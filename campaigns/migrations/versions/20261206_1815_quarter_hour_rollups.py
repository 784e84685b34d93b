"""quarter-hour rollups: campaign scans, visitors and conversions per UTC quarter hour

Revision ID: 3e7b9d1c5a42
Revises: 3e7b9d1c5a24
Create Date: 2026-12-06 18:15:00+00:00

For stats series in time zones with 30- or 45-minute offsets (campaigns.models
``campaign_quarter_rollups``, ``campaign_conversion_quarter_rollups``). The tables start
empty; every day already rolled up is
marked dirty, so the rollup worker's next passes fill it (frozen days, whose raw scans
may be gone, are skipped and keep no quarter rows); ``passerelle rollups rebuild`` fills
them at once. Until a day has its rows, series in such zones read the raw rows, as
before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e7b9d1c5a42"
down_revision: str | None = "3e7b9d1c5a24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_quarter_rollups",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("quarter", sa.DateTime(timezone=True), nullable=False),
        *(
            sa.Column(name, sa.Integer(), server_default="0", nullable=False)
            for name in ("scans", "first_visitors", "last_visitors", "hour_visitors")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_quarter_rollups_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "campaign_id", "quarter", name="uq_campaign_quarter_rollups_campaign_id_quarter"
        ),
    )
    op.create_table(
        "campaign_conversion_quarter_rollups",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("quarter", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("conversions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_conversion_quarter_rollups_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_campaign_conversion_quarter_rollups_campaign_id_quarter",
        "campaign_conversion_quarter_rollups",
        ["campaign_id", "quarter"],
    )
    op.execute(
        "INSERT INTO rollup_dirty (campaign_id, day) "
        "SELECT campaign_id, CAST(hour AT TIME ZONE 'UTC' AS date) FROM campaign_rollups "
        "UNION SELECT campaign_id, CAST(hour AT TIME ZONE 'UTC' AS date) "
        "FROM campaign_conversion_rollups"
    )


def downgrade() -> None:
    op.drop_table("campaign_conversion_quarter_rollups")
    op.drop_table("campaign_quarter_rollups")
