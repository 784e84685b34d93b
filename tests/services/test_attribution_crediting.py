"""The attribution report's two crediting paths agree exactly: credits and revenue splits
computed in PostgreSQL (``crediting="sql"``, the report's path) against the pure Python
models of ``campaigns/attribution.py`` (``crediting="python"``, the reference), on random
journeys: every model and grouping, two currencies and values without one, bots and
flagged NFC taps, cookies and consented cookies, visitor ids across days, ties in time,
touches after the conversion, the lookback edge, refunds in and out of the window,
another campaign's touches and another organization's scans, and time-decay half-lives
from minutes (weights underflowing to subnormals and zero) to a year."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from campaigns.attribution import MODELS
from campaigns.db import unit_of_work
from campaigns.services.attribution import GROUP_BYS, attribution_report
from tests.fixtures.factories import make_campaign, make_org, make_tag

T0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SPAN_DAYS = 100


async def _random_world(
    sessionmaker: async_sessionmaker[AsyncSession], seed: int
) -> dict[str, Any]:
    """One organization with campaign ``a`` (3 tags, two at one location, time zone
    Asia/Kolkata, UTC+05:30) and ``b`` (1 tag), another organization, and random scans,
    conversions, consented cookies and refunds over :data:`SPAN_DAYS` days."""
    rng = random.Random(seed)
    async with unit_of_work(sessionmaker) as session:
        org = await make_org(session)
        other = await make_org(session, name="Globex")
        a = await make_campaign(session, organization_id=org.id, timezone="Asia/Kolkata")
        b = await make_campaign(session, organization_id=org.id, name="Winter")
        c = await make_campaign(session, organization_id=other.id)
        tags = [
            await make_tag(session, organization_id=org.id, campaign_id=a.id, label=f"a{i}")
            for i in range(3)
        ] + [await make_tag(session, organization_id=org.id, campaign_id=b.id, label="b0")]
        foreign = await make_tag(session, organization_id=other.id, campaign_id=c.id)
        location = (
            await session.execute(
                text(
                    "INSERT INTO locations (organization_id, name, point) VALUES "
                    "(:org, 'Gare', ST_GeogFromText('POINT(2.35 48.85)')) RETURNING id"
                ),
                {"org": org.id},
            )
        ).scalar_one()
        await session.execute(
            text("UPDATE tags SET location_id = :loc WHERE id = ANY(:ids)"),
            {"loc": location, "ids": [tags[0].id, tags[1].id]},
        )
    visitors = [bytes([v]) * 16 for v in range(8)]
    cookies = [uuid.UUID(int=k + 1) for k in range(6)]
    scans: list[dict[str, Any]] = []
    times = [T0 + rng.random() * SPAN_DAYS * DAY for _ in range(400)]
    # Ties: some scans share their instant with another.
    times += [rng.choice(times) for _ in range(40)]
    for i, at in enumerate(sorted(times)):
        tag = foreign if rng.random() < 0.05 else rng.choice(tags)
        is_nfc = rng.random() < 0.2
        scans.append(
            {
                "click_id": f"s{seed}-{i}",
                "org": other.id if tag is foreign else org.id,
                "campaign": tag.campaign_id,
                "tag": tag.id,
                "at": at,
                "channel": "nfc" if is_nfc else "qr",
                "is_bot": rng.random() < 0.1,
                "burst": rng.random() < 0.05,
                "visitor": rng.choice(visitors) if rng.random() < 0.9 else None,
                "cookie": rng.choice(cookies) if rng.random() < 0.3 else None,
                "nfc": rng.choice((None, "valid", "valid", "replayed", "invalid"))
                if is_nfc
                else None,
            }
        )
    conversions = []
    for n in range(160):
        roll = rng.random()
        if roll < 0.05:
            click = f"unknown-{n}"
            at = T0 + rng.random() * SPAN_DAYS * DAY
        else:
            scan = rng.choice(scans)
            click = scan["click_id"]
            # Mostly after the click, sometimes before it (merchant clock skew).
            at = scan["at"] + dt.timedelta(hours=rng.uniform(-3, 24 * 40))
        value = rng.choice((None, 0, 1, 2, 3, 7, 100, 999, 4999, 10**12 + 7))
        conversions.append(
            {
                "org": org.id,
                "external_id": f"order-{n}",
                "click_id": click,
                "at": at,
                "value": value,
                "currency": None if value is None else rng.choice(("EUR", "USD")),
            }
        )
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text(
                "INSERT INTO scans (click_id, organization_id, campaign_id, tag_id, scanned_at,"
                " channel, outcome, destination, is_bot, burst, visitor_id, cookie_id,"
                " nfc_verification) VALUES (:click_id, :org, :campaign, :tag, :at, :channel,"
                " 'redirect', 'https://shop.example.com/', :is_bot, :burst, :visitor, :cookie,"
                " :nfc)"
            ),
            scans,
        )
        # Consent pages answered "yes": the cookie set after a scan stored without one.
        consented = [s for s in scans if s["cookie"] is None and s["org"] == org.id]
        await session.execute(
            text(
                "INSERT INTO visitor_cookie_consents (click_id, organization_id, cookie_id)"
                " VALUES (:click_id, :org, :cookie)"
            ),
            [
                {"click_id": s["click_id"], "org": org.id, "cookie": rng.choice(cookies)}
                for s in rng.sample(consented, 25)
            ],
        )
        await session.execute(
            text(
                "INSERT INTO conversions (organization_id, external_id, event, click_id,"
                " value_amount_minor, value_currency, occurred_at, received_at, fingerprint)"
                " VALUES (:org, :external_id, 'purchase', :click_id, :value, :currency, :at,"
                " :at, '\\x00')"
            ),
            conversions,
        )
        paid = (
            await session.execute(
                text(
                    "SELECT id, occurred_at, value_amount_minor FROM conversions"
                    " WHERE organization_id = :org AND value_amount_minor > 0 ORDER BY id"
                ),
                {"org": org.id},
            )
        ).all()
        refunds = []
        for row in rng.sample(paid, min(len(paid), 40)):
            left = row.value_amount_minor
            for k in range(rng.randint(1, 3)):
                if left <= 0:
                    break
                amount = rng.randint(1, left)
                left -= amount
                refunds.append(
                    {
                        "org": org.id,
                        "conversion": row.id,
                        "external_id": f"refund-{row.id}-{k}",
                        "amount": amount,
                        "at": row.occurred_at + dt.timedelta(days=rng.uniform(0, 20)),
                    }
                )
        await session.execute(
            text(
                "INSERT INTO refunds (organization_id, conversion_id, external_id,"
                " amount_minor, refunded_at, fingerprint)"
                " VALUES (:org, :conversion, :external_id, :amount, :at, '\\x00')"
            ),
            refunds,
        )
    return {"org": org.id, "campaigns": [a.id, b.id]}


#: (lookback_days, half_life_days, start day, end day): defaults, the shortest lookback
#: with a half-life of minutes (weights underflow), the longest with a year's half-life,
#: and a window cutting conversions and refunds.
PARAMETERS = [
    (30, 7.0, None, None),
    (1, 0.0007, None, None),
    (90, 365.0, None, None),
    (7, 0.5, 30, 60),
    (30, 3.3, 55, None),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_crediting_equals_the_python_reference(
    sessionmaker: async_sessionmaker[AsyncSession], seed: int
) -> None:
    world = await _random_world(sessionmaker, seed)
    compared = 0
    cases = list(itertools.product(world["campaigns"], PARAMETERS, MODELS))
    async with sessionmaker() as session:
        for i, (campaign, (lookback, half_life, first_day, last_day), model) in enumerate(cases):
            # 5 models and 3 groupings rotate together: every pair is met.
            group_by = GROUP_BYS[i % len(GROUP_BYS)]
            kwargs: dict[str, Any] = {
                "organization_id": world["org"],
                "campaign_id": campaign,
                "model": model,
                "group_by": group_by,
                "lookback_days": lookback,
                "half_life_days": half_life,
                "start": None if first_day is None else T0 + first_day * DAY,
                "end": None if last_day is None else T0 + last_day * DAY,
            }
            fast = await attribution_report(session, crediting="sql", **kwargs)
            reference = await attribution_report(session, crediting="python", **kwargs)
            assert fast.model_dump() == reference.model_dump(), str(kwargs)
            compared += bool(reference.rows)
    # The journeys really produced rows to compare (not empty reports only).
    assert compared > 30


async def test_days_straddling_a_quarter_hour_fall_back_to_python(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """In 1900 Asia/Kolkata was UTC+05:21:10 (zoneinfo): its midnight fell at 18:38:50
    UTC, inside a quarter hour, so SQL's quarter-hour day groups cannot be mapped to one
    local date: the report is credited in Python, with the same days."""
    async with unit_of_work(sessionmaker) as session:
        org = await make_org(session)
        campaign = await make_campaign(session, organization_id=org.id, timezone="Asia/Kolkata")
        tag = await make_tag(session, organization_id=org.id, campaign_id=campaign.id)
        at = dt.datetime(1900, 1, 1, 18, 35, tzinfo=dt.UTC)
        for i, minutes in enumerate((0, 7)):  # local 23:56:10, then 00:03:10 the next day
            await session.execute(
                text(
                    "INSERT INTO scans (click_id, organization_id, campaign_id, tag_id,"
                    " scanned_at, channel, outcome, destination, is_bot, visitor_id)"
                    " VALUES (:click, :org, :campaign, :tag, :at, 'qr', 'redirect',"
                    " 'https://shop.example.com/', false, :visitor)"
                ),
                {
                    "click": f"old-{i}",
                    "org": org.id,
                    "campaign": campaign.id,
                    "tag": tag.id,
                    "at": at + dt.timedelta(minutes=minutes),
                    "visitor": b"V" * 16,
                },
            )
        await session.execute(
            text(
                "INSERT INTO conversions (organization_id, external_id, event, click_id,"
                " value_amount_minor, value_currency, occurred_at, received_at, fingerprint)"
                " VALUES (:org, 'o-1', 'purchase', 'old-1', 1001, 'EUR', :at, :at, '\\x00')"
            ),
            {"org": org.id, "at": at + dt.timedelta(hours=1)},
        )
    async with sessionmaker() as session:
        kwargs: dict[str, Any] = {
            "organization_id": org.id,
            "campaign_id": campaign.id,
            "model": "linear",
            "group_by": "day",
        }
        fast = await attribution_report(session, crediting="sql", **kwargs)
        reference = await attribution_report(session, crediting="python", **kwargs)
    assert fast.model_dump() == reference.model_dump()
    assert [(row.day, row.conversions) for row in fast.rows] == [  # type: ignore[union-attr]
        (dt.date(1900, 1, 1), 0.5),
        (dt.date(1900, 1, 2), 0.5),
    ]
