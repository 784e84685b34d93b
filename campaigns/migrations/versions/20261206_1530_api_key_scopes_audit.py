"""API key scopes made mandatory, audit_events, organizations.allowed_destination_hosts

Revision ID: 9c4a7e2f5d18
Revises: 5b8e2d4c7a19
Create Date: 2026-12-06 15:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9c4a7e2f5d18"
down_revision: str | None = "8c4f1e2a9d73"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keys issued before scopes existed (empty array) keep working with every scope: they
    # become admin keys, and from now on every key holds at least one scope.
    # A key inserted without scopes (by code from before them) is an admin key too.
    op.execute("UPDATE api_keys SET scopes = '{admin}' WHERE cardinality(scopes) = 0")
    op.alter_column("api_keys", "scopes", server_default="{admin}")
    op.create_check_constraint(
        op.f("ck_api_keys_scopes_not_empty"), "api_keys", "cardinality(scopes) > 0"
    )
    op.add_column(
        "organizations",
        sa.Column("allowed_destination_hosts", postgresql.ARRAY(sa.Text()), nullable=True),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_label", sa.String(length=200), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "actor_type IN ('api_key', 'user', 'cli', 'system')",
            name=op.f("ck_audit_events_actor_type"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audit_events_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_organization_id_id", "audit_events", ["organization_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_organization_id_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_column("organizations", "allowed_destination_hosts")
    op.drop_constraint(op.f("ck_api_keys_scopes_not_empty"), "api_keys", type_="check")
    op.alter_column("api_keys", "scopes", server_default="{}")
