"""The live feed across real server processes: a stream opened on one ``passerelle serve``
receives the scans answered by another (LISTEN/NOTIFY between them), resumes with
``Last-Event-ID`` after scans made while it was away, and a SIGTERM ends the stream (the
hub closes it) and the process exits."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import httpx
import psycopg

from tests.e2e.conftest import seed
from tests.e2e.harness import PrivateCluster, Server
from tests.fixtures.user_agents import IPHONE_SAFARI


def api_key(pg: PrivateCluster) -> str:
    """A key of the seeded organization (stored as its SHA-256, as the service does)."""
    secret = "psk_" + secrets.token_urlsafe(32)
    with psycopg.connect(pg.conninfo) as conn:
        conn.execute(
            "INSERT INTO api_keys (organization_id, name, prefix, secret_hash) "
            "SELECT id, 'e2e', %s, %s FROM organizations",
            (secret[:10], hashlib.sha256(secret.encode()).digest()),
        )
    return secret


class StreamReader:
    """Reads an event stream in a thread; messages (``{field: value}``, comments under
    ``":"``) arrive on :attr:`messages`, None at the end."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.messages: Queue[dict[str, str] | None] = Queue()
        self.status = 0
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(15), "stream did not open"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self._opened.set()
                message: dict[str, str] = {}
                for line in response.iter_lines():
                    if not line:
                        self.messages.put(message)
                        message = {}
                        continue
                    name, _, value = line.partition(":")
                    message[name or ":"] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.messages.put(None)

    def events(self, count: int, deadline_s: float = 15) -> Iterator[dict[str, str]]:
        """The next ``count`` messages with an ``event``, within ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        found = 0
        while found < count:
            try:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"only {found} of {count} events arrived") from None
            assert message is not None, "stream ended"
            if "event" in message:
                found += 1
                yield message

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def scan(server: Server, code: str) -> str:
    response = httpx.get(
        f"{server.base_url}/s/{code}", headers={"user-agent": IPHONE_SAFARI}, timeout=15
    )
    assert response.status_code == 302
    return str(httpx.URL(response.headers["location"]).params["pcid"])


def test_a_stream_on_one_process_gets_the_scans_of_another_and_resumes(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    campaign_id, code = seed(cluster)
    key = api_key(cluster)
    servers = [Server(cluster.url, tmp_path / name) for name in ("a", "b")]
    for server in servers:
        server.start()
    feed, scanner = servers
    url = f"{feed.base_url}/v1/campaigns/{campaign_id}/events"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        reader = StreamReader(url, auth)
        assert reader.status == 200
        opening = reader.messages.get(timeout=15)
        assert opening is not None and "id" in opening  # subscribed from here
        click_ids = [scan(scanner, code) for _ in range(3)]
        received = list(reader.events(3))
        assert [json.loads(m["data"])["click_id"] for m in received] == click_ids
        assert all(m["event"] == "scan" for m in received)
        last_id = received[-1]["id"]
        reader.close()

        missed = [scan(scanner, code) for _ in range(2)]
        reader = StreamReader(url, {**auth, "Last-Event-ID": last_id})
        resumed = list(reader.events(2))
        assert [json.loads(m["data"])["click_id"] for m in resumed] == missed
        live = scan(scanner, code)
        (message,) = reader.events(1)
        assert json.loads(message["data"])["click_id"] == live

        # SIGTERM: the hub closes the stream (uvicorn waits for open responses before the
        # lifespan's shutdown), and the process exits.
        assert feed.proc is not None
        feed.proc.terminate()
        ended = reader.messages.get(timeout=15)
        while ended is not None:
            ended = reader.messages.get(timeout=15)
        feed.proc.wait(15)
        assert feed.proc.returncode is not None
        reader.close()
    finally:
        for server in servers:
            server.stop()
