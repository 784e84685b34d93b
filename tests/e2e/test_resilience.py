"""The scan path under failure, with real processes: a private PostgreSQL cluster that is
stopped and restarted under load, server processes killed with SIGKILL, and a change
reaching a second server process."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from campaigns.services.organizations import hash_secret
from tests.e2e.conftest import seed
from tests.e2e.harness import PrivateCluster, Server
from tests.fixtures.polling import wait_for
from tests.fixtures.user_agents import IPHONE_SAFARI


@dataclass
class Load:
    """Scans sent by a few concurrent phones until stopped; every response is awaited."""

    base_url: str
    code: str
    statuses: list[int] = field(default_factory=list)
    click_ids: list[str] = field(default_factory=list)
    errors: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, concurrency: int = 8) -> None:
        self._tasks = [asyncio.create_task(self._phone()) for _ in range(concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _phone(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = await client.get(f"/s/{self.code}", headers={"user-agent": IPHONE_SAFARI})
                except httpx.HTTPError:
                    self.errors += 1  # the server was killed under us
                    await asyncio.sleep(0.05)
                    continue
                self.statuses.append(r.status_code)
                if r.status_code == 302:
                    self.click_ids.append(
                        parse_qs(urlsplit(r.headers["location"]).query)["pcid"][0]
                    )


def stored_click_ids(pg: PrivateCluster) -> set[str]:
    with psycopg.connect(pg.conninfo, connect_timeout=5) as conn:
        return {row[0] for row in conn.execute("SELECT click_id FROM scans")}


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_postgres_restart_under_load_loses_no_scan(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    _, code = seed(cluster)
    server = Server(cluster.url, tmp_path)
    server.start()
    try:
        load = Load(server.base_url, code)
        load.start()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.stop, "fast")
        during_outage = len(load.statuses)
        await asyncio.sleep(2.0)
        assert len(load.statuses) > during_outage + 50, "redirects stalled while the DB was down"
        assert httpx.get(server.base_url + "/health/ready").status_code == 503
        assert httpx.get(server.base_url + "/health/live").status_code == 200
        await asyncio.to_thread(cluster.start)
        await asyncio.sleep(1.5)
        await load.stop()

        assert load.errors == 0
        assert set(load.statuses) == {302}
        redirected = set(load.click_ids)
        assert len(redirected) == len(load.click_ids)  # click ids are unique
        assert await wait_for(lambda: stored_click_ids(cluster) == redirected)
        assert metric(server, "passerelle_writer_spooled") > 0  # the outage path was taken
        assert await wait_for(
            lambda: httpx.get(server.base_url + "/health/ready").status_code == 200
        )
    finally:
        server.stop()


async def test_sigkill_while_spooling_loses_no_redirected_scan(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    _, code = seed(cluster)
    server = Server(cluster.url, tmp_path)
    server.start()
    load = Load(server.base_url, code)
    try:
        load.start()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.stop, "immediate")  # a crash, not a clean stop
        await asyncio.sleep(1.0)  # scans now go to the spool
        server.kill()
        await asyncio.sleep(0.3)
        await load.stop()
        assert list(tmp_path.glob("spool/scans-*.jsonl")), "nothing was spooled"

        await asyncio.to_thread(cluster.start)
        restarted = Server(cluster.url, tmp_path, port=server.port)
        restarted.start()  # replays the dead process's spool at start
        try:
            redirected = set(load.click_ids)
            assert len(redirected) > 100
            assert await wait_for(lambda: redirected <= stored_click_ids(cluster))
            # Scans answered with a 302 are all there; at most the in-flight ones more.
            assert len(stored_click_ids(cluster)) - len(redirected) <= 8
            # The last chunk commits just before its file is removed.
            assert await wait_for(lambda: not list(tmp_path.glob("spool/scans-*.jsonl")))
        finally:
            restarted.stop()
    finally:
        server.stop()


async def test_destination_change_reaches_another_process_within_a_second(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    campaign_id, code = seed(cluster)
    secret = "psk_e2e-" + "x" * 40
    with psycopg.connect(cluster.conninfo) as conn:
        conn.execute(
            "INSERT INTO api_keys (organization_id, name, prefix, secret_hash) "
            "SELECT organization_id, 'e2e', 'psk_e2e', %s FROM campaigns WHERE id = %s",
            (hash_secret(secret), campaign_id),
        )
    first, second = Server(cluster.url, tmp_path / "a"), Server(cluster.url, tmp_path / "b")
    first.start()
    second.start()
    try:
        r = httpx.get(f"{second.base_url}/s/{code}")
        assert r.headers["location"].startswith("https://shop.example.com/p?")
        r = httpx.patch(
            f"{first.base_url}/v1/campaigns/{campaign_id}",
            json={"destination_url": "https://shop.example.com/new"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 200, r.text
        changed_at = time.monotonic()
        while True:
            r = httpx.get(f"{second.base_url}/s/{code}")
            if r.headers["location"].startswith("https://shop.example.com/new?"):
                break
            assert time.monotonic() - changed_at < 1.0, "second process still serves the old URL"
            await asyncio.sleep(0.02)
    finally:
        first.stop()
        second.stop()


async def test_starts_from_snapshot_while_the_database_is_down(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    _, code = seed(cluster)
    first = Server(cluster.url, tmp_path)
    first.start()  # loads from the database and writes the snapshot
    first.stop()
    await asyncio.to_thread(cluster.stop, "fast")

    server = Server(cluster.url, tmp_path)
    server.start(wait_ready=False)
    try:
        assert httpx.get(server.base_url + "/health/live").status_code == 200
        ready = httpx.get(server.base_url + "/health/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        serving = httpx.get(server.base_url + "/health/scans")
        assert serving.status_code == 200
        assert serving.json() == {
            "serving": True,
            "tags_cached": 1,
            "database": False,
            "storable": True,
        }
        r = httpx.get(f"{server.base_url}/s/{code}", headers={"user-agent": IPHONE_SAFARI})
        assert r.status_code == 302
        click_id = parse_qs(urlsplit(r.headers["location"]).query)["pcid"][0]

        await asyncio.to_thread(cluster.start)
        assert await wait_for(
            lambda: httpx.get(server.base_url + "/health/ready").status_code == 200
        )
        assert await wait_for(lambda: click_id in stored_click_ids(cluster))
    finally:
        server.stop()


async def test_graceful_shutdown_drains_the_writer(cluster: PrivateCluster, tmp_path: Path) -> None:
    _, code = seed(cluster)
    server = Server(cluster.url, tmp_path)
    server.start()
    load = Load(server.base_url, code)
    load.start(concurrency=16)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(server.stop)  # SIGTERM while phones keep scanning
    await load.stop()
    redirected = set(load.click_ids)
    assert len(redirected) > 50
    stored = stored_click_ids(cluster)
    assert redirected <= stored
    assert len(stored) - len(redirected) <= 16
    assert not list(tmp_path.glob("spool/scans-*.jsonl"))


async def test_sigterm_while_the_scans_table_is_locked_exits_and_loses_no_scan(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    """A migration holds ``scans`` locked; meanwhile the server is asked to stop. It
    exits by itself (no SIGKILL), every scan in flight was answered 302 (its row
    spooled), none got a 500."""
    _, code = seed(cluster)
    server = Server(cluster.url, tmp_path)
    server.start()
    load = Load(server.base_url, code)
    try:
        load.start()
        await asyncio.sleep(0.5)
        async with await psycopg.AsyncConnection.connect(cluster.conninfo) as locker:
            await locker.execute("LOCK TABLE scans IN ACCESS EXCLUSIVE MODE")
            await asyncio.sleep(1.5)  # scans now go to the spool; replay keeps failing
            await asyncio.to_thread(server.stop)  # SIGTERM; the harness SIGKILLs at 20 s
            # uvicorn re-raises the signal once shut down; -SIGKILL would be the harness.
            assert server.proc is not None and server.proc.returncode == -signal.SIGTERM
            await load.stop()
            assert list(tmp_path.glob("spool/scans-*.jsonl")), "nothing was spooled"
        assert set(load.statuses) == {302}
        redirected = set(load.click_ids)
        assert len(redirected) > 50

        restarted = Server(cluster.url, tmp_path, port=server.port)
        restarted.start()  # replays the spool left by the stopped process
        try:
            assert await wait_for(lambda: redirected <= stored_click_ids(cluster))
        finally:
            restarted.stop()
    finally:
        server.stop()


async def test_slow_clients_are_cut_off(cluster: PrivateCluster, tmp_path: Path) -> None:
    """A connection that sends nothing, or its request head a byte at a time, is closed
    after PASSERELLE_REQUEST_READ_TIMEOUT_S (2 s here); a normal scan is unaffected."""
    _, code = seed(cluster)
    server = Server(cluster.url, tmp_path)
    server.start()
    try:

        def seconds_until_closed(first: bytes) -> float:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                started = time.monotonic()
                if first:
                    sock.sendall(first)
                assert sock.recv(100) == b""  # closed without an answer
                return time.monotonic() - started

        assert 1.5 < await asyncio.to_thread(seconds_until_closed, b"") < 5
        partial = f"GET /s/{code} HTTP/1.1\r\nHost: go.example.com\r\n".encode()
        assert 1.5 < await asyncio.to_thread(seconds_until_closed, partial) < 5
        assert httpx.get(f"{server.base_url}/s/{code}").status_code == 302
    finally:
        server.stop()
