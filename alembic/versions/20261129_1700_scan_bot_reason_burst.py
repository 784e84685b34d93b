"""scans: bot_reason (why a scan is not a person's) and burst (past the per-address rate)

Revision ID: 3f2b7c1d9e04
Revises: 8549a32267aa
Create Date: 2026-11-29 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "3f2b7c1d9e04"
down_revision: str | None = "8549a32267aa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both are metadata-only on PostgreSQL 11+ (a constant default needs no table rewrite);
    # the CHECK scans existing rows once, all null.
    op.add_column("scans", sa.Column("bot_reason", sa.Text(), nullable=True))
    op.add_column(
        "scans",
        sa.Column("burst", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_scans_bot_reason"),
        "scans",
        "bot_reason IN ('head', 'prefetch', 'previewer', 'scanner', 'crawler', 'no_user_agent')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_scans_bot_reason"), "scans", type_="check")
    op.drop_column("scans", "burst")
    op.drop_column("scans", "bot_reason")
