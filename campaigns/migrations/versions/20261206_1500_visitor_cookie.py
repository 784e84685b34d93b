"""visitor cookie: organizations broadcast on passerelle_cache (the scan path holds the
visitor-cookie settings in memory); visitor_cookie_consents (the scans whose visitor
said yes on the consent page, with the cookie id then set)

Revision ID: 8c4f1e2a9d37
Revises: 5b8e2d4c7a19
Create Date: 2026-12-06 15:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c4f1e2a9d37"
down_revision: str | None = "9d4a6c2e8f10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (trigger suffix, event, transition table), as for the other cached tables; the
#: functions passerelle_notify_cache() and passerelle_notify_truncate() exist already.
NOTIFY_TRIGGERS = (
    ("ins", "INSERT", "NEW TABLE"),
    ("upd", "UPDATE", "NEW TABLE"),
    ("del", "DELETE", "OLD TABLE"),
)


def upgrade() -> None:
    op.create_table(
        "visitor_cookie_consents",
        sa.Column("click_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("cookie_id", sa.Uuid(), nullable=False),
        sa.Column(
            "consented_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_visitor_cookie_consents_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("click_id", name=op.f("pk_visitor_cookie_consents")),
    )
    op.create_index(
        op.f("ix_visitor_cookie_consents_cookie_id"),
        "visitor_cookie_consents",
        ["cookie_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_visitor_cookie_consents_organization_id"),
        "visitor_cookie_consents",
        ["organization_id"],
        unique=False,
    )
    for suffix, event, transition in NOTIFY_TRIGGERS:
        op.execute(
            f"CREATE TRIGGER organizations_notify_cache_{suffix} AFTER {event} ON organizations "
            f"REFERENCING {transition} AS changed "
            "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_cache()"
        )
    op.execute(
        "CREATE TRIGGER organizations_notify_cache_truncate AFTER TRUNCATE ON organizations "
        "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_truncate()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS organizations_notify_cache_truncate ON organizations")
    for suffix, _, _ in NOTIFY_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS organizations_notify_cache_{suffix} ON organizations")
    op.drop_index(
        op.f("ix_visitor_cookie_consents_organization_id"), table_name="visitor_cookie_consents"
    )
    op.drop_index(
        op.f("ix_visitor_cookie_consents_cookie_id"), table_name="visitor_cookie_consents"
    )
    op.drop_table("visitor_cookie_consents")
