"""rollup_state.next_pass_at: the earliest time any process may start the next pass

The rollup worker of every process took turns through the advisory lock but paced
itself alone, so W processes ran up to W passes per interval, each recomputing the
day's scans: on a busy day the passes took most of a database core from the scan path.
The process that ends a pass now writes when the next may start (the interval after
its start, or nine times its duration after its end, whichever is later) and every
worker skips until then (``campaigns.services.rollups.rollup_pass``). NULL: no pass
recorded it yet, the next may start at once.

Revision ID: 8e4b1c6f2a07
Revises: 5c2e8a7d1b93
Create Date: 2026-12-07 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e4b1c6f2a07"
down_revision: str | None = "5c2e8a7d1b93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rollup_state", sa.Column("next_pass_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("rollup_state", "next_pass_at")
