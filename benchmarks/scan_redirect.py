"""Benchmark of the scan hot path, ``GET /s/{code}``, against a bare constant-302 endpoint.

Starts both servers itself (same uvicorn settings and worker count), loads them with
``wrk`` (or, without it, an asyncio client), and prints requests per second, p50/p99
latency, their ratio, then checks in an exact phase that the number of scans stored
equals the number of 302 responses. With ``--memory-tags N`` it also loads N active tags
and prints the resident memory of a server process holding them.

With ``--realistic`` (needs ``wrk`` and the ``bench`` extra) the load looks like a
campaign's instead of one phone scanning one tag: each request scans a random tag, from
a random client address (``X-Forwarded-For``, sent from loopback, which the servers
trust), with a real phone's agent (``benchmarks/user_agents.py``). Two rounds, each run
against Passerelle, a bare FastAPI 302 and a raw ASGI 302 (same uvicorn, same workers):

- cold: every request's agent is new to the server (an in-app browser with a build
  field never sent before), so device parsing and bot detection run on each scan;
- warm: ``--agents`` distinct agents, sent round after round, so each is memoised.

After each round it checks that the scans stored equal the 302s answered.

With ``--nfc`` (needs ``wrk``) the load is ``--nfc-tags`` NTAG 424 DNA tags (``nfc_sun``,
known keys; default 50) being tapped in turn: ``GET /n/{code}?e=&c=`` with a fresh SUN
message per request (each tag's counters 1, 2, 3... precomputed with
:mod:`campaigns.payloads.sun`'s MAC, written to a path list that wrk's threads read in
turn), so every request runs the SUN verification in memory and the replay check in the
group commit. Several tags, because that is what a deployment looks like (tags on many
posters and shelves, each tapped now and then): with one tag (``--nfc-tags 1``, the load
of earlier runs) every group commit of every worker queues on that one tag's row lock,
which no real deployment sees. Measured against the FastAPI and raw ASGI 302
ceilings of the same run; then it counts the verdicts stored. Concurrent connections
deliver counters slightly out of order, so a counter below one already accepted by an
earlier group commit is stored ``replayed`` (a real tag is never tapped concurrently);
both verdicts cost the same. Past the end of the list wrk starts over (all replays).

Geography (``--realistic``): ``--geoip-db PATH`` geolocates every scan with that MaxMind
DB file (``synthetic``: a generated one with one city per /8 network, so every random
address is found; needs the ``test`` extra's ``mmdb-writer``); ``--locations N`` seeds N
stores with a 300 m circle around Paris and places every tag at one of them, so each
scan is matched to a store by its area; ``--rules N`` adds N redirect rules to the
campaign (``seed_rules``: conditions on country, OS, device type, language and store,
the last a 50/50 split), so every scan walks them. Phones send an ``Accept-Language``
(a few locales, at random).

    python benchmarks/scan_redirect.py [--workers 1] [--connections 64] [--duration 15]
        [--tags 1000] [--memory-tags 1000000] [--realistic [--agents 2000]
        [--geoip-db PATH|synthetic] [--locations 1000] [--rules 20]]
        [--nfc [--nfc-taps 300000] [--nfc-tags 50]] [--repeat 3]

``--repeat N`` runs the realistic rounds or the NFC taps N times, the three servers in
rotating order (each runs first, second and last in turn), prints each repetition's
ratios and their medians: on a shared machine whose speed drifts by tens of percent
from one minute to the next, the median of paired runs is the figure to quote.

Needs a PostgreSQL with PostGIS (``PASSERELLE_TEST_DATABASE_URL`` or the local one); it
creates a throwaway database and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.user_agents import in_app_templates, realistic_agents  # noqa: E402
from campaigns import migrate  # noqa: E402
from campaigns.db import libpq_url  # noqa: E402
from campaigns.payloads.keys import SunKeys, seal_sun_keys  # noqa: E402
from campaigns.payloads.sun import PICC_DATA_TAG, sdm_mac  # noqa: E402
from campaigns.scanning.links import new_code  # noqa: E402

ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(conninfo: str, n_tags: int) -> list[str]:
    """One organization, one campaign, ``n_tags`` active tags (COPY). Returns the codes."""
    codes: set[str] = set()
    while len(codes) < n_tags:
        codes.add(new_code())
    with psycopg.connect(conninfo) as conn:
        org = conn.execute(
            "INSERT INTO organizations (name) VALUES ('bench') RETURNING id"
        ).fetchone()
        assert org is not None
        campaign = conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url) "
            "VALUES (%s, 'bench', 'bench', 'https://shop.example.com/landing?ref=poster') "
            "RETURNING id",
            (org[0],),
        ).fetchone()
        assert campaign is not None
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY tags (organization_id, campaign_id, code, kind, label) FROM STDIN"
            ) as copy,
        ):
            for i, code in enumerate(codes):
                copy.write_row((org[0], campaign[0], code, "qr", f"poster-{i}"))
    return sorted(codes)


def seed_locations(conninfo: str, n_locations: int) -> None:
    """``n_locations`` stores of the benchmark organization, each a 300 m circle around a
    point scattered over 20 km around Paris (seeded randomness in SQL), and every tag
    placed at one of them (its point as placement)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            "INSERT INTO locations (organization_id, name, point, radius_m) "
            "SELECT o.id, 'store ' || i, ST_SetSRID(ST_MakePoint("
            "2.3522 + (random() - 0.5) * 0.5, 48.8566 + (random() - 0.5) * 0.35), 4326)"
            "::geography, 300 FROM organizations AS o, generate_series(1, %s) AS i",
            (n_locations,),
        )
        # Ids of a fresh table are consecutive: tag i goes to store (i mod n).
        conn.execute(
            "UPDATE tags SET location_id = l.id, placement = l.point FROM locations AS l "
            "WHERE l.id = (SELECT min(id) FROM locations) + tags.id %% %s",
            (n_locations,),
        )


#: Conditions of the benchmark's rules before the last, in turn (``seed_rules``). A scan
#: walks the campaign's rules in priority order until one matches: most of these miss
#: most scans (other countries, languages, tablets), as a campaign's special cases do.
_RULE_CONDITIONS: tuple[dict[str, list[Any]], ...] = (
    {"countries": ["DE", "AT", "CH"]},
    {"os": ["iOS"], "languages": ["en"]},
    {"device_types": ["tablet"]},
    {"languages": ["de", "it"]},
    {"countries": ["FR"], "os": ["Windows", "Mac OS X"]},
    {"countries": ["BE", "LU"], "device_types": ["mobile"]},
    {"os": ["Android"], "languages": ["es"]},
)


def seed_rules(conninfo: str, n_rules: int) -> None:
    """``n_rules`` redirect rules on the benchmark campaign (priorities 1..n), each
    validated by the API's own schema (``RuleCreate``) and stored as the API stores it:
    conditions on country, OS, device type, language and (with stores seeded) matched
    store taken in turn from ``_RULE_CONDITIONS``, each to its own destination; the last
    rule, without conditions, a sticky 50/50 split. Every scan walks the rules until
    one matches (the split catches the rest)."""
    from campaigns.schemas import RuleCreate

    with psycopg.connect(conninfo) as conn:
        ids = conn.execute("SELECT organization_id, id FROM campaigns").fetchone()
        assert ids is not None
        locations = [r[0] for r in conn.execute("SELECT id FROM locations ORDER BY id LIMIT 50")]
        for priority in range(1, n_rules + 1):
            if priority == n_rules:
                body: dict[str, Any] = {
                    "split": [
                        {"destination_url": "https://shop.example.com/a", "weight": 50},
                        {"destination_url": "https://shop.example.com/b", "weight": 50},
                    ]
                }
            else:
                when = dict(_RULE_CONDITIONS[(priority - 1) % len(_RULE_CONDITIONS)])
                if locations and priority % 4 == 0:  # some rules target a few stores
                    when = {"location_ids": locations[priority % 10 :: 10][:5]}
                body = {"when": when, "destination_url": f"https://shop.example.com/r{priority}"}
            rule = RuleCreate.model_validate({"priority": priority, **body}).model_dump(mode="json")
            conn.execute(
                "INSERT INTO redirect_rules (organization_id, campaign_id, priority, "
                "conditions, destination_url, split) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    ids[0],
                    ids[1],
                    rule["priority"],
                    Jsonb({k: v for k, v in rule["when"].items() if v is not None}),
                    rule["destination_url"],
                    Jsonb(rule["split"]) if rule["split"] is not None else None,
                ),
            )


def synthetic_geoip(path: Path) -> Path:
    """An MMDB with one city record per public /8 network (1/8 to 223/8, less 10, 127):
    every random benchmark address is found (the ``test`` extra's ``mmdb-writer``)."""
    from tests.fixtures.mmdb import city_record, write_mmdb

    networks = {
        f"{first}.0.0.0/8": city_record(
            "FR",
            city=f"City {first}",
            region="IDF",
            lat=48.0 + first / 100,
            lon=2.0,
            accuracy_km=20,
        )
        for first in range(1, 224)
        if first not in (10, 127)
    }
    return write_mmdb(path, networks)


def count_scans(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM scans").fetchone()
        assert row is not None
        return int(row[0])


def settled_scans(conninfo: str) -> int:
    """The scan count once the writers have committed what they hold (unchanged for a
    second; at most 30 s)."""
    last, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        now = count_scans(conninfo)
        if now == last:
            return now
        last = now
        time.sleep(1)
    return last


@contextlib.contextmanager
def server(
    target: str, port: int, workers: int, env: dict[str, str], factory: bool
) -> Iterator[subprocess.Popen[bytes]]:
    """Serve ``target`` until the block ends; waits for it to answer. Passerelle runs as
    ``passerelle serve`` (its production settings); the bare app under plain uvicorn with
    the same worker count, keep-alive and log level."""
    if target == "passerelle":
        cmd = [sys.executable, "-m", "api.cli", "serve", "--no-migrate"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", target, "--no-access-log"]
        cmd += ["--log-level", "warning", "--timeout-keep-alive", "5"]
        cmd += ["--factory"] if factory else []
    # The load generator is a trusted proxy: X-Forwarded-For sets the client address.
    cmd += ["--forwarded-allow-ips", "127.0.0.1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                # The bare apps have no health route: 404 (FastAPI) or 302 (raw ASGI).
                if r.status_code in (200, 302, 404):
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {target} did not start")
            time.sleep(0.2)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (``/proc``), None when it
    is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: proc(5) 14, 15


_TICKS = os.sysconf("SC_CLK_TCK")


def _group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (a server started in its own session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds spent during a ``with`` block by the server (every process of its
    group ``server_pgid``), by the PostgreSQL backends connected to the benchmark's
    database (``conninfo``; sampled every 0.25 s, so short-lived ones such as autovacuum
    workers are caught too) and by the load generator (children of this process waited
    for during the block: wrk). Read ``server_s``, ``postgres_s``, ``client_s`` after
    the block. CPU time is what a request costs whatever the neighbours do, unlike
    throughput on a shared machine."""

    def __init__(self, conninfo: str, server_pgid: int) -> None:
        self.conninfo, self.server_pgid = conninfo, server_pgid
        self.server_s = self.postgres_s = self.client_s = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        for (pid,) in rows:
            used = _cpu_s(pid)
            if used is not None:
                # A backend already connected when the block starts counts from its CPU
                # then; one first seen later connected during the block: from zero.
                self._first.setdefault(pid, 0.0 if self._started else used)
                self._last[pid] = used

    def _run(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.wait(0.25):
            self._sample(conn)

    def __enter__(self) -> CpuMeter:
        self._conn = psycopg.connect(self.conninfo, autocommit=True)
        self._started = False
        self._sample(self._conn)
        self._started = True
        self._server0 = {pid: _cpu_s(pid) or 0.0 for pid in _group_pids(self.server_pgid)}
        self._children0 = os.times()
        self._thread = threading.Thread(target=self._run, args=(self._conn,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        children = os.times()
        server = {pid: _cpu_s(pid) or 0.0 for pid in _group_pids(self.server_pgid)}
        self._stop.set()
        self._thread.join()
        self._sample(self._conn)
        self._conn.close()
        self.server_s = sum(used - self._server0.get(pid, 0.0) for pid, used in server.items())
        self.postgres_s = sum(used - self._first[pid] for pid, used in self._last.items())
        self.client_s = (children.children_user + children.children_system) - (
            self._children0.children_user + self._children0.children_system
        )

    def per_request_us(self, requests: float) -> dict[str, float]:
        """µs per request: ``cpu_server``, ``cpu_pg``, ``cpu_client`` and their sum
        ``cpu_total``."""
        n = max(requests, 1)
        out = {
            "cpu_server": self.server_s / n * 1e6,
            "cpu_pg": self.postgres_s / n * 1e6,
            "cpu_client": self.client_s / n * 1e6,
        }
        out["cpu_total"] = sum(out.values())
        return out


def cpu_text(r: dict[str, float]) -> str:
    """The CPU figures of a run, for its line."""
    return (
        f"   CPU µs/req: server {r['cpu_server']:.0f} + PostgreSQL {r['cpu_pg']:.0f} "
        f"+ wrk {r['cpu_client']:.0f} = {r['cpu_total']:.0f}"
    )


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` and its children, in MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(FileNotFoundError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def wrk_run(
    port: int, codes: list[str], connections: int, duration: int, threads: int
) -> dict[str, float]:
    """Run wrk over the codes (round robin) with one agent; returns rps, p50/p99 (ms),
    requests, non-3xx responses, socket errors."""
    sample = codes[:5000]
    script = (
        "codes = {" + ",".join(f'"{c}"' for c in sample) + "}\n"
        "counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        "  return wrk.format('GET', '/s/' .. codes[(counter % #codes) + 1], "
        "{['User-Agent'] = 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) "
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1'})\n"
        "end\n"
    )
    return _wrk(port, script, [], connections, duration, threads)


#: Per request: a random tag, a random client address, an agent from ``agents``; with
#: ``unique`` the agent is a template whose ``%d`` gets a number no request of any run
#: used before (``base`` + a per-thread counter). Counts 302s and other statuses.
_REALISTIC_LUA = """
local threads, next_tid = {}, 0
languages = {"fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr-FR,fr;q=0.9", "en-GB,en;q=0.9",
  "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "es-ES,es;q=0.9", "it-IT,it;q=0.9"}
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
function init(args)
  base, nthreads, unique = tonumber(args[1]), tonumber(args[2]), args[3] == "1"
  counter, redirects, others = 0, 0, 0
  math.randomseed(base + tid * 7919)
end
function request()
  counter = counter + 1
  local ua = agents[math.random(#agents)]
  if unique then ua = string.format(ua, base + counter * nthreads + tid) end
  local ip = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255),
    math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", "/s/" .. codes[math.random(#codes)],
    {["User-Agent"] = ua, ["X-Forwarded-For"] = ip,
     ["Accept-Language"] = languages[math.random(#languages)]})
end
function response(status, headers, body)
  if status == 302 then redirects = redirects + 1 else others = others + 1 end
end
function done(summary, latency, requests)
  local r, o = 0, 0
  for _, t in ipairs(threads) do r = r + t:get("redirects"); o = o + t:get("others") end
  io.write(string.format("REDIRECTS %d OTHERS %d\\n", r, o))
end
"""


def _lua_strings(values: list[str]) -> str:
    """A Lua table of long-bracket strings (no escaping needed inside)."""
    assert not any("]==]" in v for v in values)
    return "{" + ",".join(f"[==[{v}]==]" for v in values) + "}"


def wrk_realistic(
    port: int,
    codes: list[str],
    agents: list[str],
    *,
    unique: bool,
    base: int,
    connections: int,
    duration: int,
    threads: int,
) -> dict[str, float]:
    """One wrk run of the realistic load (see ``_REALISTIC_LUA``); adds ``redirects``
    and ``others`` (responses other than 302) to ``wrk_run``'s figures."""
    script = f"codes = {_lua_strings(codes)}\nagents = {_lua_strings(agents)}\n{_REALISTIC_LUA}"
    args = [str(base), str(threads), "1" if unique else "0"]
    return _wrk(port, script, args, connections, duration, threads)


def _wrk(
    port: int, script: str, script_args: list[str], connections: int, duration: int, threads: int
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s"]
        cmd += ["--latency", "-s", fh.name, f"http://127.0.0.1:{port}", "--", *script_args]
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(fh.name)

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_3xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    counted = re.search(r"REDIRECTS (\d+) OTHERS (\d+)", out)
    return {
        "rps": rps,
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": requests,
        "non_3xx": int(non_3xx.group(1)) if non_3xx else 0,
        "socket_errors": errors.group(1) if errors else "none",  # type: ignore[dict-item]
        "redirects": int(counted.group(1)) if counted else -1,
        "others": int(counted.group(2)) if counted else -1,
    }


def hey_run(port: int, code: str, connections: int, rate: float, duration: int) -> dict[str, float]:
    """Open-loop latency at a fixed offered rate (``hey -q``), below saturation: what a
    phone waits when the server is busy but not overloaded. Returns p50/p99 (ms), 302s."""
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{duration}s",
            "-c",
            str(connections),
            "-q",
            f"{rate / connections:.3f}",
            "-disable-redirects",
            "-H",
            f"User-Agent: {ANDROID_UA}",
            f"http://127.0.0.1:{port}/s/{code}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def pct(label: str) -> float:
        m = re.search(rf"{label}% in ([\d.]+) secs", out)
        assert m, out
        return float(m.group(1)) * 1000

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    redirects = re.search(r"\[302\]\s+(\d+) responses", out)
    return {
        "rps": rps,
        "p50": pct("50"),
        "p99": pct("99"),
        "302": int(redirects.group(1)) if redirects else 0,
    }


async def python_load(
    port: int, codes: list[str], connections: int, total: int
) -> tuple[dict[str, float], int]:
    """Asyncio client: ``total`` requests over ``connections`` connections, all awaited.
    Returns latency figures and the number of 302 responses."""
    latencies: list[float] = []
    redirects = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as client:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(codes[i % len(codes)])

        async def worker() -> None:
            nonlocal redirects
            while True:
                try:
                    code = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                r = await client.get(
                    f"/s/{code}",
                    headers={"user-agent": ANDROID_UA},
                )
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code == 302:
                    redirects += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
    }, redirects


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="one per core")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=1000, help="offered req/s of the fixed-rate latency phase"
    )
    parser.add_argument(
        "--exact-requests", type=int, default=6400, help="requests of the exact-count phase"
    )
    parser.add_argument("--only-memory", action="store_true", help="skip the throughput phases")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="random tags, client addresses and phone agents; cold and warm rounds (wrk)",
    )
    parser.add_argument(
        "--agents", type=int, default=2000, help="distinct agents of the realistic warm round"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="seconds of load before each measured run"
    )
    parser.add_argument(
        "--geoip-db",
        default=None,
        help="MaxMind DB file geolocating scans (PASSERELLE_GEOIP_DB), or 'synthetic'",
    )
    parser.add_argument(
        "--locations", type=int, default=0, help="stores with an area; every tag placed at one"
    )
    parser.add_argument(
        "--rules",
        type=int,
        default=0,
        help="redirect rules on the campaign (--realistic; see seed_rules)",
    )
    parser.add_argument(
        "--memory-tags", type=int, default=0, help="also measure RSS with this many tags"
    )
    parser.add_argument(
        "--nfc", action="store_true", help="taps of nfc_sun tags, a fresh SUN message each"
    )
    parser.add_argument(
        "--nfc-tags", type=int, default=50, help="nfc_sun tags tapped in turn by --nfc"
    )
    parser.add_argument(
        "--nfc-taps", type=int, default=300_000, help="SUN messages precomputed for --nfc"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repetitions of --realistic or --nfc (servers in rotating order); medians",
    )
    args = parser.parse_args()
    if (args.realistic or args.nfc) and not shutil.which("wrk"):
        parser.error("--realistic and --nfc need wrk (apt-get install wrk)")

    name = f"passerelle_bench_{secrets.token_hex(4)}"
    database_url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    conninfo = libpq_url(database_url)
    migrate.ensure_database(database_url)
    data_dir = Path(tempfile.mkdtemp(prefix="passerelle-bench-"))
    try:
        migrate.upgrade(database_url)
        codes = seed(conninfo, args.tags)
        if args.locations:
            seed_locations(conninfo, args.locations)
        if args.rules:
            seed_rules(conninfo, args.rules)
        env = {
            **os.environ,
            "PASSERELLE_DATABASE_URL": database_url,
            "PASSERELLE_DATA_DIR": str(data_dir),
            "PASSERELLE_BASE_URL": "https://go.example.com",
            "PASSERELLE_RATE_LIMIT_ENABLED": "false",  # one client IP sends everything here
            "PASSERELLE_SECRET_KEY": BENCH_SECRET_KEY,
        }
        if args.geoip_db == "synthetic":
            env["PASSERELLE_GEOIP_DB"] = str(synthetic_geoip(data_dir / "synthetic.mmdb"))
        elif args.geoip_db:
            env["PASSERELLE_GEOIP_DB"] = str(Path(args.geoip_db).resolve())
        use_wrk = shutil.which("wrk") is not None
        print(
            f"# {args.workers} worker(s), {args.connections} connections, {args.tags} tags, "
            f"load generator: {'wrk' if use_wrk else 'python asyncio client'}, "
            f"{os.cpu_count()} CPUs; GeoIP: {env.get('PASSERELLE_GEOIP_DB', 'none')}, "
            f"{args.locations} locations, {args.rules} rules"
        )

        if args.nfc:
            nfc_phase(args, env, conninfo)
        elif args.realistic:
            realistic_phases(args, codes, env, conninfo)
        elif not args.only_memory:
            throughput_phases(args, codes, env, conninfo, use_wrk)
        if args.memory_tags:
            memory_phase(args, codes, env, conninfo)
    finally:
        migrate.drop_database(database_url)
        shutil.rmtree(data_dir, ignore_errors=True)


def throughput_phases(
    args: argparse.Namespace, codes: list[str], env: dict[str, str], conninfo: str, use_wrk: bool
) -> None:
    """Saturated throughput (wrk), fixed-rate latency (hey), then the exact count."""
    results: dict[str, dict[str, float]] = {}
    fixed: dict[str, dict[str, float]] = {}
    for label, target, factory in (
        ("bare 302", "benchmarks.bare_app:app", False),
        ("GET /s/{code}", "passerelle", True),
    ):
        port = free_port()
        with server(target, port, args.workers, env, factory):
            if use_wrk:
                wrk_run(port, codes, args.connections, 3, args.threads)  # warm-up
                results[label] = wrk_run(port, codes, args.connections, args.duration, args.threads)
            else:
                results[label], _ = asyncio.run(python_load(port, codes, args.connections, 20_000))
            if shutil.which("hey"):
                fixed[label] = hey_run(port, codes[0], args.connections, args.rate, 10)
        r = results[label]
        print(
            f"{label:>14}: {r['rps']:9.0f} req/s   "
            f"p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
            + (
                f"   non-3xx {int(r['non_3xx'])}   socket errors: {r['socket_errors']}"
                if use_wrk
                else ""
            )
        )
    ratio = results["GET /s/{code}"]["rps"] / results["bare 302"]["rps"]
    print(
        f"ratio scan/bare: {ratio:.2f} (goal >= 0.50); "
        f"scan p99 {results['GET /s/{code}']['p99']:.2f} ms (goal < 25 ms)"
    )

    for label, r in fixed.items():
        print(
            f"{label:>14} at {args.rate:.0f} req/s offered (hey, {args.connections} conns): "
            f"{r['rps']:.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms"
        )

    # Exact phase: every response awaited, then scans stored must equal 302s answered.
    before = count_scans(conninfo)
    port = free_port()
    with server("passerelle", port, args.workers, env, True):
        _, redirects = asyncio.run(python_load(port, codes, args.connections, args.exact_requests))
    stored = count_scans(conninfo) - before
    print(
        f"exact phase: {redirects} redirects answered, {stored} scans stored -> "
        f"{'EQUAL' if stored == redirects else 'MISMATCH'}"
    )


#: The servers of the realistic rounds: label, uvicorn target, factory.
_TARGETS = (
    ("raw ASGI 302", "benchmarks.bare_app:raw_app", False),
    ("FastAPI 302", "benchmarks.bare_app:app", False),
    ("GET /s/{code}", "passerelle", True),
)


def realistic_phases(
    args: argparse.Namespace, codes: list[str], env: dict[str, str], conninfo: str
) -> None:
    """Cold then warm round (see the module's docstring) on each server, started afresh;
    prints throughput, latency, Passerelle's ratios to both ceilings, and checks that
    Passerelle stored a scan for every 302 it answered."""
    templates = in_app_templates(args.agents, seed=2)
    agents = realistic_agents(args.agents, seed=1)
    print(
        f"# realistic: {len(codes)} tags, random client addresses (X-Forwarded-For), "
        f"cold: a new in-app agent per request ({len(templates)} templates), "
        f"warm: {len(agents)} distinct agents; {args.warmup} s warm-up before each run"
    )
    runs = 0

    def run(port: int, pool: list[str], unique: bool, duration: int) -> dict[str, float]:
        nonlocal runs
        runs += 1  # each run's numbers start at a new billion: never an agent seen before
        return wrk_realistic(
            port,
            codes,
            pool,
            unique=unique,
            base=runs * 10**9,
            connections=args.connections,
            duration=duration,
            threads=args.threads,
        )

    reps: list[dict[tuple[str, str], dict[str, float]]] = []
    for rep in range(args.repeat):
        results: dict[tuple[str, str], dict[str, float]] = {}
        reps.append(results)
        for label, target, factory in rotated(_TARGETS, rep):
            realistic_server_runs(
                args, label, target, factory, env, conninfo, results, run, templates, agents, rep
            )
    print_realistic_totals(conninfo)
    for round_ in ("cold", "warm"):
        print_ratios(
            round_,
            "scan",
            "GET /s/{code}",
            [{k[0]: v for k, v in r.items() if k[1] == round_} for r in reps],
        )


def realistic_server_runs(
    args: argparse.Namespace,
    label: str,
    target: str,
    factory: bool,
    env: dict[str, str],
    conninfo: str,
    results: dict[tuple[str, str], dict[str, float]],
    run: Any,
    templates: list[str],
    agents: list[str],
    rep: int,
) -> None:
    """The cold then warm round of one server (started afresh), into ``results``."""
    port = free_port()
    with server(target, port, args.workers, env, factory) as proc:
        for round_, pool, unique in (("cold", templates, True), ("warm", agents, False)):
            run(port, pool, unique, args.warmup)
            before = settled_scans(conninfo)
            with CpuMeter(conninfo, proc.pid) as meter:
                r = run(port, pool, unique, args.duration)
            r.update(meter.per_request_us(r["requests"]))
            results[label, round_] = r
            stored = settled_scans(conninfo) - before
            check = ""
            if target == "passerelle":
                # wrk stops with up to one request in flight per connection: the
                # server may store those scans after wrk stopped reading.
                in_flight = stored - int(r["redirects"])
                ok = 0 <= in_flight <= args.connections
                check = (
                    f"   stored {stored} for {int(r['redirects'])} 302s "
                    f"({in_flight:+d} in flight at the end) -> {'OK' if ok else 'MISMATCH'}"
                )
            print(
                f"{rep_tag(args, rep)}{round_:>4} {label:>14}: {r['rps']:9.0f} req/s   "
                f"p50 {r['p50']:6.2f} ms   "
                f"p99 {r['p99']:6.2f} ms   non-302 {int(r['others'])}   "
                f"socket errors: {r['socket_errors']}{check}{cpu_text(r)}"
            )


def print_realistic_totals(conninfo: str) -> None:
    """What the realistic rounds stored: scans, addresses, agents, rules, stores."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT ip_truncated), count(DISTINCT user_agent), "
            "count(DISTINCT tag_id) FROM scans"
        ).fetchone()
        assert row is not None
    print(
        f"scans stored: {row[0]}, distinct truncated client addresses {row[1]}, "
        f"agents {row[2]}, tags {row[3]}"
    )
    with psycopg.connect(conninfo) as conn:
        by_rule = conn.execute(
            "SELECT count(*) FILTER (WHERE rule_id IS NOT NULL AND variant IS NULL), "
            "count(*) FILTER (WHERE variant IS NOT NULL), count(DISTINCT rule_id), "
            "count(*) FILTER (WHERE country IS NOT NULL), "
            "count(*) FILTER (WHERE location_id IS NOT NULL) FROM scans"
        ).fetchone()
        assert by_rule is not None
    print(
        f"scans sent by a conditional rule: {by_rule[0]}, by the split: {by_rule[1]} "
        f"({by_rule[2]} distinct rules); geolocated: {by_rule[3]}; at a store: {by_rule[4]}"
    )


def rotated(targets: tuple[tuple[str, str, bool], ...], rep: int) -> list[tuple[str, str, bool]]:
    """``targets`` starting at the ``rep``-th (modulo): over repetitions each server runs
    first, second and last in turn, so a drift of the machine's speed during a run does
    not always favour the same one."""
    k = rep % len(targets)
    return [*targets[k:], *targets[:k]]


def rep_tag(args: argparse.Namespace, rep: int) -> str:
    """``"rep 2  "`` when repeating (``--repeat``), else nothing."""
    return f"rep {rep + 1}  " if args.repeat > 1 else ""


def print_ratios(
    round_: str, name: str, scan_label: str, reps: list[dict[str, dict[str, float]]]
) -> None:
    """The ratio line of ``round_`` for each repetition (its own runs: minutes apart at
    most), then, over several, the median of each ratio: the figure to quote."""
    for i, runs in enumerate(reps):
        ceilings = {label: runs[label] for label, _, _ in _TARGETS[:2]}
        tag = f" (rep {i + 1})" if len(reps) > 1 else ""
        print(f"{round_}{tag}: {ratio_text(runs[scan_label], name, ceilings)}")
    if len(reps) > 1:
        parts = []
        for label, _, _ in _TARGETS[:2]:
            by_rps = [r[scan_label]["rps"] / r[label]["rps"] for r in reps]
            by_cpu = [r[label]["cpu_total"] / r[scan_label]["cpu_total"] for r in reps]
            parts.append(
                f"{name}/{label} {statistics.median(by_rps):.2f} "
                f"(range {min(by_rps):.2f}-{max(by_rps):.2f}; by CPU per request "
                f"{statistics.median(by_cpu):.2f})"
            )
        print(f"{round_}: median of {len(reps)} repetitions: {', '.join(parts)}")


def ratio_text(scan: dict[str, float], name: str, ceilings: dict[str, dict[str, float]]) -> str:
    """Throughput and p99 ratios of ``scan`` to each ceiling, and the CPU ratio: the
    ceiling's CPU per request (server + PostgreSQL + wrk) over the scan's, i.e. the
    throughput ratio a machine running only this benchmark would show."""
    return ", ".join(
        f"{name}/{label} {scan['rps'] / ceiling['rps']:.2f} "
        f"(p99 {scan['p99'] / ceiling['p99']:.1f}x; by CPU per request "
        f"{ceiling['cpu_total'] / scan['cpu_total']:.2f})"
        for label, ceiling in ceilings.items()
    )


BENCH_SECRET_KEY = "bench-secret-key-not-for-production-0123456789"  # noqa: S105 - throwaway
#: An NTAG 424 DNA with known keys (the benchmark plays the tag).
NFC_UID = bytes.fromhex("04B3E5C1A27F80")
NFC_KEYS = SunKeys(meta_read=bytes(range(16)), file_read=bytes(range(16, 32)))

#: Each wrk thread reads the path list and sends every ``nthreads``-th path from its own
#: offset, so no two requests carry the same SUN message while the list lasts.
_NFC_LUA = """
local threads, next_tid = {}, 0
languages = {"fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr-FR,fr;q=0.9", "en-GB,en;q=0.9",
  "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "es-ES,es;q=0.9", "it-IT,it;q=0.9"}
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
function init(args)
  nthreads = tonumber(args[2])
  paths = {}
  for line in io.lines(args[1]) do table.insert(paths, line) end
  counter, redirects, others = tid, 0, 0
end
function request()
  local path = paths[(counter % #paths) + 1]
  counter = counter + nthreads
  return wrk.format("GET", path, {["User-Agent"] = agent})
end
function response(status, headers, body)
  if status == 302 then redirects = redirects + 1 else others = others + 1 end
end
function done(summary, latency, requests)
  local r, o = 0, 0
  for _, t in ipairs(threads) do r = r + t:get("redirects"); o = o + t:get("others") end
  io.write(string.format("REDIRECTS %d OTHERS %d\\n", r, o))
end
"""


def nfc_uid(index: int) -> bytes:
    """The UID of the ``index``-th benchmark tag (:data:`NFC_UID` for the first)."""
    return NFC_UID[:5] + (int.from_bytes(NFC_UID[5:], "big") + index).to_bytes(2, "big")


def seed_nfc_tags(conninfo: str, count: int) -> list[tuple[str, bytes]]:
    """One organization and campaign, ``count`` ``nfc_sun`` tags personalised with
    :func:`nfc_uid` and :data:`NFC_KEYS` (sealed under the servers' secret key). Returns
    their ``(code, uid)``."""
    tags = [(new_code(), nfc_uid(i)) for i in range(count)]
    with psycopg.connect(conninfo) as conn:
        org = conn.execute(
            "INSERT INTO organizations (name) VALUES ('bench-nfc') RETURNING id"
        ).fetchone()
        assert org is not None
        campaign = conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url) "
            "VALUES (%s, 'bench-nfc', 'bench-nfc', 'https://shop.example.com/landing') "
            "RETURNING id",
            (org[0],),
        ).fetchone()
        assert campaign is not None
        for i, (code, uid) in enumerate(tags):
            sealed = seal_sun_keys(BENCH_SECRET_KEY, organization_id=org[0], uid=uid, keys=NFC_KEYS)
            conn.execute(
                "INSERT INTO tags (organization_id, campaign_id, code, kind, label, nfc_uid, "
                "nfc_keys_encrypted) VALUES (%s, %s, %s, 'nfc_sun', %s, %s, %s)",
                (org[0], campaign[0], code, f"counter-{i}", uid, sealed),
            )
    return tags


def sun_paths(tags: list[tuple[str, bytes]], count: int, start: int = 0) -> list[str]:
    """``count`` paths ``/n/{code}?e=..&c=..``, the tags in turn, each tag's counters
    1, 2, 3... (from the ``start``-th tap of that sequence), as the tags would send them
    (NXP AN12196: PICCData ``C7 ‖ UID ‖ counter LE ‖ padding`` encrypted under the
    meta-read key, one AES block; SDMMAC from :func:`campaigns.payloads.sun.sdm_mac`)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(NFC_KEYS.meta_read), modes.ECB()).encryptor()  # noqa: S305
    paths = []
    for i in range(start, start + count):
        code, uid = tags[i % len(tags)]
        counter = i // len(tags) + 1
        plain = bytes([PICC_DATA_TAG]) + uid + counter.to_bytes(3, "little") + os.urandom(5)
        e = encryptor.update(plain).hex().upper()
        c = sdm_mac(NFC_KEYS.file_read, uid, counter).hex().upper()
        paths.append(f"/n/{code}?e={e}&c={c}")
    return paths


def nfc_phase(args: argparse.Namespace, env: dict[str, str], conninfo: str) -> None:
    """Taps of ``--nfc-tags`` ``nfc_sun`` tags with fresh counters, on the raw ASGI and
    FastAPI 302 ceilings and on Passerelle (each started afresh), ``--repeat`` times
    (each repetition taps on from where the previous list ended), then the verdicts
    stored."""
    tags = seed_nfc_tags(conninfo, args.nfc_tags)
    script = f"agent = [==[{ANDROID_UA}]==]\n{_NFC_LUA}"
    reps: list[dict[str, dict[str, float]]] = []
    for rep in range(args.repeat):
        t0 = time.perf_counter()
        paths = sun_paths(tags, args.nfc_taps, start=rep * args.nfc_taps)
        print(
            f"# nfc: {len(paths)} SUN messages of {len(tags)} tags precomputed in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as fh:
            fh.write("\n".join(paths) + "\n")
        results: dict[str, dict[str, float]] = {}
        reps.append(results)
        try:
            for label, target, factory in rotated(_TARGETS, rep):
                port = free_port()
                name = "GET /n/{code}" if target == "passerelle" else label
                with server(target, port, args.workers, env, factory) as proc:
                    # No warm-up on Passerelle: it would use up counters of the list.
                    with CpuMeter(conninfo, proc.pid) as meter:
                        r = _wrk(
                            port,
                            script,
                            [fh.name, str(args.threads)],
                            args.connections,
                            args.duration,
                            args.threads,
                        )
                    r.update(meter.per_request_us(r["requests"]))
                results[name] = r
                print(
                    f"{rep_tag(args, rep)}{name:>14}: {r['rps']:9.0f} req/s   "
                    f"p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms   302 {int(r['redirects'])}"
                    f"   non-302 {int(r['others'])}   socket errors: {r['socket_errors']}"
                    f"{cpu_text(r)}"
                )
        finally:
            os.unlink(fh.name)
    settled_scans(conninfo)
    with psycopg.connect(conninfo) as conn:
        verdicts: dict[str, int] = dict(
            conn.execute(
                "SELECT coalesce(nfc_verification, 'none'), count(*) FROM scans "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        last = conn.execute("SELECT min(last_counter), max(last_counter) FROM nfc_counters")
        row = last.fetchone()
    print(f"verdicts stored: {verdicts}; last accepted counters (min, max) {row}")
    print_ratios("nfc", "tap", "GET /n/{code}", reps)


def memory_phase(
    args: argparse.Namespace, codes: list[str], env: dict[str, str], conninfo: str
) -> None:
    """RSS of one server process holding ``--memory-tags`` active tags, after a load."""
    extra = args.memory_tags - args.tags
    if extra > 0:
        t0 = time.perf_counter()
        seed(conninfo, extra)
        print(f"seeded {extra} more tags in {time.perf_counter() - t0:.1f} s")
    port = free_port()
    t0 = time.perf_counter()
    with server("passerelle", port, 1, env, True) as proc:
        ready_s = time.perf_counter() - t0
        r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).json()
        after_start = rss_mib(proc.pid)
        asyncio.run(python_load(port, codes, args.connections, 5000))
        print(
            f"memory: {r['tags_cached']} tags cached, server RSS {after_start:.0f} MiB after "
            f"start, {rss_mib(proc.pid):.0f} MiB after 5000 scans (goal < 1024 MiB); "
            f"ready in {ready_s:.1f} s"
        )


if __name__ == "__main__":
    main()
