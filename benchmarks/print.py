"""QR artwork throughput: codes per second for PNG, SVG and PDF, in this process and
through the render pool (one worker per CPU), next to a pure-encoding baseline
(``qr_matrix``: segmentation, Reed-Solomon, mask selection) measured in the same run.

    python benchmarks/print.py                 # 300 codes per case
    python benchmarks/print.py --count 20      # smoke run

Each code is distinct (a fresh tag code), so the render cache plays no part. For
reference, qrcode encodes about 250 codes/s per core with automatic masking.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns.payloads import artwork, qr
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.links import new_code, qr_url

ORIGIN = "https://go.example.com"
STYLES: dict[str, dict[str, Any]] = {
    "png": {"fmt": "png", "size_mm": 30, "dpi": 300, "caption": "Scan me"},
    "svg": {"fmt": "svg", "size_mm": 30, "caption": "Scan me"},
    "pdf": {"fmt": "pdf", "size_mm": 30, "caption": "Scan me"},
}


def _contents(count: int) -> list[str]:
    return [qr_url(ORIGIN, new_code()) for _ in range(count)]


def _rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def encode_baseline(count: int) -> float:
    contents = _contents(count)
    started = time.perf_counter()
    for content in contents:
        qr.qr_matrix(content, ecc="M")
    return _rate(count, started)


def one_process(fmt: str, count: int) -> float:
    contents = _contents(count)
    style = artwork.check_style(contents[0], artwork.Style(**STYLES[fmt]))
    started = time.perf_counter()
    for content in contents:
        artwork.render_artwork(content, style)
    return _rate(count, started)


async def through_pool(pool: RenderPool, fmt: str, count: int) -> float:
    contents = _contents(count)
    style = artwork.check_style(contents[0], artwork.Style(**STYLES[fmt]))
    started = time.perf_counter()
    # Owners round-robin: spread the jobs over a few so no per-owner bound is hit.
    await asyncio.gather(
        *(
            pool.run(i % pool.queue_total, artwork.render_artwork, content, style)
            for i, content in enumerate(contents)
        )
    )
    return _rate(count, started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="codes per case")
    args = parser.parse_args()
    count = args.count
    pool = RenderPool(queue_per_owner=count, queue_total=count)
    try:
        await pool.run(0, qr.qr_version, "warm up the workers")  # start the processes
        print(f"{count} distinct codes per case, {pool.workers} pool workers")
        print(f"{'case':<28}{'codes/s':>10}")
        print(f"{'encode only (qr_matrix)':<28}{encode_baseline(count):>10.1f}")
        for fmt in STYLES:
            print(f"{fmt + ', one process':<28}{one_process(fmt, count):>10.1f}")
            rate = await through_pool(pool, fmt, count)
            print(f"{fmt + ', pool':<28}{rate:>10.1f}")
    finally:
        pool.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
