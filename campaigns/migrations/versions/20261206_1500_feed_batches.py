"""feed_batches and feed_horizon: the live feed's committed batches

Revision ID: 8c4f2a9e61d3
Revises: 5b8e2d4c7a19
Create Date: 2026-12-06 15:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import UserDefinedType

revision: str = "8c4f2a9e61d3"
down_revision: str | None = "8c4f1e2a9d37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Xid8(UserDefinedType[int]):
    """``xid8`` (this migration's own copy of ``campaigns.models.Xid8``)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


# One row per committed batch (a group commit's scans, a transaction's credited
# conversions), never one per scan: see campaigns/feed.py and docs/DECISIONS.md.


def upgrade() -> None:
    op.create_table(
        "feed_batches",
        sa.Column("xid", Xid8(), server_default=sa.text("pg_current_xact_id()"), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("campaign_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("click_ids", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("conversion_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('scan', 'conversion')", name=op.f("ck_feed_batches_kind")),
        sa.PrimaryKeyConstraint("xid", "id", name=op.f("pk_feed_batches")),
    )
    op.create_table(
        "feed_horizon",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("last_deleted", Xid8(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_feed_horizon_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_horizon")),
    )
    op.execute("INSERT INTO feed_horizon (id, last_deleted) VALUES (1, '0')")


def downgrade() -> None:
    op.drop_table("feed_horizon")
    op.drop_table("feed_batches")
