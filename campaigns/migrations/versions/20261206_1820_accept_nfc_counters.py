"""passerelle_accept_counters(): the NFC replay check of a group commit in one statement

The scan writer judged the taps of a batch with three statements (lock the tags' rows,
read their counters, store the counters that moved), each a round trip in the group
commit's transaction. This function does the same in one call, with the same locks and
the same snapshots: under READ COMMITTED each statement of a volatile PL/pgSQL function
takes a new snapshot, so the counters are read after the row locks are held, as before
(see ``campaigns.scanning.nfc``).

Revision ID: 3d7b1f9e6a42
Revises: 3e7b9d1c5a42
Create Date: 2026-12-06 18:15:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3d7b1f9e6a42"
down_revision: str | None = "3e7b9d1c5a42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCEPT_COUNTERS_FUNCTION = """
CREATE FUNCTION passerelle_accept_counters(tag_ids bigint[], counters integer[])
RETURNS boolean[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    answers boolean[];
BEGIN
    -- Offers are (tag_ids[i], counters[i]), judged in that order. The tags' rows are
    -- locked in id order: concurrent callers cannot deadlock.
    PERFORM 1 FROM tags WHERE id = ANY(tag_ids) ORDER BY id FOR NO KEY UPDATE;
    -- A statement of its own, so a snapshot taken once the locks are held: it sees the
    -- counters committed by the previous holder. An offer is accepted when its tag exists
    -- and its counter is above the tag's last accepted one and above every earlier offer
    -- of the tag in this call (a rejected earlier offer was at most the running maximum
    -- of accepted ones, so it never raises that bound); each tag's highest accepted
    -- counter is stored.
    WITH offer AS (
        SELECT o.ord, o.tag_id, o.counter,
               t.id IS NOT NULL AS known,
               c.last_counter,
               max(o.counter) OVER (
                   PARTITION BY o.tag_id ORDER BY o.ord
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
               ) AS earlier
        FROM unnest(tag_ids, counters) WITH ORDINALITY AS o(tag_id, counter, ord)
        LEFT JOIN tags AS t ON t.id = o.tag_id
        LEFT JOIN nfc_counters AS c ON c.tag_id = o.tag_id
    ),
    judged AS (
        SELECT ord, tag_id, counter,
               known
               AND (last_counter IS NULL OR last_counter < counter)
               AND (earlier IS NULL OR earlier < counter) AS ok
        FROM offer
    ),
    stored AS (
        INSERT INTO nfc_counters (tag_id, last_counter)
        SELECT tag_id, max(counter) FROM judged WHERE ok GROUP BY tag_id
        ON CONFLICT (tag_id) DO UPDATE SET last_counter = excluded.last_counter
    )
    SELECT coalesce(array_agg(ok ORDER BY ord), '{}') INTO answers FROM judged;
    RETURN answers;
END
$$
"""


def upgrade() -> None:
    op.execute(ACCEPT_COUNTERS_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS passerelle_accept_counters(bigint[], integer[])")
