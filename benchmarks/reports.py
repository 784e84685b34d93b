"""Report timings at a national campaign's volume: stats and attribution, rollups vs raw.

Builds a scratch database (dropped at the end unless ``--keep``) holding one campaign
with ``--scans`` scans (default 10 million) over ``--days`` days ending now and
``--conversions`` conversions (default 1 million), written with ``COPY``; builds the
rollups (``campaigns.services.rollups.rebuild``, timed) and prints, for several windows,
the time of ``campaign_stats`` (the service of ``GET /v1/campaigns/{id}/stats``) through
the rollups next to the same call reading the raw tables only, then
``attribution_report`` for each model over the last day, the last week and the whole
campaign, credited in PostgreSQL (``crediting="sql"``, the service's path) next to the
Python reference models (``crediting="python"``: over the whole campaign for
``last_touch`` only, minutes at full size). Takes minutes at full size: never run in CI.

    python benchmarks/reports.py [--scans 10000000] [--conversions 1000000] [--days 60]
        [--tags 200] [--repeat 3] [--keep] [--database-url URL] [--no-baselines]

``--database-url`` reuses a database filled by an earlier ``--keep`` run (no load).
Fast paths print the median of ``--repeat`` runs (other work on a shared machine only
adds time, so compare medians of the same run); the raw and Python paths run once, or not
at all with ``--no-baselines``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scan_redirect import SERVER_URL, seed  # noqa: E402
from campaigns import migrate  # noqa: E402
from campaigns.attribution import MODELS  # noqa: E402
from campaigns.db import libpq_url, make_engine, make_sessionmaker  # noqa: E402
from campaigns.services.attribution import attribution_report  # noqa: E402
from campaigns.services.credits import refresh  # noqa: E402
from campaigns.services.rollups import rebuild  # noqa: E402
from campaigns.services.stats import campaign_stats  # noqa: E402

SCAN_COLUMNS = (
    "id, click_id, organization_id, campaign_id, tag_id, scanned_at, channel, method, "
    "outcome, destination, device_type, os, is_bot, bot_reason, burst, visitor_id, "
    "cookie_id, country"
)
CONVERSION_COLUMNS = (
    "organization_id, external_id, event, click_id, value_amount_minor, value_currency, "
    "occurred_at, received_at, fingerprint, scan_id, campaign_id, tag_id"
)
#: One conversion in 50 partly refunded (a fifth of its value) a day after it, at most
#: at the end of the data: the reports split each refund dated in their window.
REFUNDS_SQL = """
INSERT INTO refunds (organization_id, conversion_id, external_id, amount_minor, refunded_at,
                     fingerprint)
SELECT organization_id, id, 'refund-' || id, greatest(1, value_amount_minor / 5),
       least(occurred_at + interval '1 day', %(end)s), '\\x00'
FROM conversions WHERE id %% 50 = 0 AND value_amount_minor > 0
"""
DEVICES = ("mobile", "mobile", "mobile", "tablet", "desktop")
OSES = ("iOS", "Android", "Android", "Windows", "\\N")
COUNTRIES = ("FR", "FR", "FR", "BE", "DE", "\\N")
REASONS = ("crawler", "previewer", "prefetch", "head", "scanner")
NULL = "\\N"


def click_id(i: int) -> str:
    return f"b{i:015x}"


def load(conninfo: str, n_scans: int, n_conversions: int, days: int, n_tags: int) -> None:
    """Seed one organization, campaign and ``n_tags`` tags, then COPY the scans and the
    conversions (credited to their click scan, as ``credit_conversions`` would)."""
    seed(conninfo, n_tags)
    rng = random.Random(42)
    end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    start = end - dt.timedelta(days=days)
    span = (end - start).total_seconds()
    with psycopg.connect(conninfo) as conn:
        org, campaign = conn.execute("SELECT organization_id, id FROM campaigns").fetchone()  # type: ignore[misc]
        conn.execute("UPDATE campaigns SET timezone = 'Europe/Paris'")
        tags = [r[0] for r in conn.execute("SELECT id FROM tags ORDER BY id")]
        # Scans in time order (ids follow time, as they do when written live).
        per_day = max(1, n_scans // max(days, 1))
        visitors_per_day = max(1, int(per_day / 1.6))
        t0 = time.perf_counter()
        times: list[float] = []
        with conn.cursor() as cur, cur.copy(f"COPY scans ({SCAN_COLUMNS}) FROM STDIN") as copy:
            for i in range(1, n_scans + 1):
                at = start + dt.timedelta(seconds=span * i / (n_scans + 1))
                times.append(at.timestamp())
                day = at.toordinal()
                human = rng.random() >= 0.05
                visitor = hashlib.md5(  # noqa: S324 - test data, not security
                    f"{day}:{rng.randrange(visitors_per_day)}".encode()
                ).hexdigest()
                cookie = (
                    f"00000000-0000-4000-8000-{rng.randrange(n_scans // 20 + 1):012x}"
                    if rng.random() < 0.2
                    else "\\N"
                )
                copy.write(
                    f"{i}\t{click_id(i)}\t{org}\t{campaign}\t{tags[rng.randrange(n_tags)]}\t"
                    f"{at.isoformat()}\t{'qr' if rng.random() < 0.8 else 'nfc'}\tGET\tredirect\t"
                    f"https://shop.example.com/\t{rng.choice(DEVICES)}\t{rng.choice(OSES)}\t"
                    f"{'f' if human else 't'}\t{NULL if human else rng.choice(REASONS)}\t"
                    f"{'t' if rng.random() < 0.01 else 'f'}\t\\\\x{visitor}\t{cookie}\t"
                    f"{rng.choice(COUNTRIES)}\n"
                )
        conn.execute("SELECT setval(pg_get_serial_sequence('scans', 'id'), %s)", (n_scans,))
        conn.commit()
        print(f"COPY {n_scans:,} scans: {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        tag_of = [0] * (n_scans + 1)
        for scan_id, tag_id in conn.execute("SELECT id, tag_id FROM scans"):
            tag_of[scan_id] = tag_id
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY conversions ({CONVERSION_COLUMNS}) FROM STDIN") as copy,
        ):
            for n in range(n_conversions):
                scan_id = rng.randrange(1, n_scans + 1)
                occurred = dt.datetime.fromtimestamp(
                    min(times[scan_id - 1] + rng.randrange(3 * 86400), end.timestamp()), dt.UTC
                )
                amount, currency = rng.choice(((4999, "EUR"), (1999, "EUR"), (2500, "USD")))
                copy.write(
                    f"{org}\torder-{n}\tpurchase\t{click_id(scan_id)}\t{amount}\t{currency}\t"
                    f"{occurred.isoformat()}\t{occurred.isoformat()}\t\\\\x{'00' * 32}\t"
                    f"{scan_id}\t{campaign}\t{tag_of[scan_id]}\n"
                )
        conn.commit()
        print(f"COPY {n_conversions:,} conversions: {time.perf_counter() - t0:.0f} s", flush=True)
        conn.execute(REFUNDS_SQL, {"end": end})
        conn.commit()
        t0 = time.perf_counter()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE scans")
        conn.execute("VACUUM ANALYZE conversions")
        print(f"VACUUM ANALYZE: {time.perf_counter() - t0:.0f} s", flush=True)


async def median(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    """The median wall time of ``repeat`` awaited calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def measure(
    url: str,
    repeat: int,
    skip_rebuild: bool,
    *,
    with_attribution: bool = True,
    with_stats: bool = True,
    with_live: bool = True,
    baselines: bool = True,
) -> None:
    engine = make_engine(url)
    sessionmaker: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
    if not skip_rebuild:
        t0 = time.perf_counter()
        days = await rebuild(engine)
        print(f"rollups rebuild: {days} campaign-days in {time.perf_counter() - t0:.1f} s")
    async with sessionmaker() as session:
        row = (
            await session.execute(
                text(
                    "SELECT c.organization_id, c.id, "
                    "(SELECT max(scanned_at) FROM scans WHERE campaign_id = c.id) AS last "
                    "FROM campaigns c"
                )
            )
        ).one()
    org, campaign, last = row.organization_id, row.id, row.last
    day = last.replace(hour=0, minute=0, second=0, microsecond=0)
    windows: list[tuple[str, dict[str, Any]]] = [
        ("whole campaign", {}),
        ("last 7 days (open end)", {"start": day - dt.timedelta(days=6)}),
        ("one UTC day", {"start": day - dt.timedelta(days=3), "end": day - dt.timedelta(days=2)}),
        (
            "unaligned 30 days",
            {
                "start": day - dt.timedelta(days=30, minutes=-17),
                "end": day - dt.timedelta(minutes=43),
            },
        ),
        ("whole, series day Europe/Paris", {"interval": "day"}),
        ("whole, series week", {"interval": "week"}),
        ("last 7 days, series hour", {"start": day - dt.timedelta(days=6), "interval": "hour"}),
        ("whole, series day Asia/Kolkata", {"interval": "day", "tz": "Asia/Kolkata"}),
        (
            "last 7 days, series hour Asia/Kolkata",
            {"start": day - dt.timedelta(days=6), "interval": "hour", "tz": "Asia/Kolkata"},
        ),
        ("whole, series week Asia/Kathmandu", {"interval": "week", "tz": "Asia/Kathmandu"}),
    ]

    async def stats(raw: bool, kwargs: dict[str, Any]) -> None:
        async with sessionmaker() as session:
            if raw:
                await session.execute(text("DELETE FROM rollup_state"))
            await campaign_stats(session, organization_id=org, campaign_id=campaign, **kwargs)
            await session.rollback()

    print(f"\n{'stats window':38} {'rollups':>9} {'raw':>9}")
    for label, kwargs in windows if with_stats else ():
        fast = await median(repeat, lambda k=kwargs: stats(False, k))  # type: ignore[misc]
        if baselines:
            slow = await median(1, lambda k=kwargs: stats(True, k))  # type: ignore[misc]
            print(f"{label:38} {fast * 1000:7.0f}ms {slow * 1000:7.0f}ms", flush=True)
        else:
            print(f"{label:38} {fast * 1000:7.0f}ms {'-':>9}", flush=True)

    if not with_attribution:
        await engine.dispose()
        return
    # The backfill of the stored credits (passerelle credits refresh), timed: every
    # conversion without stored credits, in batches.
    t0 = time.perf_counter()
    done = await refresh(engine)
    elapsed = time.perf_counter() - t0
    async with sessionmaker() as session:
        rows, size, settled = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM conversion_credits),"
                    " pg_size_pretty(pg_total_relation_size('conversion_credits')),"
                    " (SELECT count(credits_n) FROM conversions)"
                )
            )
        ).one()
    print(
        f"\nstored credits backfill (passerelle credits refresh): {done:,} conversions looked"
        f" at in {elapsed:.1f} s; {settled:,} settled, {rows:,} touch rows, {size}",
        flush=True,
    )

    async def attribution(model: str, crediting: str, kwargs: dict[str, Any]) -> None:
        async with sessionmaker() as session:
            await attribution_report(
                session,
                organization_id=org,
                campaign_id=campaign,
                model=model,  # type: ignore[arg-type]
                crediting=crediting,  # type: ignore[arg-type]
                **kwargs,
            )

    spans: tuple[tuple[str, dict[str, Any]], ...] = (
        ("last day", {"start": day - dt.timedelta(days=1), "end": day}),
        ("7 days", {"start": day - dt.timedelta(days=7), "end": day}),
        ("whole", {}),
    )
    header = "attribution (live | stored | python)" if baselines else "attribution (live | stored)"
    width = 28 if baselines else 19
    print(f"\n{header:38} " + " ".join(f"{s:>{width}}" for s, _ in spans))
    for model in MODELS:
        figures = []
        for span, kwargs in spans:
            # The live whole campaign once: a minute or more at full size.
            times = repeat if kwargs else 1
            live = (
                await median(times, lambda m=model, k=kwargs: attribution(m, "live", k))  # type: ignore[misc]
                if with_live
                else float("nan")
            )
            stored = await median(repeat, lambda m=model, k=kwargs: attribution(m, "sql", k))  # type: ignore[misc]
            figure = f"{live:7.2f}s |{stored:7.2f}s"
            # The Python reference over the whole campaign: minutes, once (last_touch).
            if baselines and (span != "whole" or model == MODELS[0]):
                slow = await median(1, lambda m=model, k=kwargs: attribution(m, "python", k))  # type: ignore[misc]
                figure += f" |{slow:7.2f}s"
            elif baselines:
                figure += " |       -"
            figures.append(figure)
        print(f"{model:38} " + " ".join(f"{f:>{width}}" for f in figures), flush=True)
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=10_000_000)
    parser.add_argument("--conversions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--database-url", help="reuse this filled database (no load)")
    parser.add_argument("--no-attribution", action="store_true", help="time stats only")
    parser.add_argument("--no-stats", action="store_true", help="time attribution only")
    parser.add_argument(
        "--no-live", action="store_true", help="skip the live attribution (stored credits only)"
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the raw stats and the Python attribution (minutes at full size)",
    )
    args = parser.parse_args()
    what = {
        "with_attribution": not args.no_attribution,
        "with_stats": not args.no_stats,
        "with_live": not args.no_live,
        "baselines": not args.no_baselines,
    }
    if args.database_url:
        # A database filled by an earlier version: its schema brought to the head first
        # (the stored credits' table; their backfill is timed by measure()).
        migrate.upgrade(args.database_url)
        asyncio.run(measure(args.database_url, args.repeat, skip_rebuild=True, **what))
        return
    name = f"passerelle_bench_reports_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        load(libpq_url(url), args.scans, args.conversions, args.days, args.tags)
        asyncio.run(measure(url, args.repeat, skip_rebuild=False, **what))
    finally:
        if args.keep:
            print(f"kept: --database-url {url}")
        else:
            migrate.drop_database(url)


if __name__ == "__main__":
    main()
