"""scan_locations.location_id: the store a consented GPS fix falls in

Issue 7: everything that reads scans uses a consented fix as the scan's position, "and
the location it falls in". The fix's store is matched when the fix is recorded, by the
same in-memory matcher as the scan path (``LocationCache.match``: the smallest area
covering the point, then the nearest point); ``scan_positions.location_id`` is that
store, else the scan's tag's location, for a scan with a fix, and the scan's own
``location_id`` otherwise. ``ON DELETE SET NULL``: a deleted store leaves the fix to its
tag's location, as scans lose theirs.

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

#: The view as of 20261207_0100_scan_listing_nfc, ``location`` its location_id column.
_VIEW = """
CREATE OR REPLACE VIEW scan_positions AS
SELECT s.id AS scan_id, s.click_id, s.organization_id, s.campaign_id, s.tag_id,
       s.scanned_at, s.channel, s.is_bot, s.bot_reason, s.device_type, s.os, s.browser,
       COALESCE(g.position, s.position) AS position,
       CASE WHEN g.click_id IS NOT NULL THEN 'gps' ELSE s.geo_source END AS geo_source,
       CASE WHEN g.click_id IS NOT NULL THEN g.accuracy_m ELSE s.accuracy_m END AS accuracy_m,
       {location} AS location_id, s.far_from_placement, s.country, s.region, s.city,
       s.rule_id, s.variant, s.internal, s.outcome, s.nfc_counter, s.nfc_verification
FROM scans AS s LEFT JOIN scan_locations AS g ON g.click_id = s.click_id
"""

#: A fix's store, else its tag's (the subquery runs for scans with a fix only).
_WITH_FIX = (
    "CASE WHEN g.click_id IS NULL THEN s.location_id ELSE COALESCE(g.location_id, "
    "(SELECT t.location_id FROM tags AS t WHERE t.id = s.tag_id)) END"
)


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
    op.execute(_VIEW.format(location=_WITH_FIX))


def downgrade() -> None:
    op.execute(_VIEW.format(location="s.location_id"))
    op.drop_index("ix_scan_locations_location_id", table_name="scan_locations")
    op.drop_column("scan_locations", "location_id")
