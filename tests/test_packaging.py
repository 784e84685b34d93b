"""A plain (non-editable) install, as in the Docker image, carries the migrations and can
migrate a database: built as a wheel, installed into a directory of its own, run from
elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from campaigns import migrate

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "api", "campaigns", "geo")


def test_the_wheel_carries_and_runs_the_migrations(tmp_path: Path, database_url: str) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the checkout
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("passerelle-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {
        f"campaigns/migrations/versions/{path.name}"
        for path in (ROOT / "campaigns/migrations/versions").glob("*.py")
    }
    assert scripts
    assert scripts | {"campaigns/migrations/env.py", "campaigns/migrations/script.py.mako"} <= names
    # The dashboard's templates and static files, vendored libraries with their licences.
    dashboard = ROOT / "api" / "dashboard"
    shipped = {
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (dashboard / folder).rglob("*")
        if path.is_file()
    }
    assert "api/dashboard/static/vendor/leaflet/LICENSE" in shipped
    assert "api/dashboard/static/vendor/uplot/LICENSE" in shipped
    assert "api/dashboard/templates/campaign.html" in shipped
    assert shipped <= names

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    url = make_url(database_url).set(database=f"{make_url(database_url).database}_wheel")
    target = url.render_as_string(hide_password=False)
    program = (
        "import sys, campaigns; from campaigns import migrate;"
        f"assert campaigns.__file__.startswith({str(site)!r}), campaigns.__file__;"
        "migrate.ensure_database(sys.argv[1]); migrate.upgrade(sys.argv[1])"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", program, target],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
            cwd=tmp_path,  # no checkout, no alembic.ini around
            check=True,
            capture_output=True,
            timeout=300,
        )
        with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as conn:
            (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone() or ()
        heads = subprocess.run(
            [
                sys.executable,
                "-c",
                "from alembic.script import ScriptDirectory;"
                "from campaigns import migrate;"
                "print(ScriptDirectory.from_config(migrate.alembic_config('')).get_current_head())",
            ],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert version == heads.stdout.strip()
    finally:
        migrate.drop_database(target)
