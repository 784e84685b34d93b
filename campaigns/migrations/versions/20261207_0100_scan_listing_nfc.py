"""scan_positions: a scan's outcome and its NFC counter and verdict, for the scan listing

``GET /v1/campaigns/{id}/scans`` (JSON, GeoJSON, CSV) reads the view: it now also gives
``outcome`` (``redirect``, ``fallback``, or ``blocked`` for a tap refused with the 403
page under ``nfc_invalid_tap = block``), ``nfc_counter`` and ``nfc_verification``, so a
marketer can see which taps were genuine, replayed or forged. Columns appended at the
end: ``CREATE OR REPLACE VIEW`` keeps the view's dependants.

Revision ID: 2f8c4a6e9d13
Revises: 6a1d9e3c7b25
Create Date: 2026-12-07 01:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "2f8c4a6e9d13"
down_revision: str | None = "6a1d9e3c7b25"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The view as of 20261206_1810_internal_scans, plus ``extra`` columns at the end.
_VIEW = """
CREATE OR REPLACE VIEW scan_positions AS
SELECT s.id AS scan_id, s.click_id, s.organization_id, s.campaign_id, s.tag_id,
       s.scanned_at, s.channel, s.is_bot, s.bot_reason, s.device_type, s.os, s.browser,
       COALESCE(g.position, s.position) AS position,
       CASE WHEN g.click_id IS NOT NULL THEN 'gps' ELSE s.geo_source END AS geo_source,
       CASE WHEN g.click_id IS NOT NULL THEN g.accuracy_m ELSE s.accuracy_m END AS accuracy_m,
       s.location_id, s.far_from_placement, s.country, s.region, s.city,
       s.rule_id, s.variant, s.internal{extra}
FROM scans AS s LEFT JOIN scan_locations AS g ON g.click_id = s.click_id
"""


def upgrade() -> None:
    op.execute(_VIEW.format(extra=", s.outcome, s.nfc_counter, s.nfc_verification"))


def downgrade() -> None:
    # Dropping columns of a view needs DROP (CREATE OR REPLACE only appends).
    op.execute("DROP VIEW scan_positions")
    op.execute(_VIEW.format(extra="").replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
