"""``record_conversion`` against the real database: attribution, idempotency, conflicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.db import unit_of_work
from campaigns.errors import Conflict, InvalidInput
from campaigns.schemas import ConversionCreate
from campaigns.services.conversions import fingerprint, record_conversion
from tests.conftest import table_snapshot
from tests.fixtures.factories import make_campaign, make_org, make_tag, scan_record, write_scans

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


async def _scan(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, spool: Path
) -> tuple[int, int, str, tuple[int, int]]:
    """An organization with one scan; another organization. Returns (org id, other org
    id, the scan's click id, (campaign id, tag id))."""
    async with unit_of_work(sessionmaker) as session:
        org = await make_org(session)
        other = await make_org(session, name="Globex")
        campaign = await make_campaign(session, organization_id=org.id)
        tag = await make_tag(session, organization_id=org.id, campaign_id=campaign.id)
    record = scan_record(tag)
    await write_scans(database_url, spool, [record])
    return org.id, other.id, record.click_id, (campaign.id, tag.id)


def _body(click_id: str, **overrides: object) -> ConversionCreate:
    fields: dict[str, object] = {
        "click_id": click_id,
        "event": "purchase",
        "external_id": "order-1001",
        "value": {"amount_minor": 4990, "currency": "EUR"},
        **overrides,
    }
    return ConversionCreate.model_validate(fields)


async def test_attributed_then_replayed_then_conflicting(
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    org_id, _, click_id, (campaign_id, tag_id) = await _scan(sessionmaker, database_url, tmp_path)
    async with unit_of_work(sessionmaker) as session:
        first = await record_conversion(
            session, organization_id=org_id, data=_body(click_id), now=NOW
        )
    assert first.created is True
    stored = first.conversion
    assert (stored.campaign_id, stored.tag_id) == (campaign_id, tag_id)
    assert stored.scan_id is not None
    assert stored.occurred_at == NOW and stored.received_at == NOW

    async with unit_of_work(sessionmaker) as session:
        replay = await record_conversion(
            session, organization_id=org_id, data=_body(click_id), now=NOW + dt.timedelta(1)
        )
    assert replay.created is False
    assert replay.conversion.id == stored.id
    assert replay.conversion.occurred_at == NOW  # the stored row, not a new receive time

    before = await table_snapshot(engine, "conversions")
    with pytest.raises(Conflict) as conflict:
        async with unit_of_work(sessionmaker) as session:
            await record_conversion(
                session,
                organization_id=org_id,
                data=_body(click_id, value={"amount_minor": 1, "currency": "EUR"}),
            )
    assert conflict.value.code == "conversion_conflict"
    assert await table_snapshot(engine, "conversions") == before


async def test_another_organizations_click_id_is_stored_unattributed(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    _, other_id, click_id, _ = await _scan(sessionmaker, database_url, tmp_path)
    async with unit_of_work(sessionmaker) as session:
        result = await record_conversion(
            session, organization_id=other_id, data=_body(click_id), now=NOW
        )
    conversion = result.conversion
    assert result.created is True
    assert (conversion.scan_id, conversion.campaign_id, conversion.tag_id) == (None, None, None)


async def test_occurred_at_more_than_a_day_ahead_is_refused(
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    org_id, _, click_id, _ = await _scan(sessionmaker, database_url, tmp_path)
    limit = NOW + dt.timedelta(hours=24)
    async with unit_of_work(sessionmaker) as session:
        at_limit = await record_conversion(
            session, organization_id=org_id, data=_body(click_id, occurred_at=limit), now=NOW
        )
    assert at_limit.conversion.occurred_at == limit
    before = await table_snapshot(engine, "conversions")
    with pytest.raises(InvalidInput) as refused:
        async with unit_of_work(sessionmaker) as session:
            await record_conversion(
                session,
                organization_id=org_id,
                data=_body(
                    click_id,
                    external_id="order-1002",
                    occurred_at=limit + dt.timedelta(seconds=1),
                ),
                now=NOW,
            )
    assert refused.value.code == "occurred_at_in_future"
    assert await table_snapshot(engine, "conversions") == before


def test_fingerprint_ignores_spelling_but_not_content() -> None:
    base = _body("abc", occurred_at="2026-11-29T13:00:00+01:00")
    same = _body(
        "abc",
        occurred_at="2026-11-29T12:00:00Z",
        value={"amount_minor": 4990, "currency": "eur"},
        event="  purchase ",
        external_id="another-order",  # the key, not part of the body
    )
    assert fingerprint(base) == fingerprint(same)
    assert fingerprint(base) != fingerprint(_body("abc"))  # occurred_at sent vs not
    assert fingerprint(base) != fingerprint(_body("abd", occurred_at="2026-11-29T13:00:00+01:00"))
