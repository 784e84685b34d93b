"""one tag per (campaign, location, label), for idempotent bulk tag creation

Revision ID: db629b41ff1f
Revises: 3f1c9a7e5b21
Create Date: 2026-11-29 17:40:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "db629b41ff1f"
down_revision: str | None = "3f1c9a7e5b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tags created one by one before this revision may share a label at a location. Their
# codes are printed and scanned, so none is deleted: every duplicate but the oldest gets
# its id appended to its label (" #123"), which keeps labels at most 200 characters.
RELABEL_DUPLICATES = """
UPDATE tags SET label = left(tags.label, 180) || ' #' || tags.id, updated_at = now()
FROM (
    SELECT id, row_number() OVER (
        PARTITION BY campaign_id, location_id, label ORDER BY id
    ) AS rank
    FROM tags
    WHERE location_id IS NOT NULL AND label IS NOT NULL
) AS ranked
WHERE tags.id = ranked.id AND ranked.rank > 1
"""


def upgrade() -> None:
    op.execute(RELABEL_DUPLICATES)
    op.create_index(
        "uq_tags_campaign_id_location_id_label",
        "tags",
        ["campaign_id", "location_id", "label"],
        unique=True,
        postgresql_where="location_id IS NOT NULL AND label IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("uq_tags_campaign_id_location_id_label", table_name="tags")
