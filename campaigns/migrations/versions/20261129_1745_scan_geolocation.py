"""scan geolocation: country/region/city, IP position, position of record, matched store,
consented GPS fixes (scan_locations), campaigns.precise_location, locations NOTIFY;
redirect rules (redirect_rules, scans.rule_id and variant)

Revision ID: 6d2e8b4f1a93
Revises: db629b41ff1f
Create Date: 2026-11-29 17:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geography
from sqlalchemy.dialects import postgresql

revision: str = "6d2e8b4f1a93"
down_revision: str | None = "db629b41ff1f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The scan's position of record as PostGIS geography, computed from the doubles the
#: group commit writes (COPY stays plain numbers; see docs/DECISIONS.md).
POSITION_EXPRESSION = (
    "CASE WHEN position_lon IS NOT NULL AND position_lat IS NOT NULL "
    "THEN (ST_SetSRID(ST_MakePoint(position_lon, position_lat), 4326))::geography END"
)

#: The one place a consented GPS fix replaces the scan's own position (docs/DECISIONS.md):
#: what reports read (``campaigns.models.scan_positions``). No address, no visitor id.
SCAN_POSITIONS_VIEW = """
CREATE VIEW scan_positions AS
SELECT s.id AS scan_id, s.click_id, s.organization_id, s.campaign_id, s.tag_id,
       s.scanned_at, s.channel, s.is_bot, s.bot_reason, s.device_type, s.os, s.browser,
       COALESCE(g.position, s.position) AS position,
       CASE WHEN g.click_id IS NOT NULL THEN 'gps' ELSE s.geo_source END AS geo_source,
       CASE WHEN g.click_id IS NOT NULL THEN g.accuracy_m ELSE s.accuracy_m END AS accuracy_m,
       s.location_id, s.far_from_placement, s.country, s.region, s.city,
       s.rule_id, s.variant
FROM scans AS s LEFT JOIN scan_locations AS g ON g.click_id = s.click_id
"""

#: TRUNCATE (no transition table) asks for a full re-read: "<table>:*".
NOTIFY_TRUNCATE_FUNCTION = """
CREATE FUNCTION passerelle_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('passerelle_cache', TG_TABLE_NAME || ':*');
    RETURN NULL;
END;
$$
"""

#: Tables whose changes this revision broadcasts on ``passerelle_cache`` (the stores'
#: geofences and the redirect rules are held in memory by every server process).
CACHED_TABLES = ("locations", "redirect_rules")
NOTIFY_TRIGGERS = (
    ("ins", "INSERT", "NEW TABLE"),
    ("upd", "UPDATE", "NEW TABLE"),
    ("del", "DELETE", "OLD TABLE"),
)


def upgrade() -> None:
    op.add_column(
        "campaigns",
        sa.Column("precise_location", sa.String(length=8), server_default="off", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_campaigns_precise_location"), "campaigns", "precise_location IN ('off', 'ask')"
    )
    for name, type_ in (
        ("country", sa.Text()),
        ("region", sa.Text()),
        ("city", sa.Text()),
        ("ip_lat", sa.Double()),
        ("ip_lon", sa.Double()),
        ("ip_accuracy_m", sa.Integer()),
        ("position_lat", sa.Double()),
        ("position_lon", sa.Double()),
        ("geo_source", sa.Text()),
        ("accuracy_m", sa.Double()),
        ("location_id", sa.BigInteger()),
        ("far_from_placement", sa.Boolean()),
        ("rule_id", sa.BigInteger()),
        ("variant", sa.Text()),
    ):
        op.add_column("scans", sa.Column(name, type_, nullable=True))
    op.add_column(
        "scans",
        sa.Column(
            "position",
            Geography(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeogFromText",
                name="geography",
            ),
            sa.Computed(POSITION_EXPRESSION, persisted=True),
            nullable=True,
        ),
    )
    op.create_check_constraint(
        op.f("ck_scans_geo_source"), "scans", "geo_source IN ('gps', 'placement', 'ip')"
    )
    op.create_table(
        "scan_locations",
        sa.Column("click_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "position",
            Geography(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeogFromText",
                name="geography",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("accuracy_m", sa.Double(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_scan_locations_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("click_id", name=op.f("pk_scan_locations")),
    )
    op.create_index(
        op.f("ix_scan_locations_organization_id"), "scan_locations", ["organization_id"]
    )
    op.execute(SCAN_POSITIONS_VIEW)
    op.create_table(
        "redirect_rules",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "conditions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("destination_url", sa.Text(), nullable=True),
        sa.Column("split", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(destination_url IS NULL) <> (split IS NULL)",
            name=op.f("ck_redirect_rules_one_target"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_redirect_rules_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_redirect_rules_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redirect_rules")),
    )
    op.create_index(
        op.f("ix_redirect_rules_campaign_id"), "redirect_rules", ["campaign_id"], unique=False
    )
    op.create_index(
        op.f("ix_redirect_rules_organization_id"),
        "redirect_rules",
        ["organization_id"],
        unique=False,
    )
    for table in CACHED_TABLES:
        for suffix, event, transition in NOTIFY_TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {table}_notify_cache_{suffix} AFTER {event} ON {table} "
                f"REFERENCING {transition} AS changed "
                "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_cache()"
            )
    op.execute(NOTIFY_TRUNCATE_FUNCTION)
    for table in CACHED_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify_cache_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION passerelle_notify_truncate()"
        )


def downgrade() -> None:
    for table in CACHED_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_cache_truncate ON {table}")
    op.execute("DROP FUNCTION IF EXISTS passerelle_notify_truncate()")
    for table in CACHED_TABLES:
        for suffix, _, _ in NOTIFY_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_cache_{suffix} ON {table}")
    op.drop_index(op.f("ix_redirect_rules_organization_id"), table_name="redirect_rules")
    op.drop_index(op.f("ix_redirect_rules_campaign_id"), table_name="redirect_rules")
    op.drop_table("redirect_rules")
    op.execute("DROP VIEW IF EXISTS scan_positions")
    op.drop_index(op.f("ix_scan_locations_organization_id"), table_name="scan_locations")
    op.drop_table("scan_locations")
    op.drop_constraint(op.f("ck_scans_geo_source"), "scans", type_="check")
    for name in (
        "variant",
        "rule_id",
        "position",
        "far_from_placement",
        "location_id",
        "accuracy_m",
        "geo_source",
        "position_lon",
        "position_lat",
        "ip_accuracy_m",
        "ip_lon",
        "ip_lat",
        "city",
        "region",
        "country",
    ):
        op.drop_column("scans", name)
    op.drop_constraint(op.f("ck_campaigns_precise_location"), "campaigns", type_="check")
    op.drop_column("campaigns", "precise_location")
