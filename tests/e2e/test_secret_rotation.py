"""Rotating ``PASSERELLE_SECRET_KEY`` under load, with real processes: two ``passerelle
serve`` processes take QR scans and NTAG 424 DNA taps (``tests/fixtures/ntag424.py``)
without pause while webhook deliveries go to a real HTTP receiver; the processes are
restarted one by one with a new key (the old one in ``PASSERELLE_SECRET_KEY_PREVIOUS``),
``passerelle secrets reencrypt`` runs mid-flow, and a last process starts with the new
key alone. Throughout: every tap verifies (no false "tap again"), every delivery's
signature verifies with the webhook's secret (unchanged), a dashboard session, the
visitor id of a returning phone and a click token signed before the rotation still
hold; every scan is stored and delivered. The scans come through a proxy from a known
address, which no log line, dump or webhook body holds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from campaigns.crypto import SealedValueError
from campaigns.payloads import keys as sun_keys
from campaigns.services.organizations import hash_secret
from tests.e2e.harness import PG_BIN, ROOT, PrivateCluster, Server
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.user_agents import IPHONE_SAFARI
from tests.fixtures.webhook_receiver import Receiver, free_port

OLD = "rotation-old-secret-key-" + "o" * 24
NEW = "rotation-new-secret-key-" + "n" * 24
#: The phone's address, as the proxy (loopback, trusted by default) forwards it.
ADDRESS = "203.0.113.77"
PHONE = {"User-Agent": IPHONE_SAFARI, "X-Forwarded-For": ADDRESS}


def admin_key(pg: PrivateCluster, name: str, **settings: object) -> tuple[int, str]:
    """A new organization (with ``settings``) and an admin key; returns (id, secret)."""
    secret = f"psk_{name}-" + secrets.token_hex(20)
    columns = "".join(f", {column}" for column in settings)
    values = "".join(", %s" for _ in settings)
    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            f"INSERT INTO organizations (name{columns}) VALUES (%s{values}) RETURNING id",  # noqa: S608
            (name, *settings.values()),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO api_keys (organization_id, name, prefix, secret_hash, scopes)"
            " VALUES (%s, 'admin', %s, %s, '{admin}')",
            (row[0], f"psk_{name}", hash_secret(secret)),
        )
    return int(row[0]), secret


def dashboard_session(pg: PrivateCluster, organization_id: int) -> str:
    """A signed-in dashboard user's session; returns its cookie token."""
    token = secrets.token_urlsafe(32)
    with psycopg.connect(pg.conninfo) as conn:
        row = conn.execute(
            "INSERT INTO dashboard_users (organization_id, email, role)"
            " VALUES (%s, 'ann@shop.example', 'viewer') RETURNING id",
            (organization_id,),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO dashboard_sessions (user_id, token_hash, csrf_token) VALUES (%s, %s, %s)",
            (row[0], hashlib.sha256(token.encode()).digest(), secrets.token_hex(16)),
        )
    return token


def signature_verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check (``campaigns/webhooks/signing.py``): one ``v1`` entry of
    ``Passerelle-Signature`` is HMAC-SHA256(secret, ``t.`` + body)."""
    fields = [part.split("=", 1) for part in headers["passerelle-signature"].split(",")]
    timestamp = next(value for name, value in fields if name == "t")
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(name == "v1" and hmac.compare_digest(value, expected) for name, value in fields)


@dataclass
class Load:
    """Scans and taps sent without pause to whichever processes are ``live``."""

    live: list[Server]
    qr_code: str
    tags: list[tuple[str, Ntag424]]
    statuses: list[tuple[str, int]] = field(default_factory=list)
    retried: int = 0
    running: bool = True
    #: One item per answer, for :meth:`until`.
    answers: asyncio.Queue[None] = field(default_factory=asyncio.Queue)

    async def _get(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        """GET ``path`` on the next live process; a connection refused (a process
        stopping between the pick and the connect: nothing was sent) goes to another."""
        for attempt in range(50):
            server = self.live[(len(self.statuses) + attempt) % len(self.live)]
            try:
                return await client.get(server.base_url + path, headers=PHONE)
            except httpx.ConnectError:
                self.retried += 1
                await asyncio.sleep(0.05)
        raise AssertionError("no live process")

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=15) as client:
            round_ = 0
            while self.running:
                response = await self._get(client, f"/s/{self.qr_code}")
                self.statuses.append(("qr", response.status_code))
                self.answers.put_nowait(None)
                code, device = self.tags[round_ % len(self.tags)]
                e, c = device.tap()
                response = await self._get(client, f"/n/{code}?e={e}&c={c}")
                self.statuses.append(("tap", response.status_code))
                self.answers.put_nowait(None)
                round_ += 1
                await asyncio.sleep(0.01)

    async def until(self, count: int) -> None:
        """Wait until ``count`` more requests were answered."""
        while not self.answers.empty():
            self.answers.get_nowait()

        async def answered() -> None:
            for _ in range(count):
                await self.answers.get()

        await asyncio.wait_for(answered(), 60)


async def restart(load: Load, old: Server, new: Server) -> None:
    """Take ``old`` out of the load, stop it gracefully, start ``new`` and add it."""
    load.live.remove(old)
    await asyncio.sleep(0.2)  # an answer in flight from ``old`` arrives
    await asyncio.to_thread(old.stop)
    await asyncio.to_thread(new.start)
    load.live.append(new)


async def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_rotation_under_load_keeps_taps_deliveries_sessions_and_tokens(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    org, key = admin_key(cluster, "shop")
    _, asking_key = admin_key(cluster, "asking", visitor_cookie=True, visitor_cookie_consent="ask")
    session_token = dashboard_session(cluster, org)
    logs = tmp_path / "servers.log"

    def server(name: str, current: str, previous: str = "") -> Server:
        made = Server(cluster.url, tmp_path / name, log_path=logs)
        made.env.update(
            PASSERELLE_SECRET_KEY=current,
            PASSERELLE_SECRET_KEY_PREVIOUS=previous,
            PASSERELLE_WEBHOOK_POLL_INTERVAL_S="0.2",
            # A delivery cut by a restart is retried in a second, not 30.
            PASSERELLE_WEBHOOK_BACKOFF_BASE_S="1",
        )
        return made

    a, b = server("a", OLD), server("b", OLD)
    a.start()
    b.start()
    receiver = Receiver(free_port()).start()
    started: list[Server] = [a, b]
    load: Load | None = None
    flow: asyncio.Task[None] | None = None
    try:
        api = httpx.AsyncClient(base_url=a.base_url, headers={"Authorization": f"Bearer {key}"})
        async with api:
            campaign = await api.post(
                "/v1/campaigns",
                json={
                    "name": "Doors",
                    "destination_url": "https://shop.example.com/p",
                    "nfc_invalid_tap": "block",
                },
            )
            assert campaign.status_code == 201, campaign.text
            tags_url = f"/v1/campaigns/{campaign.json()['id']}/tags"
            supplied = Ntag424.random()
            given = await api.post(
                tags_url,
                json={
                    "kind": "nfc_sun",
                    "label": "supplied keys",
                    "nfc": {
                        "uid": supplied.uid.hex().upper(),
                        "sdm_meta_read_key": supplied.meta_read_key.hex().upper(),
                        "sdm_file_read_key": supplied.file_read_key.hex().upper(),
                    },
                },
            )
            derived = await api.post(
                tags_url,
                json={"kind": "nfc_sun", "label": "derived", "nfc": {"uid": "04A1B2C3D4E5F6"}},
            )
            qr = await api.post(tags_url, json={"kind": "qr", "label": "poster"})
            webhook = await api.post(
                "/v1/webhooks", json={"url": receiver.url, "events": ["scan.created"]}
            )
            for response in (given, derived, qr, webhook):
                assert response.status_code == 201, response.text
        webhook_secret = webhook.json()["secret"]
        tags = [
            (given.json()["code"], supplied),
            (derived.json()["code"], Ntag424.from_created(derived.json())),
        ]

        # A click token signed under the old key: the cookie consent page of an
        # organization asking for the visitor cookie, answered after the rotation.
        async with httpx.AsyncClient(
            base_url=b.base_url, headers={"Authorization": f"Bearer {asking_key}"}
        ) as asking:
            made = await asking.post(
                "/v1/campaigns",
                json={"name": "Ask", "destination_url": "https://shop.example.com/ask"},
            )
            assert made.status_code == 201, made.text
            ask_tag = await asking.post(
                f"/v1/campaigns/{made.json()['id']}/tags", json={"kind": "qr", "label": "ask"}
            )
            assert ask_tag.status_code == 201, ask_tag.text
            page = await asking.get(f"/s/{ask_tag.json()['code']}", headers=PHONE)
        assert page.status_code == 200, page.text
        form = {
            name: html.unescape(value)
            for name, value in re.findall(r'name="(next|t)" value="([^"]*)"', page.text)
        }
        action = html.unescape(re.findall(r'<form method="post" action="([^"]+)"', page.text)[0])

        def sealed_values() -> list[tuple[str, int, bytes | None, bytes]]:
            with psycopg.connect(cluster.conninfo) as conn:
                return [
                    (row[0], row[1], None if row[2] is None else bytes(row[2]), bytes(row[3]))
                    for row in conn.execute(
                        "SELECT 'master', id, NULL, nfc_master_secret_encrypted"
                        " FROM organizations WHERE nfc_master_secret_encrypted IS NOT NULL"
                        " UNION ALL SELECT 'tag', organization_id, nfc_uid, nfc_keys_encrypted"
                        " FROM tags WHERE nfc_keys_encrypted IS NOT NULL"
                    )
                ]

        def opens(key_: str) -> list[bool]:
            result = []
            for kind, owner, uid, value in sealed_values():
                try:
                    if uid is None:
                        sun_keys.unseal_master_secret(key_, organization_id=owner, sealed=value)
                    else:
                        sun_keys.unseal_sun_keys(key_, organization_id=owner, uid=uid, sealed=value)
                    result.append(True)
                except SealedValueError:
                    result.append(False)
                del kind
            return result

        assert opens(OLD) == [True, True, True]

        async def dashboard(on: Server) -> int:
            async with httpx.AsyncClient(cookies={"passerelle_session": session_token}) as c:
                return (await c.get(f"{on.base_url}/app/campaigns")).status_code

        assert await dashboard(a) == 200

        # Under load from here on.
        load = Load(live=[a, b], qr_code=qr.json()["code"], tags=tags)
        flow = asyncio.create_task(load.run())
        await load.until(20)
        # Rolling restart: the new key, the old one previous.
        a2, b2 = server("a2", NEW, OLD), server("b2", NEW, OLD)
        started += [a2, b2]
        await restart(load, a, a2)
        await load.until(20)
        await restart(load, b, b2)
        await load.until(20)
        assert await dashboard(b2) == 200
        # The consent answer with the token the old key signed.
        async with httpx.AsyncClient(base_url=a2.base_url) as c:
            answered = await c.post(action, data={**form, "answer": "yes"})
        assert answered.status_code == 303, answered.text
        assert answered.headers["location"] == form["next"]
        assert "passerelle_vid=" in answered.headers.get("set-cookie", "")

        # Re-encryption mid-flow, as an operator runs it (a real process).
        env = {
            **os.environ,
            "PASSERELLE_DATABASE_URL": cluster.url,
            "PASSERELLE_SECRET_KEY": NEW,
            "PASSERELLE_SECRET_KEY_PREVIOUS": OLD,
        }
        reencrypted = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "api.cli", "secrets", "reencrypt", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reencrypted.returncode == 0, reencrypted.stderr
        report = json.loads(reencrypted.stdout)
        assert report == {
            "organizations.nfc_master_secret_encrypted": {
                "checked": 1,
                "resealed": 1,
                "unreadable": 0,
            },
            "tags.nfc_keys_encrypted": {"checked": 2, "resealed": 2, "unreadable": 0},
            "webhooks.secret_encrypted": {"checked": 1, "resealed": 1, "unreadable": 0},
        }
        assert opens(NEW) == [True, True, True]
        assert opens(OLD) == [False, False, False]
        await load.until(40)

        # The previous key dropped: a process with the new key alone.
        a3 = server("a3", NEW)
        started.append(a3)
        await restart(load, a2, a3)
        await load.until(40)
        assert await dashboard(a3) == 200
        load.running = False
        await flow

        # Every scan's delivery sent before the processes stop.
        def all_delivered() -> bool:
            with psycopg.connect(cluster.conninfo) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status <> 'succeeded'),"
                    " (SELECT count(*) FROM scans WHERE organization_id = %s)"
                    " - count(*) FROM webhook_deliveries",
                    (org,),
                ).fetchone()
            return row == (0, 0)

        if not await wait_for(all_delivered, 60):
            with psycopg.connect(cluster.conninfo) as conn:
                state = conn.execute(
                    "SELECT status, attempts, count(*), min(attempt_log::text)"
                    " FROM webhook_deliveries GROUP BY 1, 2"
                ).fetchall()
                stored = conn.execute("SELECT count(*) FROM scans").fetchone()
            raise AssertionError(f"undelivered: {state}, scans {stored}, {load.statuses}")
    finally:
        if load is not None:
            load.running = False
        if flow is not None:
            with contextlib.suppress(Exception):
                await flow
        for process in started:
            process.stop()

    try:
        # No false "tap again": every tap and scan was redirected, and stored as valid.
        assert load is not None
        assert {status for _, status in load.statuses} == {302}, load.statuses
        taps = sum(1 for kind, _ in load.statuses if kind == "tap")
        scanned = sum(1 for kind, _ in load.statuses if kind == "qr")
        with psycopg.connect(cluster.conninfo) as conn:
            verdicts = conn.execute(
                "SELECT nfc_verification, count(*) FROM scans WHERE organization_id = %s"
                " GROUP BY 1 ORDER BY 1 NULLS FIRST",
                (org,),
            ).fetchall()
            visitors = conn.execute(
                "SELECT count(DISTINCT visitor_id) FROM scans WHERE organization_id = %s", (org,)
            ).fetchone()
            deliveries = conn.execute(
                "SELECT status, count(*) FROM webhook_deliveries GROUP BY 1"
            ).fetchall()
        assert verdicts == [(None, scanned), ("valid", taps)]
        # One returning phone, one visitor id, before and after the rotation.
        assert visitors == (1,)
        # Every scan delivered once, signed with the webhook's own secret.
        assert deliveries == [("succeeded", scanned + taps)]
        event_ids = {r.headers["passerelle-event-id"] for r in receiver.received}
        assert len(event_ids) == scanned + taps
        assert all(signature_verifies(webhook_secret, r.headers, r.body) for r in receiver.received)
        # The known address: nowhere in the processes' logs, the dump, webhook bodies.
        dumped = await asyncio.to_thread(
            subprocess.run,
            [str(PG_BIN / "pg_dump"), "--data-only", cluster.conninfo],
            check=True,
            capture_output=True,
            text=True,
        )
        dump = dumped.stdout
        assert ADDRESS not in dump and "203.0.113.0" in dump  # truncated, as designed
        assert ADDRESS not in logs.read_text(errors="replace")
        assert not any(ADDRESS.encode() in r.body for r in receiver.received)
    finally:
        receiver.stop()
