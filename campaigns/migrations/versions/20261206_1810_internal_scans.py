"""internal scans: scans.internal (a phone signed into the dashboard: staff testing a
poster, issue 11), internal_scans in the scan rollups, and the column in the
scan_positions view

Revision ID: 3e7b9d1c5a24
Revises: 9c4a7e2f5d18
Create Date: 2026-12-06 18:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e7b9d1c5a24"
down_revision: str | None = "9c4a7e2f5d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The view of 20261129_1745_scan_geolocation, without ``internal`` (the downgrade).
_VIEW_SELECT = """
SELECT s.id AS scan_id, s.click_id, s.organization_id, s.campaign_id, s.tag_id,
       s.scanned_at, s.channel, s.is_bot, s.bot_reason, s.device_type, s.os, s.browser,
       COALESCE(g.position, s.position) AS position,
       CASE WHEN g.click_id IS NOT NULL THEN 'gps' ELSE s.geo_source END AS geo_source,
       CASE WHEN g.click_id IS NOT NULL THEN g.accuracy_m ELSE s.accuracy_m END AS accuracy_m,
       s.location_id, s.far_from_placement, s.country, s.region, s.city,
       s.rule_id, s.variant{extra}
FROM scans AS s LEFT JOIN scan_locations AS g ON g.click_id = s.click_id
"""

ROLLUP_TABLES = ("scan_rollups", "scan_day_rollups")


def upgrade() -> None:
    # A constant default: PostgreSQL 11+ adds the column without rewriting the table.
    op.add_column(
        "scans",
        sa.Column("internal", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    # No scan was internal before: the existing rollup rows stay exact with 0.
    for table in ROLLUP_TABLES:
        op.add_column(
            table,
            sa.Column("internal_scans", sa.Integer(), server_default="0", nullable=False),
        )
    # A column appended at the end: CREATE OR REPLACE keeps the view's dependants.
    op.execute(
        "CREATE OR REPLACE VIEW scan_positions AS"
        + _VIEW_SELECT.format(extra=",\n       s.internal")
    )


def downgrade() -> None:
    op.execute("DROP VIEW scan_positions")
    op.execute("CREATE VIEW scan_positions AS" + _VIEW_SELECT.format(extra=""))
    for table in ROLLUP_TABLES:
        op.drop_column(table, "internal_scans")
    op.drop_column("scans", "internal")
