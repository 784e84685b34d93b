"""Stored attribution credits (``campaigns/services/credits.py``) give exactly the live
report: at the default parameters, reports summing settled conversions' stored credits
(``crediting="sql"``) equal the live SQL path (``crediting="live"``) and the Python
reference models (``crediting="python"``) on random data, for every model, grouping and
several windows, with part of the conversions stale or unsettled, and after what changes
journeys: late scans replayed from the spool, consents answered later, erasure (scans
deleted, conversions unlinked), the retention purge's scan deletion, refunds added."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.attribution import MODELS
from campaigns.crediting import credit_conversions
from campaigns.db import libpq_url, unit_of_work
from campaigns.services.attribution import GROUP_BYS, attribution_report
from campaigns.services.credits import SETTLE_MARGIN, late_scans_conversions, refresh
from campaigns.services.privacy import erase
from tests.services.test_attribution_crediting import DAY, T0, _random_world

#: Far after every scan of the random worlds: every conversion is settled.
LATER = T0 + 400 * DAY
#: (start day, end day) of the windows compared (None: open).
WINDOWS = [(None, None), (30, 60), (55, None), (0, 12)]


async def _compare(
    sessionmaker: async_sessionmaker[AsyncSession], world: dict[str, Any], *, every: bool = False
) -> int:
    """Compare the three paths; ``every``: every (model, grouping, window, campaign),
    else a rotation meeting every model and grouping. Returns the reports with rows."""
    compared = 0
    cases = [
        (campaign, window, model, group_by)
        for campaign in world["campaigns"]
        for window in WINDOWS
        for model in MODELS
        for group_by in GROUP_BYS
    ]
    if not every:
        cases = cases[:: len(GROUP_BYS) + 1]
    async with sessionmaker() as session:
        for campaign, (first_day, last_day), model, group_by in cases:
            kwargs: dict[str, Any] = {
                "organization_id": world["org"],
                "campaign_id": campaign,
                "model": model,
                "group_by": group_by,
                "start": None if first_day is None else T0 + first_day * DAY,
                "end": None if last_day is None else T0 + last_day * DAY,
            }
            stored = await attribution_report(session, crediting="sql", **kwargs)
            live = await attribution_report(session, crediting="live", **kwargs)
            reference = await attribution_report(session, crediting="python", **kwargs)
            assert stored.model_dump() == live.model_dump(), str(kwargs)
            assert live.model_dump() == reference.model_dump(), str(kwargs)
            compared += bool(reference.rows)
    return compared


async def _settled(engine: AsyncEngine, org: int) -> tuple[int, int]:
    """(conversions with stored credits, all conversions) of ``org``."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(credits_n), count(*) FROM conversions WHERE organization_id = :o"
                ),
                {"o": org},
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_stored_credits_equal_live_and_python(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    world = await _random_world(sessionmaker, 11)
    assert await refresh(engine, now=LATER, batch_size=50) > 0
    settled, total = await _settled(engine, world["org"])
    assert settled == total
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT count(*) FROM conversion_credits"))).scalar_one()
        journeys = (
            await conn.execute(text("SELECT count(*) FROM conversions WHERE credits_n > 0"))
        ).scalar_one()
    assert rows > journeys > 100
    assert await _compare(sessionmaker, world, every=True) > 60


async def test_part_stale_part_stored(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """Half the conversions stale (live), half stored; then refunds added after storing."""
    world = await _random_world(sessionmaker, 12)
    await refresh(engine, now=LATER)
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text(
                "SELECT passerelle_credits_stale("
                "ARRAY(SELECT id FROM conversions WHERE id % 2 = 0))"
            )
        )
    settled, total = await _settled(engine, world["org"])
    assert 0 < settled < total
    assert await _compare(sessionmaker, world) > 15
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text(
                "INSERT INTO refunds (organization_id, conversion_id, external_id, amount_minor,"
                " refunded_at, fingerprint) SELECT organization_id, id, 'late-' || id, 1,"
                " occurred_at + interval '2 days', '\\x00' FROM conversions"
                " WHERE value_amount_minor > 1 AND organization_id = :org"
            ),
            {"org": world["org"]},
        )
    assert await _compare(sessionmaker, world) > 15


async def test_unsettled_conversions_are_credited_live(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """At ``now`` inside the span, conversions whose click scan is younger than the
    settle margin (or in the future) get no stored credits: live, until a later refresh."""
    world = await _random_world(sessionmaker, 13)
    await refresh(engine, now=T0 + 50 * DAY)
    settled, total = await _settled(engine, world["org"])
    assert 0 < settled < total
    async with engine.connect() as conn:
        late = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM conversion_credits cc JOIN scans k"
                    " ON k.click_id ="
                    " (SELECT click_id FROM conversions WHERE id = cc.conversion_id)"
                    " WHERE k.scanned_at > :t"
                ),
                {"t": T0 + 50 * DAY - SETTLE_MARGIN},
            )
        ).scalar_one()
    assert late == 0
    assert await _compare(sessionmaker, world) > 15
    await refresh(engine, now=LATER)
    assert await _settled(engine, world["org"]) == (total, total)
    assert await _compare(sessionmaker, world) > 15


async def _replay(database_url: str, click_ids: list[str]) -> None:
    """What the scan writer's spool replay does after inserting late scans."""
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        async with conn.transaction():
            late = await late_scans_conversions(conn, click_ids)
            await credit_conversions(conn, click_ids, recompute=late)


async def test_late_spooled_scans(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, database_url: str
) -> None:
    """Scans replayed late from the spool, dated before settled conversions' click scans
    of the same visitors (cookie, consented cookie, visitor id the same day), and clicks
    of conversions that had no scan: the replay recomputes what they change."""
    world = await _random_world(sessionmaker, 14)
    await refresh(engine, now=LATER)
    rng = random.Random(14)
    async with unit_of_work(sessionmaker) as session:
        clicks = (
            await session.execute(
                text(
                    "SELECT k.campaign_id, k.tag_id, k.scanned_at, k.visitor_id, k.cookie_id,"
                    " vc.cookie_id AS consented FROM conversions c JOIN scans k"
                    " ON k.click_id = c.click_id AND k.organization_id = c.organization_id"
                    " LEFT JOIN visitor_cookie_consents vc ON vc.click_id = k.click_id"
                    " WHERE c.organization_id = :org ORDER BY c.id"
                ),
                {"org": world["org"]},
            )
        ).all()
        late = []
        for i, k in enumerate(rng.sample(clicks, 40)):
            late.append(
                {
                    "click_id": f"late-{i}",
                    "org": world["org"],
                    "campaign": k.campaign_id,
                    "tag": k.tag_id,
                    # Earlier the same UTC day when possible, so visitor ids match too.
                    "at": max(
                        k.scanned_at - dt.timedelta(minutes=rng.uniform(1, 600)),
                        k.scanned_at.replace(hour=0, minute=0, second=0, microsecond=0),
                    ),
                    "visitor": k.visitor_id,
                    "cookie": k.cookie_id or (k.consented if i % 2 else None),
                }
            )
        # And the scans of the conversions whose click id named no scan.
        unknown = (
            await session.execute(
                text(
                    "SELECT click_id, occurred_at FROM conversions WHERE organization_id = :org"
                    " AND click_id LIKE 'unknown-%'"
                ),
                {"org": world["org"]},
            )
        ).all()
        k0 = clicks[0]
        late += [
            {
                "click_id": row.click_id,
                "org": world["org"],
                "campaign": k0.campaign_id,
                "tag": k0.tag_id,
                "at": row.occurred_at - dt.timedelta(hours=1),
                "visitor": k0.visitor_id,
                "cookie": None,
            }
            for row in unknown
        ]
        await session.execute(
            text(
                "INSERT INTO scans (click_id, organization_id, campaign_id, tag_id, scanned_at,"
                " channel, outcome, destination, is_bot, visitor_id, cookie_id) VALUES"
                " (:click_id, :org, :campaign, :tag, :at, 'qr', 'redirect',"
                " 'https://shop.example.com/', false, :visitor, :cookie)"
            ),
            late,
        )
    assert unknown
    # Before the replay's crediting, stored credits are wrong (the test can tell).
    async with sessionmaker() as session:
        kwargs: dict[str, Any] = {
            "organization_id": world["org"],
            "campaign_id": world["campaigns"][0],
            "model": "linear",
        }
        before = await attribution_report(session, crediting="sql", **kwargs)
        truth = await attribution_report(session, crediting="python", **kwargs)
    assert before.model_dump() != truth.model_dump()
    # Replayed with a real "now": the late scans' conversions are all older than the margin.
    await _replay(database_url, [scan["click_id"] for scan in late])
    settled, total = await _settled(engine, world["org"])
    assert settled == total
    assert await _compare(sessionmaker, world, every=True) > 60


async def test_consent_answered_later(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    world = await _random_world(sessionmaker, 15)
    await refresh(engine, now=LATER)
    async with unit_of_work(sessionmaker) as session:
        unconsented = (
            await session.execute(
                text(
                    "SELECT k.click_id FROM scans k WHERE k.organization_id = :org"
                    " AND k.cookie_id IS NULL AND NOT EXISTS (SELECT 1 FROM"
                    " visitor_cookie_consents v WHERE v.click_id = k.click_id)"
                    " AND EXISTS (SELECT 1 FROM conversions c WHERE c.click_id = k.click_id)"
                    " ORDER BY k.id LIMIT 30"
                ),
                {"org": world["org"]},
            )
        ).scalars()
        await session.execute(
            text(
                "INSERT INTO visitor_cookie_consents (click_id, organization_id, cookie_id)"
                " VALUES (:click, :org, :cookie)"
            ),
            [
                {"click": click, "org": world["org"], "cookie": uuid.UUID(int=i % 3 + 1)}
                for i, click in enumerate(unconsented)
            ],
        )
    settled, total = await _settled(engine, world["org"])
    assert settled < total
    assert await _compare(sessionmaker, world) > 15
    await refresh(engine, now=LATER)
    assert await _compare(sessionmaker, world) > 15


async def test_erasure_and_purge(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """The privacy erasure (a visitor cookie, a click id: scans deleted, conversions
    unlinked, consents erased) and a purge-like deletion of old scans."""
    world = await _random_world(sessionmaker, 16)
    await refresh(engine, now=LATER)
    async with unit_of_work(sessionmaker) as session:
        click = (
            await session.execute(
                text(
                    "SELECT c.click_id FROM conversions c JOIN scans k ON k.click_id = c.click_id"
                    " WHERE c.organization_id = :org AND c.credits_n > 1 ORDER BY c.id LIMIT 1"
                ),
                {"org": world["org"]},
            )
        ).scalar_one()
        await erase(session, organization_id=world["org"], click_id=click, visitor=None)
        await erase(
            session, organization_id=world["org"], click_id=None, visitor=str(uuid.UUID(int=2))
        )
    assert await _compare(sessionmaker, world) > 15
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text("DELETE FROM scans WHERE organization_id = :org AND scanned_at < :t"),
            {"org": world["org"], "t": T0 + 20 * DAY},
        )
    assert await _compare(sessionmaker, world) > 15
    await refresh(engine, now=LATER)
    settled, total = await _settled(engine, world["org"])
    assert settled == total
    assert await _compare(sessionmaker, world) > 15


async def test_default_parameters_only(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """Other lookbacks and half-lives never read the stored credits (stored rows made
    wrong on purpose do not change them)."""
    world = await _random_world(sessionmaker, 17)
    await refresh(engine, now=LATER)
    async with sessionmaker() as session:
        kwargs: dict[str, Any] = {
            "organization_id": world["org"],
            "campaign_id": world["campaigns"][0],
            "model": "time_decay",
            "lookback_days": 30,
            "half_life_days": 3.0,
        }
        other = {**kwargs, "model": "linear", "lookback_days": 14}
        before = await attribution_report(session, **kwargs)
        before_other = await attribution_report(session, **other)
        await session.execute(text("UPDATE conversion_credits SET w_time_decay = 0, v_linear = 0"))
        after = await attribution_report(session, **kwargs)
        assert before.model_dump() == after.model_dump()
        after_other = await attribution_report(session, **other)
        assert before_other.model_dump() == after_other.model_dump()
        default = await attribution_report(session, **{**kwargs, "half_life_days": 7.0})
        assert (
            default.totals.conversions
            != (
                await attribution_report(
                    session, crediting="live", **{**kwargs, "half_life_days": 7.0}
                )
            ).totals.conversions
        )
        await session.rollback()


async def test_refresh_command(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, database_url: str
) -> None:
    """``passerelle credits refresh`` (the backfill after the migration) stores every
    settled conversion; the report is unchanged."""
    import asyncio

    from tests.services.test_rollups import _cli

    world = await _random_world(sessionmaker, 18)
    assert (await _settled(engine, world["org"]))[0] == 0
    async with sessionmaker() as session:
        kwargs: dict[str, Any] = {
            "organization_id": world["org"],
            "campaign_id": world["campaigns"][0],
            "model": "position_based",
            "group_by": "location",
        }
        before = await attribution_report(session, **kwargs)
    done = await asyncio.to_thread(_cli, database_url, "credits", "refresh")
    assert done.returncode == 0, done.stderr
    assert "stored credits refreshed" in done.stdout
    settled, _ = await _settled(engine, world["org"])
    # Scans of the random world run to T0 + 100 days, after today: those stay unsettled.
    assert settled > 0
    async with sessionmaker() as session:
        after = await attribution_report(session, **kwargs)
    assert before.model_dump() == after.model_dump()


async def test_retention_purge(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """The retention purge deletes old scans: conversions they were touches of go stale
    (live in reports, equal) and are stored again by the refresh."""
    from campaigns.services.retention import purge

    world = await _random_world(sessionmaker, 19)
    await refresh(engine, now=LATER)
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text("UPDATE organizations SET scan_retention_days = 30 WHERE id = :org"),
            {"org": world["org"]},
        )
    report = await purge(engine, now=T0 + 70 * DAY, organization_id=world["org"])
    assert report is not None
    settled, total = await _settled(engine, world["org"])
    assert settled < total
    assert await _compare(sessionmaker, world) > 5
    await refresh(engine, now=LATER)
    settled, total = await _settled(engine, world["org"])
    assert settled == total
    assert await _compare(sessionmaker, world) > 5
