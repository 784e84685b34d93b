"""scan_locations.location_id: the store a consented GPS fix falls in

Issue 7: everything that reads scans uses a consented fix as the scan's position, "and
the location it falls in". The fix's store is matched when the fix is recorded, by the
same in-memory matcher as the scan path (``LocationCache.match``: the smallest area
covering the point, then the nearest point). ``scan_positions.location_id`` is that
store when there is one, else the scan's own (its placement's or IP position's store,
else its tag's location when it was scanned): history does not move when a tag is
re-pointed later. ``ON DELETE SET NULL``: a deleted store leaves the scan's own.

The retention purge of precise positions (``precise_location_retention_days``) keeps a
fix's store and drops its position: ``position`` and ``accuracy_m`` become nullable, and
the view reads a fix without a position as no fix for the position, ``geo_source`` and
``accuracy_m``.

Revision ID: 7c3e1a9f4b62
Revises: 2f8c4a6e9d13
Create Date: 2026-12-07 04:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e1a9f4b62"
down_revision: str | None = "2f8c4a6e9d13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The view, ``location`` its location_id column.
_VIEW = """
CREATE OR REPLACE VIEW scan_positions AS
SELECT s.id AS scan_id, s.click_id, s.organization_id, s.campaign_id, s.tag_id,
       s.scanned_at, s.channel, s.is_bot, s.bot_reason, s.device_type, s.os, s.browser,
       COALESCE(g.position, s.position) AS position,
       CASE WHEN g.position IS NOT NULL THEN 'gps' ELSE s.geo_source END AS geo_source,
       CASE WHEN g.position IS NOT NULL THEN g.accuracy_m ELSE s.accuracy_m END AS accuracy_m,
       {location} AS location_id, s.far_from_placement, s.country, s.region, s.city,
       s.rule_id, s.variant, s.internal, s.outcome, s.nfc_counter, s.nfc_verification
FROM scans AS s LEFT JOIN scan_locations AS g ON g.click_id = s.click_id
"""

#: As of 20261207_0100_scan_listing_nfc (a fix is a row; its position is never null).
_PREVIOUS_VIEW = _VIEW.replace("g.position IS NOT NULL", "g.click_id IS NOT NULL")


def upgrade() -> None:
    op.add_column(
        "scan_locations",
        sa.Column(
            "location_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "locations.id",
                name="fk_scan_locations_location_id_locations",
                ondelete="SET NULL",
            ),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_scan_locations_location_id",
        "scan_locations",
        ["location_id"],
        postgresql_where=sa.text("location_id IS NOT NULL"),
    )
    op.alter_column("scan_locations", "position", nullable=True)
    op.alter_column("scan_locations", "accuracy_m", nullable=True)
    op.execute(_VIEW.format(location="COALESCE(g.location_id, s.location_id)"))


def downgrade() -> None:
    op.execute(_PREVIOUS_VIEW.format(location="s.location_id"))
    op.execute("DELETE FROM scan_locations WHERE position IS NULL")
    op.alter_column("scan_locations", "accuracy_m", nullable=False)
    op.alter_column("scan_locations", "position", nullable=False)
    op.drop_index("ix_scan_locations_location_id", table_name="scan_locations")
    op.drop_column("scan_locations", "location_id")
