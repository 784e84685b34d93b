"""A key revoked through one server process is refused by another within a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg

from campaigns.services.organizations import hash_secret
from tests.e2e.conftest import seed
from tests.e2e.harness import PrivateCluster, Server


async def test_key_revoked_in_one_process_is_refused_by_another_within_a_second(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    campaign_id, _code = seed(cluster)
    admin = "psk_e2e-admin-" + "x" * 40
    with psycopg.connect(cluster.conninfo) as conn:
        conn.execute(
            "INSERT INTO api_keys (organization_id, name, prefix, secret_hash, scopes) "
            "SELECT organization_id, 'admin', 'psk_e2e', %s, '{admin}' FROM campaigns "
            "WHERE id = %s",
            (hash_secret(admin), campaign_id),
        )
    first, second = Server(cluster.url, tmp_path / "a"), Server(cluster.url, tmp_path / "b")
    first.start()
    second.start()
    try:
        created = httpx.post(
            f"{first.base_url}/v1/api-keys",
            json={"name": "shop", "scopes": ["campaigns:read"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
        victim = {"Authorization": f"Bearer {created.json()['secret']}"}
        # Both processes have served the key (any per-process state is warm).
        for server in (first, second):
            r = httpx.get(f"{server.base_url}/v1/campaigns/{campaign_id}", headers=victim)
            assert r.status_code == 200, r.text
        revoked = httpx.delete(
            f"{first.base_url}/v1/api-keys/{created.json()['id']}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert revoked.status_code == 204, revoked.text
        revoked_at = time.monotonic()
        while True:
            r = httpx.get(f"{second.base_url}/v1/campaigns/{campaign_id}", headers=victim)
            if r.status_code == 401:
                assert r.json()["code"] == "invalid_api_key"
                break
            assert r.status_code == 200, r.text
            assert time.monotonic() - revoked_at < 1.0, "second process still accepts the key"
            await asyncio.sleep(0.02)
    finally:
        first.stop()
        second.stop()
