"""NFC tags: NTAG 424 DNA columns on tags, NFC master secret, nfc_invalid_tap, scan verdicts

Revision ID: 3f1c9a7d2b64
Revises: 3f2b7c1d9e04
Create Date: 2026-11-29 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f1c9a7d2b64"
down_revision: str | None = "3f2b7c1d9e04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An accepted SUN tap moves tags.nfc_last_counter (campaigns/scanning/nfc.py). That column
# decides no redirect, so such an update must not make every server process re-read the
# tag: the UPDATE trigger of tags compares old and new rows without nfc_last_counter and
# notifies only the rows that changed otherwise (same payload format as
# passerelle_notify_cache of the initial migration).
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
    op.add_column(
        "organizations", sa.Column("nfc_master_secret_encrypted", sa.LargeBinary(), nullable=True)
    )
    op.add_column(
        "campaigns",
        sa.Column("nfc_invalid_tap", sa.String(length=8), server_default="flag", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_campaigns_nfc_invalid_tap"), "campaigns", "nfc_invalid_tap IN ('flag', 'block')"
    )
    op.add_column("tags", sa.Column("nfc_uid", sa.LargeBinary(length=7), nullable=True))
    op.add_column("tags", sa.Column("nfc_keys_encrypted", sa.LargeBinary(), nullable=True))
    op.add_column("tags", sa.Column("nfc_key_derivation_version", sa.SmallInteger(), nullable=True))
    op.add_column("tags", sa.Column("nfc_last_counter", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_tags_nfc_sun_fields"),
        "tags",
        "(kind = 'nfc_sun') = (nfc_uid IS NOT NULL AND nfc_keys_encrypted IS NOT NULL)",
    )
    op.create_check_constraint(op.f("ck_tags_nfc_uid_length"), "tags", "octet_length(nfc_uid) = 7")
    op.create_check_constraint(
        op.f("ck_tags_nfc_last_counter_range"),
        "tags",
        "nfc_last_counter BETWEEN 0 AND 16777215",
    )
    op.create_index(
        "uq_tags_organization_id_nfc_uid",
        "tags",
        ["organization_id", "nfc_uid"],
        unique=True,
        postgresql_where="kind = 'nfc_sun'",
    )
    op.add_column("scans", sa.Column("nfc_counter", sa.Integer(), nullable=True))
    op.add_column("scans", sa.Column("nfc_verification", sa.Text(), nullable=True))
    op.execute(NOTIFY_TAG_UPDATE_FUNCTION)
    op.execute("DROP TRIGGER tags_notify_cache_upd ON tags")
    op.execute(
        "CREATE TRIGGER tags_notify_cache_upd AFTER UPDATE ON tags "
        "REFERENCING OLD TABLE AS previous NEW TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_tag_update()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tags_notify_cache_upd ON tags")
    op.execute(
        "CREATE TRIGGER tags_notify_cache_upd AFTER UPDATE ON tags "
        "REFERENCING NEW TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_cache()"
    )
    op.execute("DROP FUNCTION passerelle_notify_tag_update()")
    op.drop_column("scans", "nfc_verification")
    op.drop_column("scans", "nfc_counter")
    op.drop_index(
        "uq_tags_organization_id_nfc_uid", table_name="tags", postgresql_where="kind = 'nfc_sun'"
    )
    op.drop_constraint(op.f("ck_tags_nfc_last_counter_range"), "tags", type_="check")
    op.drop_constraint(op.f("ck_tags_nfc_uid_length"), "tags", type_="check")
    op.drop_constraint(op.f("ck_tags_nfc_sun_fields"), "tags", type_="check")
    op.drop_column("tags", "nfc_last_counter")
    op.drop_column("tags", "nfc_key_derivation_version")
    op.drop_column("tags", "nfc_keys_encrypted")
    op.drop_column("tags", "nfc_uid")
    op.drop_constraint(op.f("ck_campaigns_nfc_invalid_tap"), "campaigns", type_="check")
    op.drop_column("campaigns", "nfc_invalid_tap")
    op.drop_column("organizations", "nfc_master_secret_encrypted")
