"""CPU per scan of the hot path ``GET /s/{code}`` (and ``/n/`` taps), measured in-process.

Wall throughput on a shared machine says more about the neighbours than about the code;
CPU time per scan does not. This script builds the served application in-process
(:func:`api.app.create_app` + :func:`api.app.served_app`, a throwaway migrated database,
tags made by ``tests/fixtures/factories.py``, the app's own lifespan), drives synthetic
ASGI requests (a random tag, a random client address and a user agent per request) and
prints, per round:

- ``request``: CPU µs per scan of the request side alone: everything the handler does
  but the writer (requests one at a time, ``ScanWriter.submit`` answering at once);
- ``with commit``: CPU µs per scan of the whole process with ``--concurrency`` requests
  in flight, group commits included (COPY encoding, psycopg, the NFC counter update);
- ``PostgreSQL backends``: CPU µs per scan of the database's backends during that pass
  (from ``/proc``; the server must run on this machine).

Rounds: ``cold`` (every agent new: device parsing and bot detection on each scan),
``warm`` (``--agents`` distinct agents, seen before: memoised) and ``nfc`` (taps of
``--nfc-tags`` ``nfc_sun`` tags, a fresh SUN message each: MAC check in memory, replay
check in the group commit).

    python benchmarks/scan_path_cpu.py [--scans 3000] [--tags 200] [--agents 2000]
        [--nfc-tags 50] [--concurrency 64] [--profile] [--rounds cold,warm,nfc] [--direct]
        [--geoip-db PATH|synthetic] [--locations 1000] [--rules 20] [--webhook]

Geography and rules as ``scan_redirect.py --realistic`` seeds them: ``--geoip-db``
(``synthetic``: one city per /8, every address found), ``--locations N`` stores with
every tag placed at one, ``--rules N`` redirect rules walked by every scan.
Clients come through a trusted loopback proxy (``X-Forwarded-For``), as in
``scan_redirect.py --realistic``; ``--direct`` makes them socket peers.

``--webhook`` gives the scanned organization a ``scan.created`` webhook, so every scan
also writes its outbox row in the group commit (the process sends none: its webhook
dispatcher is off, so the figures are the scan path's alone).

``--profile`` prints a cProfile top-20 (by internal time) of each round's request-side
and with-commit passes (extra passes: the figures above are taken without profiler).
Needs a PostgreSQL with PostGIS (``PASSERELLE_TEST_DATABASE_URL`` or the local one) on
this machine; it creates a throwaway database and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app, served_app  # noqa: E402
from benchmarks.scan_redirect import seed_locations, seed_rules, synthetic_geoip  # noqa: E402
from benchmarks.user_agents import in_app_templates, realistic_agents  # noqa: E402
from campaigns import migrate  # noqa: E402
from campaigns.db import libpq_url, make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from campaigns.scanning.record import ScanRecord  # noqa: E402
from campaigns.schemas import WebhookCreate  # noqa: E402
from campaigns.services.webhooks import create_webhook  # noqa: E402
from campaigns.settings import Settings  # noqa: E402
from tests.fixtures.factories import make_campaign, make_org, make_tag  # noqa: E402
from tests.fixtures.ntag424 import Ntag424  # noqa: E402

SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

Scope = dict[str, Any]
#: Accept-Language values sent, at random (as scan_redirect.py's realistic mode).
LANGUAGES = (
    b"fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7",
    b"fr-FR,fr;q=0.9",
    b"en-GB,en;q=0.9",
    b"en-US,en;q=0.9",
    b"de-DE,de;q=0.9,en;q=0.8",
    b"es-ES,es;q=0.9",
    b"it-IT,it;q=0.9",
)


async def seed(
    settings: Settings, n_tags: int, n_nfc: int, webhook: bool = False
) -> tuple[list[str], list[Any]]:
    """``n_tags`` QR tags and ``n_nfc`` ``nfc_sun`` tags of one campaign, through the
    services, and a ``scan.created`` webhook when ``webhook``. Returns the QR codes and
    ``(code, Ntag424)`` pairs."""
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            org = await make_org(session, name="bench")
            campaign = await make_campaign(session, organization_id=org.id)
            codes = []
            for i in range(n_tags):
                tag = await make_tag(
                    session, organization_id=org.id, campaign_id=campaign.id, label=f"poster-{i}"
                )
                codes.append(tag.code)
            devices = []
            for i in range(n_nfc):
                device = Ntag424.random()
                tag = await make_tag(
                    session,
                    organization_id=org.id,
                    campaign_id=campaign.id,
                    secret_key=settings.secret_key,
                    kind="nfc_sun",
                    label=f"counter-{i}",
                    nfc={
                        "uid": device.uid.hex(),
                        "sdm_meta_read_key": device.meta_read_key.hex(),
                        "sdm_file_read_key": device.file_read_key.hex(),
                    },
                )
                devices.append((tag.code, device))
            if webhook:
                await create_webhook(
                    session,
                    organization_id=org.id,
                    data=WebhookCreate(url="http://127.0.0.1:9/hook", events=["scan.created"]),
                    secret_key=settings.secret_key,
                    allow_private=True,
                )
    finally:
        await engine.dispose()
    return codes, devices


def scope_for(
    path: str, query: bytes, agent: str, rng: random.Random, *, proxied: bool = True
) -> Scope:
    """An ASGI scope as uvicorn builds it for a phone's GET: from a random client
    address, sent through a trusted loopback proxy (``X-Forwarded-For``, as
    ``scan_redirect.py --realistic`` sends it) or, not ``proxied``, as the socket peer."""
    client = (
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    )
    headers = [
        (b"host", b"go.example.com"),
        (b"user-agent", agent.encode("latin-1")),
        (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
        (b"accept-language", rng.choice(LANGUAGES)),
        (b"accept-encoding", b"gzip, deflate, br"),
    ]
    if proxied:
        headers.append((b"x-forwarded-for", client.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "client": ("127.0.0.1", 50000) if proxied else (client, 50000),
        "server": ("127.0.0.1", 8000),
        "headers": headers,
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Round:
    """Makes the scopes of one round: ``next()`` gives the next request's scope."""

    def __init__(
        self,
        name: str,
        codes: list[str],
        devices: list[Any],
        agents: list[str],
        url: str,
        *,
        proxied: bool = True,
    ) -> None:
        self.name, self.codes, self.devices, self.agents = name, codes, devices, agents
        self.database_url = url
        self.proxied = proxied
        self.rng = random.Random(7)
        self.count = 0

    def next(self) -> Scope:
        self.count += 1
        if self.name == "nfc":
            code, device = self.devices[self.count % len(self.devices)]
            e, c = device.tap()
            query = f"e={e}&c={c}".encode()
            return scope_for(f"/n/{code}", query, self.agents[0], self.rng, proxied=self.proxied)
        code = self.rng.choice(self.codes)
        if self.name == "cold":  # a number never used: an agent no server has seen
            agent = self.agents[self.count % len(self.agents)] % (10**9 + self.count)
        else:
            agent = self.agents[self.count % len(self.agents)]
        return scope_for(f"/s/{code}", b"", agent, self.rng, proxied=self.proxied)


async def drive(app: Any, scope: Scope, statuses: list[int]) -> None:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, _receive, send)


async def request_side(
    app: Any, scans: Any, round_: Round, n: int, profile: cProfile.Profile | None
) -> float:
    """CPU µs per scan of the handler alone: requests one at a time, ``writer.submit``
    replaced by one that hands the record back at once (as a spooled scan comes back).
    Scopes are built (and SUN messages computed) before the clock starts."""
    scopes = [round_.next() for _ in range(n)]
    writer = scans.writer

    async def stored(record: ScanRecord) -> ScanRecord:
        return record

    writer.submit = stored
    statuses: list[int] = []
    try:
        if profile is not None:
            profile.enable()
        t0 = time.process_time()
        for scope in scopes:
            await drive(app, scope, statuses)
        spent = time.process_time() - t0
        if profile is not None:
            profile.disable()
    finally:
        del writer.submit
    assert statuses == [302] * n, sorted(set(statuses))
    return spent / n * 1e6


def backend_cpu_s(database: str) -> float:
    """CPU seconds (user + system) used so far by the PostgreSQL backends connected to
    ``database`` (read from ``/proc``: the server must run on this machine); 0.0 when
    they cannot be read."""
    with psycopg.connect(
        make_url(SERVER_URL)
        .set(database="postgres")
        .render_as_string(hide_password=False)
        .replace("+psycopg", "")
    ) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            )
        ]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


async def with_commit(
    app: Any, round_: Round, n: int, concurrency: int, profile: cProfile.Profile | None = None
) -> tuple[float, float]:
    """CPU µs per scan of the whole process, ``concurrency`` requests in flight, and of
    the database's backends (COPY, indexes, the NFC counter UPDATE; clock ticks of
    10 ms, so use a few thousand scans)."""
    scopes = [round_.next() for _ in range(n)]
    statuses: list[int] = []
    queue = iter(scopes)
    database = make_url(round_.database_url).database or ""

    async def worker() -> None:
        for scope in queue:
            await drive(app, scope, statuses)

    db0 = await asyncio.to_thread(backend_cpu_s, database)
    if profile is not None:
        profile.enable()
    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    spent = time.process_time() - t0
    if profile is not None:
        profile.disable()
    await asyncio.sleep(0.05)  # the last commit's backend work
    db = await asyncio.to_thread(backend_cpu_s, database) - db0
    assert statuses == [302] * n, sorted(set(statuses))
    return spent / n * 1e6, db / n * 1e6


async def main_async(args: argparse.Namespace, database_url: str) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            environment="test",
            database_url=database_url,
            base_url="https://go.example.com",
            secret_key=secrets.token_urlsafe(32),
            data_dir=Path(data_dir),
            rate_limit_enabled=False,  # as benchmarks/scan_redirect.py
            webhook_delivery_enabled=not args.webhook,
            geoip_db=(
                synthetic_geoip(Path(data_dir) / "synthetic.mmdb")
                if args.geoip_db == "synthetic"
                else Path(args.geoip_db)
                if args.geoip_db
                else None
            ),
        )
        rounds = args.rounds.split(",")
        codes, devices = await seed(
            settings, args.tags, args.nfc_tags if "nfc" in rounds else 0, webhook=args.webhook
        )
        if args.locations:
            await asyncio.to_thread(seed_locations, libpq_url(database_url), args.locations)
        if args.rules:
            await asyncio.to_thread(seed_rules, libpq_url(database_url), args.rules)
        fastapi_app = create_app(settings)
        app = served_app(fastapi_app)
        agents = {
            "cold": in_app_templates(args.agents, seed=2),
            "warm": realistic_agents(args.agents, seed=1),
            "nfc": [
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
            ],
        }
        async with fastapi_app.router.lifespan_context(fastapi_app):
            scans = fastapi_app.state.scans
            print(
                f"# {args.scans} scans per pass, {len(codes)} QR tags, {len(devices)} nfc_sun "
                f"tags, {args.agents} agents, concurrency {args.concurrency}"
                f"{', scan.created webhook' if args.webhook else ''} (CPU µs per scan)"
                f"; GeoIP: {args.geoip_db or 'none'}, {args.locations} locations, "
                f"{args.rules} rules"
            )
            for name in rounds:
                round_ = Round(
                    name, codes, devices, agents[name], database_url, proxied=not args.direct
                )
                # warm: every agent seen once (memoised); else imports, caches and the
                # writer's connection warmed up
                warm_up = len(agents[name]) if name == "warm" else 200
                await with_commit(app, round_, warm_up, args.concurrency)
                req = await request_side(app, scans, round_, args.scans, None)
                full, db = await with_commit(app, round_, args.scans, args.concurrency)
                print(
                    f"{name:>5}: request {req:6.1f} µs   with commit {full:6.1f} µs   "
                    f"PostgreSQL backends {db:6.1f} µs"
                )
                if args.profile:  # separate passes: the profiler's overhead is not counted
                    for label in ("request side", "with commit"):
                        profile = cProfile.Profile()
                        if label == "request side":
                            await request_side(app, scans, round_, args.scans, profile)
                        else:
                            await with_commit(app, round_, args.scans, args.concurrency, profile)
                        out = io.StringIO()
                        stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
                        stats.print_stats(int(os.environ.get("PROFILE_TOP", "20")))
                        print(f"## {name}, {label}\n{out.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=3000, help="scans per measured pass")
    parser.add_argument("--tags", type=int, default=200, help="QR tags")
    parser.add_argument("--agents", type=int, default=2000, help="agents (templates when cold)")
    parser.add_argument("--nfc-tags", type=int, default=50, help="nfc_sun tags tapped in turn")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", default="cold,warm,nfc", help="comma-separated rounds")
    parser.add_argument("--profile", action="store_true", help="cProfile top-20 per round")
    parser.add_argument(
        "--webhook", action="store_true", help="the organization has a scan.created webhook"
    )
    parser.add_argument("--geoip-db", help="MaxMind DB file, or 'synthetic' (as scan_redirect.py)")
    parser.add_argument("--locations", type=int, default=0, help="stores; tags placed at them")
    parser.add_argument("--rules", type=int, default=0, help="redirect rules (seed_rules)")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="clients as socket peers (default: through a trusted loopback proxy, "
        "X-Forwarded-For, as scan_redirect.py --realistic)",
    )
    args = parser.parse_args()
    name = f"passerelle_cpu_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        asyncio.run(main_async(args, url))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
