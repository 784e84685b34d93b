"""Report rollups: ``stats`` read through the rollups equals ``stats`` read from the raw
rows, after random inserts, late (replayed) scans, rebuilds and concurrent workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.db import libpq_url, unit_of_work
from campaigns.models import Tag
from campaigns.scanning.record import BOT_REASONS, ScanRecord
from campaigns.scanning.writer import ScanWriter
from campaigns.schemas import RefundCreate
from campaigns.services.conversions import record_refund
from campaigns.services.rollups import floor_hour, next_pass_at, rebuild, rollup_pass
from campaigns.services.stats import campaign_stats
from tests.fixtures.factories import (
    make_campaign,
    make_conversion,
    make_org,
    make_tag,
    scan_record,
    write_scans,
)

NOWHERE = "postgresql://postgres@127.0.0.1:9/nowhere"
ROOT = Path(__file__).resolve().parents[2]
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _visitor(day: dt.date, n: int) -> bytes:
    # Visitor ids are salted per UTC day: one id never spans two days.
    return f"{day.isoformat()}-{n:05d}".encode()[:16].ljust(16, b".")


def _random_scan(rng: random.Random, tags: list[Tag], at: dt.datetime) -> ScanRecord:
    kind = rng.random()
    overrides: dict[str, Any] = {
        "scanned_at": at,
        "visitor_id": _visitor(at.astimezone(dt.UTC).date(), rng.randrange(12)),
        "channel": rng.choice(("qr", "nfc")),
        "device_type": rng.choice(("mobile", "tablet", None)),
        "os": rng.choice(("iOS", "Android", None)),
        "country": rng.choice(("FR", "DE", None)),
        "burst": rng.random() < 0.1,
        # Staff's scans (issue 11), bots and flagged taps among them: in no figure but
        # internal_scans, rolled up or not.
        "internal": rng.random() < 0.08,
    }
    if kind < 0.15:
        overrides.update(is_bot=True, bot_reason=rng.choice(BOT_REASONS))
    elif kind < 0.2:
        overrides.update(nfc_verification=rng.choice(("valid", "replayed", "invalid")))
    elif kind < 0.23:
        overrides.update(visitor_id=None)
    return scan_record(rng.choice(tags), **overrides)


async def _setup(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int, list[Tag]]:
    async with unit_of_work(sessionmaker) as session:
        org = await make_org(session)
        campaign = await make_campaign(session, organization_id=org.id)
        tags = [
            await make_tag(session, organization_id=org.id, campaign_id=campaign.id, label=f"t{i}")
            for i in range(3)
        ]
    return org.id, campaign.id, tags


async def _convert(
    sessionmaker: async_sessionmaker[AsyncSession],
    rng: random.Random,
    org_id: int,
    scans: list[ScanRecord],
    count: int,
) -> None:
    async with unit_of_work(sessionmaker) as session:
        for _ in range(count):
            scan = rng.choice(scans)
            value = rng.choice(
                (
                    None,
                    {"amount_minor": 1000, "currency": "EUR"},
                    {"amount_minor": 7, "currency": "USD"},
                )
            )
            conversion = await make_conversion(
                session,
                organization_id=org_id,
                click_id=scan.click_id,
                value=value,
                occurred_at=scan.scanned_at + dt.timedelta(minutes=rng.randrange(0, 600)),
            )
            if value is not None and rng.random() < 0.2:
                await record_refund(
                    session,
                    organization_id=org_id,
                    conversion_id=conversion.id,
                    data=RefundCreate(
                        amount_minor=1,
                        external_id=f"refund-{os.urandom(4).hex()}",
                        refunded_at=conversion.occurred_at + dt.timedelta(hours=1),
                    ),
                )


def _windows(rng: random.Random, base: dt.datetime) -> list[tuple[Any, Any]]:
    """Open, hour-aligned, unaligned, one-day and tail windows around the data."""
    windows: list[tuple[Any, Any]] = [
        (None, None),
        (base, None),
        (None, base + dt.timedelta(days=2)),
    ]
    for _ in range(6):
        a = base + dt.timedelta(minutes=rng.randrange(-600, 4 * 24 * 60))
        b = a + dt.timedelta(minutes=rng.randrange(1, 3 * 24 * 60))
        windows.append((a, b))
        windows.append((floor_hour(a), floor_hour(b) + dt.timedelta(hours=1)))
    windows.append((base + dt.timedelta(days=1), base + dt.timedelta(days=2)))
    windows.append((_now() - dt.timedelta(hours=3), None))
    return windows


async def _stats(
    sessionmaker: async_sessionmaker[AsyncSession],
    org_id: int,
    campaign_id: int,
    *,
    raw: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    async with sessionmaker() as session:
        if raw:  # reports read raw rows when the rollups were never built
            await session.execute(text("DELETE FROM rollup_state"))
        stats = await campaign_stats(
            session, organization_id=org_id, campaign_id=campaign_id, **kwargs
        )
        await session.rollback()
    return stats.model_dump()


async def _assert_rollups_equal_raw(
    sessionmaker: async_sessionmaker[AsyncSession],
    rng: random.Random,
    org_id: int,
    campaign_id: int,
    base: dt.datetime,
) -> None:
    async with sessionmaker() as session:
        assert await session.scalar(text("SELECT count(*) FROM rollup_state")) == 1
        assert await session.scalar(text("SELECT count(*) FROM scan_rollups")) > 0
    for start, end in _windows(rng, base):
        for interval, tz in (
            [(None, None), ("hour", "UTC"), ("hour", "Europe/Paris")]
            + [("day", zone) for zone in ZONES]
            + [("week", "America/New_York")]
            # Buckets starting on UTC quarter hours (quarter-hour rollups).
            + [("hour", "Asia/Kolkata"), ("hour", "Asia/Kathmandu"), ("day", "Asia/Kathmandu")]
            + [("week", "America/St_Johns")]
        ):
            kwargs = {"start": start, "end": end, "interval": interval, "tz": tz}
            expected = await _stats(sessionmaker, org_id, campaign_id, raw=True, **kwargs)
            got = await _stats(sessionmaker, org_id, campaign_id, raw=False, **kwargs)
            assert got == expected, kwargs


async def test_rollups_equal_raw_after_random_inserts_and_passes(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(20261206)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=3, hours=7)
    old = [
        _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(3 * 24 * 60)))
        for _ in range(250)
    ]
    await write_scans(database_url, tmp_path, old)
    await _convert(sessionmaker, rng, org_id, old, 40)

    first = await rollup_pass(engine)
    assert first is not None and first.rebuilt
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)
    everything = await _stats(sessionmaker, org_id, campaign_id, raw=False)
    internal = [s for s in old if s.internal]
    assert everything["internal_scans"] == len(internal) > 0
    human = [
        s for s in old if not (s.internal or s.is_bot) and s.nfc_verification in (None, "valid")
    ]
    assert everything["scans"] == len(human)

    # Scans arriving now (some in the unfolded tail) and conversions reported late for
    # old scans: the next pass folds them.
    recent = [
        _random_scan(rng, tags, _now() - dt.timedelta(seconds=rng.randrange(4 * 60)))
        for _ in range(60)
    ]
    await write_scans(database_url, tmp_path, recent)
    await _convert(sessionmaker, rng, org_id, old + recent, 20)
    second = await rollup_pass(engine)
    assert second is not None and not second.rebuilt
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)

    # The figures do come from the rollups: altered rollups show in every part.
    async with engine.begin() as conn:
        for table, column in (
            ("scan_rollups", "scans"),
            ("scan_rollups", "first_visitors"),
            ("scan_rollups", "internal_scans"),
            ("scan_day_rollups", "scans"),
            ("scan_day_rollups", "internal_scans"),
            ("scan_day_rollups", "visitors"),
            ("campaign_rollups", "scans"),
            ("campaign_rollups", "first_visitors"),
            ("campaign_rollups", "last_visitors"),
            ("scan_breakdown_rollups", "scans"),
            ("conversion_rollups", "conversions"),
            ("conversion_day_rollups", "conversions"),
            ("campaign_conversion_rollups", "conversions"),
            ("conversion_breakdown_rollups", "conversions"),
        ):
            await conn.execute(text(f"UPDATE {table} SET {column} = {column} + 1000"))  # noqa: S608 - constants and bound parameters only
    kwargs = {"interval": "day", "tz": "Europe/Paris"}
    got = await _stats(sessionmaker, org_id, campaign_id, raw=False, **kwargs)
    expected = await _stats(sessionmaker, org_id, campaign_id, raw=True, **kwargs)
    for figure in ("scans", "unique_visitors", "conversions", "internal_scans"):
        assert got[figure] > expected[figure] + 1000
    assert got["by_tag"][0]["scans"] > expected["by_tag"][0]["scans"]
    assert got["breakdowns"]["os"][0]["scans"] > expected["breakdowns"]["os"][0]["scans"]
    assert (
        got["breakdowns"]["os"][0]["conversions"] > expected["breakdowns"]["os"][0]["conversions"]
    )
    changed = [
        (a["scans"] - b["scans"], a["unique_visitors"] - b["unique_visitors"])
        for a, b in zip(got["series"], expected["series"], strict=True)
    ]
    assert all(scans > 0 for scans, _ in changed[:-1])
    assert sum(visitors for _, visitors in changed) > 1000

    # Series in a zone with a 30-minute offset read the quarter-hour rows.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE campaign_quarter_rollups SET scans = scans + 1000,"
                " first_visitors = first_visitors + 1000, last_visitors = last_visitors + 1000,"
                " hour_visitors = hour_visitors + 1000"
            )
        )
        await conn.execute(
            text("UPDATE campaign_conversion_quarter_rollups SET conversions = conversions + 1000")
        )
    for interval in ("day", "hour"):
        kwargs = {"interval": interval, "tz": "Asia/Kolkata"}
        got = await _stats(sessionmaker, org_id, campaign_id, raw=False, **kwargs)
        expected = await _stats(sessionmaker, org_id, campaign_id, raw=True, **kwargs)
        quarter_changed = [
            (a["scans"] - b["scans"], a["unique_visitors"] - b["unique_visitors"])
            for a, b in zip(got["series"], expected["series"], strict=True)
        ]
        assert sum(scans for scans, _ in quarter_changed) > 1000
        assert sum(visitors for _, visitors in quarter_changed) > 1000
        assert got["series"][0]["start"].minute == 0  # local hours, UTC half hours
        assert sum(p["conversions"] for p in got["series"]) > sum(
            p["conversions"] for p in expected["series"]
        )


async def test_late_scans_replayed_from_the_spool_are_folded(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=2)
    await write_scans(
        database_url,
        tmp_path,
        [
            _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(2000)))
            for _ in range(80)
        ],
    )
    assert await rollup_pass(engine) is not None

    # Scans of two days ago, answered during an outage and written only now.
    late = [
        _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(2000))) for _ in range(40)
    ]
    down = ScanWriter(NOWHERE, tmp_path, connect_timeout_s=0.2, retry_interval_s=60)
    await down.start()
    try:
        for record in late:
            await down.submit(record)
    finally:
        await down.stop()
    # The merchant reported an order of a spooled click before the scan was written.
    await _convert(sessionmaker, rng, org_id, late[:5], 5)
    replayer = ScanWriter(libpq_url(database_url), tmp_path)
    assert await replayer.replay_spools() == len(late)
    await replayer.stop()
    async with sessionmaker() as session:
        assert await session.scalar(text("SELECT count(*) FROM rollup_dirty")) > 0

    second = await rollup_pass(engine)
    assert second is not None and second.days >= 1
    async with sessionmaker() as session:
        assert await session.scalar(text("SELECT count(*) FROM rollup_dirty")) == 0
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)


async def test_rebuild_after_a_bulk_load_and_per_campaign(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=5)
    assert await rollup_pass(engine) is not None  # builds empty rollups
    # A bulk load of old scans: out of the worker's look-back, so stale until a rebuild.
    bulk = [
        _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(3000)))
        for _ in range(120)
    ]
    await write_scans(database_url, tmp_path, bulk)
    await _convert(sessionmaker, rng, org_id, bulk, 15)
    assert await rebuild(engine, campaign_id=campaign_id) >= 2
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)
    # A full rebuild gives the same rows (idempotent).
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT * FROM scan_rollups ORDER BY 1, 2, 3"))).all()
    await rebuild(engine)
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT * FROM scan_rollups ORDER BY 1, 2, 3"))).all()
    assert after == before
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)


async def test_two_concurrent_workers(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=1)
    scans = [
        _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(1500)))
        for _ in range(150)
    ]
    await write_scans(database_url, tmp_path, scans)
    await _convert(sessionmaker, rng, org_id, scans, 20)
    assert await rollup_pass(engine) is not None
    more = [
        _random_scan(rng, tags, _now() - dt.timedelta(seconds=rng.randrange(100)))
        for _ in range(50)
    ]
    await write_scans(database_url, tmp_path, more)
    results = await asyncio.gather(rollup_pass(engine), rollup_pass(engine), rebuild(engine))
    # The advisory lock lets one pass run at a time; a pass finding it taken skips.
    assert any(r is not None for r in results[:2])
    assert await rollup_pass(engine) is not None
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PASSERELLE_")}
    env.update(PASSERELLE_DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_rebuild_command(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=2)
    await write_scans(
        database_url,
        tmp_path,
        [
            _random_scan(rng, tags, base + dt.timedelta(minutes=rng.randrange(2 * 24 * 60)))
            for _ in range(60)
        ],
    )
    one = await asyncio.to_thread(
        _cli, database_url, "rollups", "rebuild", "--campaign", str(campaign_id)
    )
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"rollups rebuilt for campaign {campaign_id}: ")
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM scan_rollups")) > 0
        # A campaign's rebuild leaves the first full build to the worker.
        assert await conn.scalar(text("SELECT count(*) FROM rollup_state")) == 0
    every = await asyncio.to_thread(_cli, database_url, "rollups", "rebuild")
    assert every.returncode == 0, every.stderr
    assert every.stdout.startswith("rollups rebuilt for every campaign: ")
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)


def test_passes_are_spaced_by_their_cost() -> None:
    """A cheap pass waits the configured interval after its start; a pass that took 3 s
    (a busy day) waits nine times that after its end, so the rollups hold the database
    at most a tenth of the time."""
    t0 = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    ten = dt.timedelta(seconds=10)
    assert next_pass_at(t0, t0 + dt.timedelta(seconds=0.2), ten) == t0 + ten
    assert next_pass_at(t0, t0 + dt.timedelta(seconds=3), ten) == t0 + dt.timedelta(seconds=30)
    assert next_pass_at(t0, t0, dt.timedelta(seconds=0.5)) == t0 + dt.timedelta(seconds=0.5)


async def test_paced_passes_share_one_schedule(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
) -> None:
    """The pacing is the deployment's, not a process's: after a paced pass, a worker of
    any process skips until ``rollup_state.next_pass_at`` (the pass's start plus the
    interval, or nine times its duration after its end); an unpaced pass (the CLI, a
    purge) still runs; once the time has come a paced pass folds the new scans."""
    rng = random.Random(4)
    org_id, campaign_id, tags = await _setup(sessionmaker)
    base = floor_hour(_now()) - dt.timedelta(days=1)
    await write_scans(database_url, tmp_path, [_random_scan(rng, tags, _now()) for _ in range(30)])
    hour = dt.timedelta(hours=1)
    assert await rollup_pass(engine, interval=hour) is not None
    async with engine.connect() as conn:
        state = (
            await conn.execute(text("SELECT last_pass_at, next_pass_at FROM rollup_state"))
        ).one()
    assert state.next_pass_at >= state.last_pass_at + hour
    # Another process's worker, whatever its own interval, waits for that time.
    assert await rollup_pass(engine, interval=dt.timedelta(seconds=1)) is None
    more = [_random_scan(rng, tags, _now()) for _ in range(20)]
    await write_scans(database_url, tmp_path, more)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE rollup_state SET next_pass_at = now() - interval '1 s'"))
    paced = await rollup_pass(engine, interval=hour)
    assert paced is not None and paced.days >= 1
    await _assert_rollups_equal_raw(sessionmaker, rng, org_id, campaign_id, base)
    # The schedule is in the future again; an unpaced pass ignores it.
    assert await rollup_pass(engine, interval=dt.timedelta(seconds=1)) is None
    assert await rollup_pass(engine) is not None
