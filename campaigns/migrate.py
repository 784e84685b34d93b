"""Database bootstrap: create the database and PostGIS if missing, apply migrations."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

#: The migration scripts (``env.py``, ``versions/``), shipped inside the package so that a
#: plain ``pip install .`` (a wheel, as in the Docker image) can migrate; alembic.ini at
#: the repository root points there too, for the ``alembic`` command in a checkout.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` (SQLAlchemy URL), built without alembic.ini:
    scripts from :data:`MIGRATIONS_DIR`, file names ``YYYYMMDD_HHMM_slug`` in UTC."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option(
        "file_template", "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    config.set_main_option("timezone", "UTC")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def ensure_database(database_url: str) -> bool:
    """Create the database of ``database_url`` and the PostGIS extension when missing and
    the role may. Returns True when the database was created. Raises ``psycopg.Error``
    when the server is unreachable."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("database URL names no database")
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    created = False
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            created = True
            log.info("created database %s", name)
    target = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(target, autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return created


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` for an empty schema)."""
    command.downgrade(alembic_config(database_url), revision)


def drop_database(database_url: str) -> None:
    """Drop the database of ``database_url`` (used by the test harness), closing its
    connections first."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(url.database or "")
            )
        )
