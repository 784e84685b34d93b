"""Bulk import of locations: how long the whole import service takes (parse, validate
every row, upsert in chunks) for N rows, first as creations then as updates.

    python benchmarks/locations_import.py [--rows 10000] [--format csv|geojson]

Creates a throwaway database on PASSERELLE_TEST_DATABASE_URL (or the local server) and
drops it at the end. Prints seconds and rows/s for the create pass and the update pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns import migrate
from campaigns.db import make_engine, make_sessionmaker, unit_of_work
from campaigns.services.locations import ImportFormat, import_locations
from campaigns.services.organizations import create_organization

SERVER_URL = os.environ.get(
    "PASSERELLE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def make_file(rows: int, fmt: ImportFormat, seed: int) -> str:
    """``rows`` stores scattered over metropolitan France, half with a radius."""
    rng = random.Random(seed)
    stores = [
        (f"Store {i}", f"S-{i:06d}", rng.uniform(43.0, 50.5), rng.uniform(-1.5, 7.5), i)
        for i in range(rows)
    ]
    if fmt == "csv":
        lines = ["name,external_id,lat,lon,radius_m,address,timezone"]
        lines += [
            f"{name},{ext},{lat:.6f},{lon:.6f},{100 + i % 400 if i % 2 else ''},"
            f"{i} Grande Rue,Europe/Paris"
            for name, ext, lat, lon, i in stores
        ]
        return "\n".join(lines) + "\n"
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
            "properties": {
                "name": name,
                "external_id": ext,
                "radius_m": 100 + i % 400 if i % 2 else None,
                "address": f"{i} Grande Rue",
                "timezone": "Europe/Paris",
            },
        }
        for name, ext, lat, lon, i in stores
    ]
    return json.dumps({"type": "FeatureCollection", "features": features})


async def run(url: str, rows: int, fmt: ImportFormat) -> None:
    engine = make_engine(url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessionmaker) as session:
            organization, _ = await create_organization(session, name="Benchmark")
            organization_id = organization.id
        for label, seed in (("create", 1), ("update", 2)):
            content = make_file(rows, fmt, seed)
            start = time.perf_counter()
            async with unit_of_work(sessionmaker) as session:
                summary = await import_locations(
                    session, organization_id=organization_id, content=content, fmt=fmt
                )
            elapsed = time.perf_counter() - start
            print(
                f"{label}: {rows} rows ({fmt}, {len(content) / 1e6:.1f} MB) in {elapsed:.2f} s "
                f"= {rows / elapsed:,.0f} rows/s (created {summary.created}, "
                f"updated {summary.updated})"
            )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--format", choices=("csv", "geojson"), default="csv")
    args = parser.parse_args()
    name = f"passerelle_bench_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        asyncio.run(run(url, args.rows, args.format))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
