"""The live feed's batch row written by a statement-level trigger on scans.

Every statement that stores scans (the group commit's ``COPY``, the spool replay's
``INSERT ... ON CONFLICT DO NOTHING``, the row-by-row fallback) gets its one
``feed_batches`` row from this trigger, in its own transaction, from its transition
table: only rows really inserted, once per statement. So a batch without NFC taps or
webhooks is the ``COPY`` alone (one round trip), and the writer has no statement of its
own to send for the feed.

Revision ID: 4d7e2a9c1f36
Revises: 9c4a7e2f5d18
Create Date: 2026-12-06 16:45
"""

from __future__ import annotations

from alembic import op

revision: str = "4d7e2a9c1f36"
down_revision: str | None = "9c4a7e2f5d18"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION passerelle_feed_scans() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO feed_batches (kind, campaign_ids, click_ids)
            SELECT 'scan', array_agg(DISTINCT campaign_id), array_agg(click_id)
            FROM new_scans
            HAVING count(*) > 0;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER scans_feed_batch AFTER INSERT ON scans "
        "REFERENCING NEW TABLE AS new_scans "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_feed_scans()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS scans_feed_batch ON scans")
    op.execute("DROP FUNCTION IF EXISTS passerelle_feed_scans()")
