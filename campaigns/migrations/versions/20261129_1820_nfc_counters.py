"""nfc_counters: the last accepted SUN counter of each tag, out of tags

Revision ID: 5b8e2d4c7a19
Revises: 6d2e8b4f1a93
Create Date: 2026-11-29 18:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b8e2d4c7a19"
down_revision: str | None = "6d2e8b4f1a93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every accepted NFC tap moves its tag's last counter. On tags, each such row update ran
# the tags UPDATE trigger (its transition tables and a JSON comparison of old and new
# rows, made to ignore the counter): 26 µs of PostgreSQL CPU per tap against 5 µs on a
# two-column table without trigger (benchmarks/scan_rows_pg.py). The counter gets that
# table; tags rows are still locked per batch (campaigns/scanning/nfc.py), never updated,
# and the tags UPDATE trigger goes back to the initial one (every update is a change).

#: The trigger function of migration ``nfc_tags`` (3f1c9a7d2b64), for the downgrade.
NOTIFY_TAG_UPDATE_FUNCTION = """
CREATE FUNCTION passerelle_notify_tag_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    ids text;
BEGIN
    SELECT count(*), string_agg(id::text, ',') INTO n, ids
    FROM (
        SELECT c.id FROM changed AS c JOIN previous AS p ON p.id = c.id
        WHERE to_jsonb(c) - 'nfc_last_counter' IS DISTINCT FROM to_jsonb(p) - 'nfc_last_counter'
        LIMIT 201
    ) AS some_changed;
    IF n > 200 THEN
        PERFORM pg_notify('passerelle_cache', 'tags:*');
    ELSIF n > 0 THEN
        PERFORM pg_notify('passerelle_cache', 'tags:' || ids);
    END IF;
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "nfc_counters",
        sa.Column("tag_id", sa.BigInteger(), nullable=False),
        sa.Column("last_counter", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "last_counter BETWEEN 0 AND 16777215", name=op.f("ck_nfc_counters_last_counter_range")
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_nfc_counters_tag_id_tags"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tag_id", name=op.f("pk_nfc_counters")),
    )
    op.execute(
        "INSERT INTO nfc_counters (tag_id, last_counter) "
        "SELECT id, nfc_last_counter FROM tags WHERE nfc_last_counter IS NOT NULL"
    )
    op.execute("DROP TRIGGER tags_notify_cache_upd ON tags")
    op.execute(
        "CREATE TRIGGER tags_notify_cache_upd AFTER UPDATE ON tags "
        "REFERENCING NEW TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_cache()"
    )
    op.execute("DROP FUNCTION passerelle_notify_tag_update()")
    op.drop_constraint(op.f("ck_tags_nfc_last_counter_range"), "tags", type_="check")
    op.drop_column("tags", "nfc_last_counter")


def downgrade() -> None:
    op.add_column("tags", sa.Column("nfc_last_counter", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_tags_nfc_last_counter_range"), "tags", "nfc_last_counter BETWEEN 0 AND 16777215"
    )
    op.execute(
        "UPDATE tags SET nfc_last_counter = c.last_counter FROM nfc_counters AS c "
        "WHERE c.tag_id = tags.id"
    )
    op.execute(NOTIFY_TAG_UPDATE_FUNCTION)
    op.execute("DROP TRIGGER tags_notify_cache_upd ON tags")
    op.execute(
        "CREATE TRIGGER tags_notify_cache_upd AFTER UPDATE ON tags "
        "REFERENCING OLD TABLE AS previous NEW TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_tag_update()"
    )
    op.drop_table("nfc_counters")
