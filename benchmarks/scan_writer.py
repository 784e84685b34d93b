"""Throughput of the group-commit scan writer alone (no HTTP): how many scans per second
one process can make durable in PostgreSQL, at a given number of concurrent submitters.

    python benchmarks/scan_writer.py [--scans 100000] [--concurrency 256]

Creates a throwaway database on PASSERELLE_TEST_DATABASE_URL (or the local server) and
drops it at the end. Prints scans/s, batches, mean batch size and commit latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns import migrate
from campaigns.db import libpq_url
from campaigns.scanning.links import new_click_id
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.writer import ScanWriter

SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def record() -> ScanRecord:
    return ScanRecord(
        click_id=new_click_id(),
        organization_id=1,
        campaign_id=1,
        tag_id=1,
        scanned_at=dt.datetime.now(dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://shop.example.com/landing?utm_medium=qr&pcid=abcdefghijklmnop",
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Safari/604.1",
        device_type="mobile",
        os="iOS",
        browser="Mobile Safari",
        is_bot=False,
        ip_truncated="203.0.113.0",
        visitor_id=os.urandom(16),
    )


async def run(conninfo: str, scans: int, concurrency: int, batch_size: int) -> None:
    writer = ScanWriter(conninfo, Path(tempfile.mkdtemp()), batch_size=batch_size)
    await writer.start()
    remaining = scans

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await writer.submit(record())

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stats = writer.stats
    await writer.stop()
    sizes = stats.batch_sizes or [0]
    print(
        f"{scans} scans, {concurrency} concurrent: {scans / elapsed:,.0f} scans/s durable; "
        f"{stats.batches} commits, mean batch {statistics.mean(sizes):.0f}, "
        f"commit p50 {statistics.median(stats.commit_seconds) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    name = f"passerelle_bench_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        asyncio.run(run(libpq_url(url), args.scans, args.concurrency, args.batch_size))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
