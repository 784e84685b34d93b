"""The ``passerelle`` command line, run as a real subprocess against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[1]


async def passerelle(
    database_url: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``passerelle ARGS`` (the installed script, else ``python -m api.cli``) in a
    thread, so the app's event loop (scan writer, cache listener) keeps running."""
    script = shutil.which("passerelle")
    command = [script] if script else [sys.executable, "-m", "api.cli"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PASSERELLE_")}
    env["PASSERELLE_DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run,
        [*command, *args],
        env=env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_organizations_create_json_prints_a_working_key(
    client: httpx.AsyncClient, database_url: str, engine: AsyncEngine
) -> None:
    result = await passerelle(database_url, "organizations", "create", "Café Crème SARL", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # stdout is the JSON document only
    created = json.loads(lines[0])
    assert set(created) == {"id", "name", "api_key"}
    assert created["name"] == "Café Crème SARL"
    assert isinstance(created["id"], int)
    key = created["api_key"]
    assert key.startswith("psk_") and len(key) >= 4 + 22  # >= 128 random bits

    headers = {"Authorization": f"Bearer {key}"}
    response = await client.get("/v1/campaigns", headers=headers)
    assert response.status_code == 200, response.text
    response = await client.post(
        "/v1/campaigns",
        json={"name": "From the CLI", "destination_url": "https://shop.example.com/"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    async with engine.connect() as conn:
        owner = (
            await conn.execute(
                text("SELECT organization_id FROM campaigns WHERE id = :id"),
                {"id": response.json()["id"]},
            )
        ).scalar_one()
        stored = (
            await conn.execute(
                text("SELECT name FROM organizations WHERE id = :id"), {"id": created["id"]}
            )
        ).scalar_one()
        keys = (await conn.execute(text("SELECT api_keys::text FROM api_keys"))).scalars().all()
    assert owner == created["id"]
    assert stored == "Café Crème SARL"
    assert all(key not in row and key[4:] not in row for row in keys)  # only its hash


async def test_each_create_issues_a_different_key(
    client: httpx.AsyncClient, database_url: str
) -> None:
    first = json.loads(
        (await passerelle(database_url, "organizations", "create", "A", "--json")).stdout
    )
    second = json.loads(
        (await passerelle(database_url, "organizations", "create", "A", "--json")).stdout
    )
    assert first["id"] != second["id"]
    assert first["api_key"] != second["api_key"]


async def test_organizations_create_plain_shows_the_key_once(
    client: httpx.AsyncClient, database_url: str
) -> None:
    result = await passerelle(database_url, "organizations", "create", "Plain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("psk_") == 1
    key = result.stdout.split("psk_", 1)[1].split()[0]
    response = await client.get("/v1/campaigns", headers={"Authorization": f"Bearer psk_{key}"})
    assert response.status_code == 200


async def test_db_upgrade_is_idempotent(database_url: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    for _ in range(2):
        result = await passerelle(database_url, "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert "head" in result.stdout
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        tables = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name IN "
                    "('organizations', 'api_keys', 'campaigns', 'tags', 'scans')"
                )
            )
        ).scalar_one()
    assert after == before and len(after) == 1
    assert tables == 5


async def test_unreachable_database_fails_without_printing_a_key(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    result = await passerelle(url, "organizations", "create", "X", "--json", cwd=tmp_path)
    assert result.returncode != 0
    assert "psk_" not in result.stdout


async def test_keys_create_list_revoke(client: httpx.AsyncClient, database_url: str) -> None:
    created = json.loads(
        (await passerelle(database_url, "organizations", "create", "Rotating", "--json")).stdout
    )
    second = await passerelle(database_url, "keys", "create", str(created["id"]), "--json")
    assert second.returncode == 0, second.stderr
    new_key = json.loads(second.stdout)
    old_headers = {"Authorization": f"Bearer {created['api_key']}"}
    new_headers = {"Authorization": f"Bearer {new_key['api_key']}"}
    assert (await client.get("/v1/campaigns", headers=new_headers)).status_code == 200

    listing = await passerelle(database_url, "keys", "list", str(created["id"]))
    rows = [line.split("\t") for line in listing.stdout.strip().splitlines()]
    assert [row[0] for row in rows] == [str(new_key["id"] - 1), str(new_key["id"])]
    assert all(created["api_key"] not in line for line in listing.stdout.splitlines())

    old_id = rows[0][0]
    revoked = await passerelle(database_url, "keys", "revoke", str(created["id"]), old_id)
    assert revoked.returncode == 0, revoked.stderr
    response = await client.get("/v1/campaigns", headers=old_headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
    assert (await client.get("/v1/campaigns", headers=new_headers)).status_code == 200

    unknown = await passerelle(database_url, "keys", "create", "999999")
    assert unknown.returncode == 1
    assert "not found" in unknown.stderr
