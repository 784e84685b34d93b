"""report rollups: scan and conversion figures per campaign and UTC hour

Revision ID: 8c4f1e7a2d05
Revises: 5b8e2d4c7a19
Create Date: 2026-12-06 15:00:00+00:00

The tables start empty and ``rollup_state`` without its row: the first pass of the
rollup worker (or ``passerelle rollups rebuild``) builds them from the raw rows; until
then reports read the raw tables. ``scans`` stays one table (docs/DECISIONS.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c4f1e7a2d05"
down_revision: str | None = "8c4f2a9e61d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BOT_REASONS = ("head", "prefetch", "previewer", "scanner", "crawler", "no_user_agent")


def _key(table: str) -> list[sa.Column[object]]:
    return [
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
    ]


def _fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["campaign_id"],
        ["campaigns.id"],
        name=f"fk_{table}_campaign_id_campaigns",
        ondelete="CASCADE",
    )


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def upgrade() -> None:
    op.create_table(
        "scan_rollups",
        *_key("scan_rollups"),
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        *(
            _count(n)
            for n in ("scans", "bot_scans", "burst_scans", "replayed_taps", "invalid_taps")
        ),
        *(_count(f"bot_{reason}") for reason in BOT_REASONS),
        *(_count(n) for n in ("visitors", "first_visitors", "last_visitors")),
        _fk("scan_rollups"),
        sa.UniqueConstraint(
            "campaign_id", "hour", "tag_id", name="uq_scan_rollups_campaign_id_hour_tag_id"
        ),
    )
    op.create_table(
        "scan_day_rollups",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        *(
            _count(n)
            for n in ("scans", "bot_scans", "burst_scans", "replayed_taps", "invalid_taps")
        ),
        *(_count(f"bot_{reason}") for reason in BOT_REASONS),
        _count("visitors"),
        _fk("scan_day_rollups"),
        sa.UniqueConstraint(
            "campaign_id", "day", "tag_id", name="uq_scan_day_rollups_campaign_id_day_tag_id"
        ),
    )
    op.create_table(
        "campaign_rollups",
        *_key("campaign_rollups"),
        *(_count(n) for n in ("scans", "visitors", "first_visitors", "last_visitors")),
        _fk("campaign_rollups"),
        sa.UniqueConstraint("campaign_id", "hour", name="uq_campaign_rollups_campaign_id_hour"),
    )
    op.create_table(
        "scan_breakdown_rollups",
        *_key("scan_breakdown_rollups"),
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        _count("scans"),
        _fk("scan_breakdown_rollups"),
    )
    op.create_index(
        "ix_scan_breakdown_rollups_campaign_id_hour",
        "scan_breakdown_rollups",
        ["campaign_id", "hour"],
    )
    op.create_table(
        "conversion_rollups",
        *_key("conversion_rollups"),
        sa.Column("tag_id", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        _count("conversions"),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        _fk("conversion_rollups"),
    )
    op.create_index(
        "ix_conversion_rollups_campaign_id_hour", "conversion_rollups", ["campaign_id", "hour"]
    )
    op.create_table(
        "conversion_day_rollups",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tag_id", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        _count("conversions"),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        _fk("conversion_day_rollups"),
    )
    op.create_index(
        "ix_conversion_day_rollups_campaign_id_day",
        "conversion_day_rollups",
        ["campaign_id", "day"],
    )
    op.create_table(
        "campaign_conversion_rollups",
        *_key("campaign_conversion_rollups"),
        sa.Column("currency", sa.String(length=3), nullable=True),
        _count("conversions"),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        _fk("campaign_conversion_rollups"),
    )
    op.create_index(
        "ix_campaign_conversion_rollups_campaign_id_hour",
        "campaign_conversion_rollups",
        ["campaign_id", "hour"],
    )
    op.create_table(
        "conversion_breakdown_rollups",
        *_key("conversion_breakdown_rollups"),
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        _count("conversions"),
        _fk("conversion_breakdown_rollups"),
    )
    op.create_index(
        "ix_conversion_breakdown_rollups_campaign_id_hour",
        "conversion_breakdown_rollups",
        ["campaign_id", "hour"],
    )
    op.create_table(
        "rollup_dirty",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_dirty"),
    )
    op.create_table(
        "rollup_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("last_pass_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("folded_until", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_rollup_state_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_state"),
    )
    op.create_index("ix_conversions_received_at", "conversions", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_conversions_received_at", table_name="conversions")
    for table in (
        "rollup_state",
        "rollup_dirty",
        "conversion_breakdown_rollups",
        "campaign_conversion_rollups",
        "conversion_day_rollups",
        "conversion_rollups",
        "scan_breakdown_rollups",
        "campaign_rollups",
        "scan_day_rollups",
        "scan_rollups",
    ):
        op.drop_table(table)
