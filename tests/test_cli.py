"""The ``passerelle`` command line, run as a real subprocess against the test database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.cli import cli_env, passerelle


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
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: database unavailable (connection failed: connection to server at "
        '"127.0.0.1", port 1 failed: '
    )
    assert line.endswith("); check PASSERELLE_DATABASE_URL and run `passerelle db upgrade`")


async def test_a_short_secret_in_production_is_refused_without_echoing_it(
    tmp_path: Path, database_url: str
) -> None:
    secret = "short-secret-value-7f3a"
    for command in (("organizations", "create", "X"), ("serve", "--no-migrate"), ("db", "upgrade")):
        result = await passerelle(
            database_url,
            *command,
            cwd=tmp_path,
            PASSERELLE_ENVIRONMENT="production",
            PASSERELLE_SECRET_KEY=secret,
        )
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr == (
            "error: invalid settings: PASSERELLE_SECRET_KEY must be set to a random string of "
            "32+ characters outside development\n"
        )
        assert secret not in result.stderr and "short-secret" not in result.stderr


async def test_a_base_url_with_a_path_is_refused_at_start(
    tmp_path: Path, database_url: str
) -> None:
    result = await passerelle(
        database_url,
        "serve",
        "--no-migrate",
        cwd=tmp_path,
        PASSERELLE_BASE_URL="https://go.example.com/links",
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: invalid settings: PASSERELLE_BASE_URL must be an origin "
        "such as https://go.example.com: it must not have a path (got '/links')\n"
    )


@pytest.mark.parametrize("port", ["70000", "-1", "0", "65536"])
async def test_serve_on_a_port_out_of_range_is_a_usage_error(
    tmp_path: Path, database_url: str, port: str
) -> None:
    result = await passerelle(database_url, "serve", "--no-migrate", f"--port={port}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Usage:") and "--port" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PASSERELLE_SMTP_FROM",
            "noreply@example.com\r\nBcc: all@example.com",
            "PASSERELLE_SMTP_FROM must be an e-mail address on one line",
        ),
        ("PASSERELLE_SMTP_URL", "smtps://:topsecret@mail.example.com", "without a user"),
        ("PASSERELLE_SMTP_URL", "smtps://ann:top%ZZsecret@mail.example.com", "bad %-escape"),
    ],
)
async def test_bad_mail_settings_are_refused_at_start(
    tmp_path: Path, database_url: str, variable: str, value: str, message: str
) -> None:
    for command in (
        ("serve", "--no-migrate"),
        ("users", "create", "a@b.example", "--organization=1"),
    ):
        result = await passerelle(database_url, *command, cwd=tmp_path, **{variable: value})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: invalid settings: {variable}")
        assert message in result.stderr
        assert "Traceback" not in result.stderr and "topsecret" not in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_serve_on_a_port_in_use_is_one_line_and_exit_1(
    tmp_path: Path, database_url: str
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = await passerelle(
            database_url,
            "serve",
            "--no-migrate",
            "--port",
            str(port),
            cwd=tmp_path,
            PASSERELLE_DATA_DIR=str(tmp_path / "data"),
        )
    assert result.returncode == 1
    assert result.stdout == ""  # "serving on" is never printed
    assert result.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; stop the other "
        "server or pick another --port\n"
    )


@contextlib.contextmanager
def _serving(
    database_url: str, tmp_path: Path, port: int, **env: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``serve`` on ``port`` (``env``: more settings) until the block ends, then stop
    it with SIGTERM; yields the process and its first stdout line (printed once bound)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--no-migrate", "--port", str(port)],
        env=cli_env(database_url, PASSERELLE_DATA_DIR=str(tmp_path / "data"), **env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def _live_status(port: int) -> int:
    """``/health/live``'s status once the app answers (connections queue while it starts);
    0 when it never did."""
    for _ in range(300):
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.1)
    return 0


def _serve_until_first_line(database_url: str, tmp_path: Path, port: int) -> tuple[str, bool, int]:
    """Start ``serve``, read its first stdout line, then check at once that the port
    accepts connections and (polling) that the app answers; stop it with SIGTERM.
    Returns (first line, connected right after the line, /health/live status)."""
    with _serving(database_url, tmp_path, port) as (_, line):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            connected = True
        except OSError:
            connected = False
        return line, connected, _live_status(port)


async def test_serve_prints_where_it_listens_once_the_port_is_bound(
    tmp_path: Path, database_url: str
) -> None:
    port = _free_port()
    line, connected, status = await asyncio.to_thread(
        _serve_until_first_line, database_url, tmp_path, port
    )
    assert line == (
        f"Passerelle serving on http://127.0.0.1:{port} (1 worker(s)); short links as "
        "http://127.0.0.1:8000/s/CODE; API docs at /docs\n"
    )
    assert connected
    assert status == 200


def _raw_exchanges(
    database_url: str, tmp_path: Path, port: int, requests: list[bytes]
) -> list[bytes]:
    """Start ``serve`` (base URL https), send each raw ``request`` on its own connection
    and read the answer until the server closes it; stop the server with SIGTERM."""
    with _serving(database_url, tmp_path, port, PASSERELLE_BASE_URL="https://go.example.com"):
        _live_status(port)
        answers = []
        for request in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(request)
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            answers.append(b"".join(chunks))
        return answers


async def test_an_unparseable_request_is_a_problem_with_the_security_headers(
    tmp_path: Path, database_url: str
) -> None:
    # httptools refuses these before the app sees them; uvicorn's own answer was a
    # text/plain 400 without nosniff, CSP, Referrer-Policy or HSTS.
    requests = [
        b"GET /v1/campaigns HTTP/1.1\r\nHost: x\r\nX-Test: a\x01b\r\n\r\n",
        b"GET /s/" + b"A" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/campaigns HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    ]
    answers = await asyncio.to_thread(
        _raw_exchanges, database_url, tmp_path, _free_port(), requests
    )
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("ascii").split("\r\n")
        assert lines[0] == "HTTP/1.1 400 Bad Request", answer[:200]
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        assert headers["content-type"] == "application/problem+json"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["strict-transport-security"] == "max-age=31536000"
        assert int(headers["content-length"]) == len(body)
        problem = json.loads(body)
        assert problem["status"] == 400 and problem["code"] == "bad_request"
        assert problem["type"] == "urn:passerelle:problem:bad_request"


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


async def test_purge_prints_rows_per_table(
    client: httpx.AsyncClient, database_url: str, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        org = await conn.scalar(
            text(
                "INSERT INTO organizations (name, scan_retention_days, "
                "precise_location_retention_days) VALUES ('A', 10, 10) RETURNING id"
            )
        )
        campaign = await conn.scalar(
            text(
                "INSERT INTO campaigns (organization_id, name, slug, destination_url)"
                " VALUES (:org, 'c', 'c', 'https://shop.example.com/') RETURNING id"
            ),
            {"org": org},
        )
        for days in (11, 12, 9):
            await conn.execute(
                text(
                    "INSERT INTO scans (click_id, organization_id, campaign_id, tag_id,"
                    " scanned_at, channel, outcome, destination, is_bot)"
                    " VALUES (:click, :org, :campaign, 1, now() - make_interval(days => :days),"
                    " 'qr', 'redirect', 'https://shop.example.com/', false)"
                ),
                {"click": f"click-{days}", "org": org, "campaign": campaign, "days": days},
            )
    result = await passerelle(database_url, "purge")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "feed_batches: 0 row(s) purged",
        "scan_locations: 0 row(s) purged",
        "scans: 2 row(s) purged",
        "visitor_cookie_consents: 0 row(s) purged",
        "webhook_deliveries: 0 row(s) purged",
        # The two days of the purged scans: their rollups built before they went.
        "1 organization(s); 2 rollup day(s) sealed; 0 batch(es) skipped (locked, retried next run)",
    ]
    result = await passerelle(database_url, "purge", "--json")
    assert json.loads(result.stdout) == {
        "counts": {
            "feed_batches": 0,
            "scan_locations": 0,
            "scans": 0,
            "visitor_cookie_consents": 0,
            "webhook_deliveries": 0,
        },
        "organizations": 1,
        "sealed_days": 0,
        "skipped_batches": 0,
    }
    async with engine.connect() as conn:
        assert list(await conn.scalars(text("SELECT click_id FROM scans"))) == ["click-9"]


async def test_secrets_reencrypt_moves_values_to_the_current_key(
    client: httpx.AsyncClient, database_url: str, engine: AsyncEngine
) -> None:
    from campaigns.payloads.keys import seal_master_secret, unseal_master_secret

    old, new = "o" * 32, "n" * 32
    async with engine.begin() as conn:
        org = await conn.scalar(text("INSERT INTO organizations (name) VALUES ('A') RETURNING id"))
        await conn.execute(
            text("UPDATE organizations SET nfc_master_secret_encrypted = :v WHERE id = :org"),
            {"v": seal_master_secret(old, organization_id=org, master=b"m" * 32), "org": org},
        )
    keys = {"PASSERELLE_SECRET_KEY": new, "PASSERELLE_SECRET_KEY_PREVIOUS": old}
    result = await passerelle(database_url, "secrets", "reencrypt", "--json", **keys)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "organizations.nfc_master_secret_encrypted": {
            "checked": 1,
            "resealed": 1,
            "unreadable": 0,
        },
        "tags.nfc_keys_encrypted": {"checked": 0, "resealed": 0, "unreadable": 0},
        "webhooks.secret_encrypted": {"checked": 0, "resealed": 0, "unreadable": 0},
    }
    result = await passerelle(database_url, "secrets", "reencrypt", **keys)
    assert result.returncode == 0, result.stderr
    assert "organizations.nfc_master_secret_encrypted: 1 checked, 0 re-sealed, 0 unreadable" in (
        result.stdout
    )
    async with engine.connect() as conn:
        sealed = await conn.scalar(text("SELECT nfc_master_secret_encrypted FROM organizations"))
    assert unseal_master_secret(new, organization_id=org, sealed=sealed) == b"m" * 32
    # Without the previous key a value it sealed is unreadable: exit status 1.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE organizations SET nfc_master_secret_encrypted = :v"),
            {"v": seal_master_secret(old, organization_id=org, master=b"m" * 32)},
        )
    result = await passerelle(database_url, "secrets", "reencrypt", PASSERELLE_SECRET_KEY=new)
    assert result.returncode == 1
    assert "1 unreadable" in result.stdout


async def test_keys_create_with_scopes(client: httpx.AsyncClient, database_url: str) -> None:
    created = json.loads(
        (await passerelle(database_url, "organizations", "create", "Shop", "--json")).stdout
    )
    org = str(created["id"])
    shop = await passerelle(
        database_url, "keys", "create", org, "--scope", "conversions:write", "--json"
    )
    assert shop.returncode == 0, shop.stderr
    key = json.loads(shop.stdout)
    assert key["scopes"] == ["conversions:write"]
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    refused = await client.get("/v1/campaigns", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "campaigns:read"
    default = json.loads((await passerelle(database_url, "keys", "create", org, "--json")).stdout)
    assert default["scopes"] == ["admin"]
    listing = await passerelle(database_url, "keys", "list", org)
    scopes = [line.split("\t")[3] for line in listing.stdout.strip().splitlines()]
    assert scopes == ["admin", "conversions:write", "admin"]
    unknown = await passerelle(database_url, "keys", "create", org, "--scope", "root")
    assert unknown.returncode == 1
    assert "scopes must be one or more of" in unknown.stderr
    audit = await client.get("/v1/audit", headers={"Authorization": f"Bearer {created['api_key']}"})
    assert [(e["action"], e["actor_type"]) for e in audit.json()["items"]] == [
        ("keys_create", "cli"),
        ("keys_create", "cli"),
    ]
