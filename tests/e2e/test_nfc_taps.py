"""NFC taps across real server processes: two ``passerelle serve`` processes given the same
SUN message at the same moment accept it exactly once, and taps spooled while
PostgreSQL is down are redirected, then judged at replay in counter order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg

from campaigns.payloads.keys import SunKeys, seal_sun_keys
from tests.e2e.harness import PrivateCluster, Server
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.polling import wait_for
from tests.fixtures.user_agents import IPHONE_SAFARI

SECRET_KEY = "e2e-secret-key-for-nfc-taps-0123456789abcdef"
CODE = "NFC7CD9X"


def seed_sun_tag(pg: PrivateCluster, device: Ntag424) -> int:
    """An organization, a campaign with ``nfc_invalid_tap: block`` and an ``nfc_sun`` tag
    personalised as ``device``, its keys sealed under :data:`SECRET_KEY`; returns its id."""
    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            "INSERT INTO organizations (name) VALUES ('e2e') RETURNING id"
        ).fetchone()
        assert row is not None
        org = row[0]
        row = conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url, nfc_invalid_tap)"
            " VALUES (%s, 'e2e', 'e2e', 'https://shop.example.com/p', 'block') RETURNING id",
            (org,),
        ).fetchone()
        assert row is not None
        keys = SunKeys(meta_read=device.meta_read_key, file_read=device.file_read_key)
        sealed = seal_sun_keys(SECRET_KEY, organization_id=org, uid=device.uid, keys=keys)
        row = conn.execute(
            "INSERT INTO tags (organization_id, campaign_id, code, kind, label, nfc_uid, "
            "nfc_keys_encrypted) VALUES (%s, %s, %s, 'nfc_sun', 'door', %s, %s) RETURNING id",
            (org, row[0], CODE, device.uid, sealed),
        ).fetchone()
        assert row is not None
        return int(row[0])


def verdicts(pg: PrivateCluster) -> list[tuple[int, str]]:
    with psycopg.connect(pg.conninfo, connect_timeout=5) as conn:
        return [
            (row[0], row[1])
            for row in conn.execute(
                "SELECT nfc_counter, nfc_verification FROM scans ORDER BY nfc_counter, id"
            )
        ]


async def test_two_processes_accept_a_counter_once_and_replay_judges_in_counter_order(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    device = Ntag424.random()
    tag_id = seed_sun_tag(cluster, device)
    servers = [Server(cluster.url, tmp_path / name) for name in ("a", "b")]
    for server in servers:
        server.env["PASSERELLE_SECRET_KEY"] = SECRET_KEY
        server.start()
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=15) for s in servers]
    phone = {"user-agent": IPHONE_SAFARI}
    try:
        # The same URL through both processes at the same moment: one 302, one 403.
        for counter in range(1, 6):
            e, c = device.message(counter)
            url = f"/n/{CODE}?e={e}&c={c}"
            responses = await asyncio.gather(*(cl.get(url, headers=phone) for cl in clients))
            assert sorted(r.status_code for r in responses) == [302, 403]
        expected = [(n, v) for n in range(1, 6) for v in ("replayed", "valid")]
        assert sorted(verdicts(cluster)) == expected
        assert (
            cluster.scalar("SELECT last_counter FROM nfc_counters WHERE tag_id = %s", tag_id) == 5
        )

        # Database down: good taps are redirected (and spooled) whatever the policy,
        # even a repeated one, since no process can tell a replay now.
        cluster.stop()
        down = [device.message(20), device.message(20), device.message(15)]
        for e, c in down:
            response = await clients[0].get(f"/n/{CODE}", params={"e": e, "c": c}, headers=phone)
            assert response.status_code == 302
            assert "pcid=" in response.headers["location"]
        cluster.start()
        assert await wait_for(lambda: cluster.scalar("SELECT count(*) FROM scans") == 13, 60)
        # Judged in counter order at replay: 15 before 20, the second 20 a replay.
        assert sorted(verdicts(cluster))[10:] == [(15, "valid"), (20, "replayed"), (20, "valid")]
        assert (
            cluster.scalar("SELECT last_counter FROM nfc_counters WHERE tag_id = %s", tag_id) == 20
        )
    finally:
        for client in clients:
            await client.aclose()
        for server in servers:
            server.stop()
