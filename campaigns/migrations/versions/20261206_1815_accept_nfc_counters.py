"""passerelle_accept_counters(): the NFC replay check of a group commit in one statement

The scan writer judged the taps of a batch with three statements (lock the tags' rows,
read their counters, store the counters that moved), each a round trip in the group
commit's transaction. This function does the same in one call, with the same locks and
the same snapshots: under READ COMMITTED each statement of a volatile PL/pgSQL function
takes a new snapshot, so the counters are read after the row locks are held, as before
(see ``campaigns.scanning.nfc``).

Revision ID: 3d7b1f9e6a42
Revises: 9c4a7e2f5d18
Create Date: 2026-12-06 18:15:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3d7b1f9e6a42"
down_revision: str | None = "9c4a7e2f5d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCEPT_COUNTERS_FUNCTION = """
CREATE FUNCTION passerelle_accept_counters(tag_ids bigint[], counters integer[])
RETURNS boolean[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last jsonb := '{}';
    moved jsonb := '{}';
    answers boolean[] := '{}';
    previous jsonb;
    ok boolean;
    i integer;
BEGIN
    -- Offers are (tag_ids[i], counters[i]), judged in that order (the caller sorts them
    -- by tag, then counter). Rows locked in id order: concurrent callers cannot deadlock.
    PERFORM 1 FROM tags WHERE id = ANY(tag_ids) ORDER BY id FOR NO KEY UPDATE;
    -- A new snapshot, taken once the locks are held: the counters the previous holder
    -- committed are seen. An unknown tag has no key; a tag without a counter row, null.
    SELECT coalesce(jsonb_object_agg(t.id::text, c.last_counter), '{}')
    INTO last
    FROM tags AS t LEFT JOIN nfc_counters AS c ON c.tag_id = t.id
    WHERE t.id = ANY(tag_ids);
    FOR i IN 1 .. coalesce(array_length(tag_ids, 1), 0) LOOP
        previous := last -> tag_ids[i]::text;
        ok := previous IS NOT NULL
              AND (jsonb_typeof(previous) = 'null' OR previous::integer < counters[i]);
        IF ok THEN
            last := jsonb_set(last, ARRAY[tag_ids[i]::text], to_jsonb(counters[i]));
            moved := jsonb_set(moved, ARRAY[tag_ids[i]::text], to_jsonb(counters[i]));
        END IF;
        answers := answers || ok;
    END LOOP;
    IF moved <> '{}' THEN
        INSERT INTO nfc_counters (tag_id, last_counter)
        SELECT key::bigint, value::integer FROM jsonb_each_text(moved)
        ON CONFLICT (tag_id) DO UPDATE SET last_counter = excluded.last_counter;
    END IF;
    RETURN answers;
END
$$
"""


def upgrade() -> None:
    op.execute(ACCEPT_COUNTERS_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS passerelle_accept_counters(bigint[], integer[])")
