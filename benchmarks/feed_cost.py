"""What the live feed costs the group commit: CPU µs per scan with and without it.

The request side of a scan does not change with the feed; its cost is in the writer (one
``INSERT INTO feed_batches`` per batch, sent with the ``COMMIT``; ``FeedHub.committed``)
and in the hub (one ``pg_notify`` per batch on its own connection). This script drives a
:class:`~campaigns.scanning.writer.ScanWriter` directly with ``--concurrency`` scans in
flight, alternating passes with the feed (hook and a running hub, no listener) and
without it (the hook replaced by a no-op), and prints per pass the process's CPU µs per
scan, the PostgreSQL backends' CPU µs per scan (from ``/proc``; 10 ms ticks, so use many
scans) and the mean batch size.

    python benchmarks/feed_cost.py [--scans 20000] [--concurrency 64] [--passes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scan_path_cpu import SERVER_URL, backend_cpu_s  # noqa: E402
from campaigns import migrate  # noqa: E402
from campaigns.db import libpq_url  # noqa: E402
from campaigns.feed.hub import FeedHub  # noqa: E402
from campaigns.scanning import writer as writer_module  # noqa: E402
from campaigns.scanning.links import new_click_id  # noqa: E402
from campaigns.scanning.record import ScanRecord  # noqa: E402
from campaigns.scanning.writer import ScanWriter  # noqa: E402


def scan(campaign_id: int) -> ScanRecord:
    return ScanRecord(
        click_id=new_click_id(),
        organization_id=1,
        campaign_id=campaign_id,
        tag_id=campaign_id * 10,
        scanned_at=dt.datetime.now(dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://shop.example.com/p?pcid=x",
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
        device_type="mobile",
        os="iOS",
        browser="Mobile Safari",
        ip_truncated="203.0.113.0",
        visitor_id=os.urandom(16),
    )


async def one_pass(url: str, data_dir: Path, n: int, concurrency: int, feed: bool) -> str:
    conninfo = libpq_url(url)
    writer = ScanWriter(conninfo, data_dir / ("feed" if feed else "plain"))
    hub = FeedHub(conninfo) if feed else None
    original = writer_module.record_scans, writer_module.scan_batch_statement
    if hub is not None:
        writer.on_commit = hub.committed
        await hub.start()
    else:

        async def no_feed(*_: Any) -> None:
            return None

        # The group commit sends its feed row with the COMMIT (scan_batch_statement);
        # without it, the COMMIT goes alone: the same round trips, no row.
        writer_module.record_scans = no_feed  # type: ignore[assignment]
        writer_module.scan_batch_statement = lambda *_: None  # type: ignore[assignment]
    await writer.start()
    try:
        records = [scan(1 + i % 5) for i in range(n + 500)]
        for record in records[:500]:  # warm-up: connection, prepared statements
            await writer.submit(record)
        queue = iter(records[500:])
        batches0 = writer.stats.batches

        async def worker() -> None:
            for record in queue:
                await writer.submit(record)

        database = make_url(url).database or ""
        db0 = await asyncio.to_thread(backend_cpu_s, database)
        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        spent = time.process_time() - t0
        await asyncio.sleep(0.1)
        db = await asyncio.to_thread(backend_cpu_s, database) - db0
        batches = writer.stats.batches - batches0
    finally:
        await writer.stop()
        if hub is not None:
            await hub.stop()
        writer_module.record_scans, writer_module.scan_batch_statement = original
    return (
        f"{'with feed' if feed else 'no feed  '}: process {spent / n * 1e6:6.1f} µs   "
        f"PostgreSQL backends {db / n * 1e6:6.1f} µs   mean batch {n / max(batches, 1):5.1f}"
    )


async def main_async(args: argparse.Namespace, url: str) -> None:
    print(f"# {args.scans} scans per pass, concurrency {args.concurrency} (CPU µs per scan)")
    with tempfile.TemporaryDirectory() as data_dir:
        for _ in range(args.passes):
            for feed in (False, True):
                print(await one_pass(url, Path(data_dir), args.scans, args.concurrency, feed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    name = f"passerelle_feed_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        asyncio.run(main_async(args, url))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
