"""The scan record's one definition: it matches the ORM model, and its spool lines (the
current version and version 0) read back exactly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint
from sqlalchemy.dialects import postgresql

from campaigns.models import Scan
from campaigns.scanning.record import (
    BOT_REASONS,
    COLUMNS,
    INSERT_SQL,
    SPOOL_VERSION,
    V0_COLUMNS,
    NewerSpoolFormat,
    ScanRecord,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "spool" / "scans-v0.jsonl"

#: How PostgreSQL spells each unnest cast type in a column definition.
PG_SPELLINGS = {
    "text": {"TEXT", "VARCHAR"},
    "bigint": {"BIGINT"},
    "timestamptz": {"TIMESTAMP WITH TIME ZONE"},
    "bool": {"BOOLEAN"},
    "inet": {"INET"},
    "integer": {"INTEGER"},
    "uuid": {"UUID"},
    "bytea": {"BYTEA"},
    "float8": {"DOUBLE PRECISION", "DOUBLE"},
}


def full_record() -> ScanRecord:
    return ScanRecord(
        click_id="k" * 32,
        organization_id=3,
        campaign_id=4,
        tag_id=5,
        scanned_at=dt.datetime(2026, 11, 29, 12, 30, 1, 250000, tzinfo=dt.UTC),
        channel="nfc",
        method="HEAD",
        outcome="redirect",
        destination="https://shop.example.com/?pcid=kkk",
        user_agent="Mozilla/5.0 (Linux; Android 14) Ünïcode",
        device_type="mobile",
        os="Android",
        browser="Chrome Mobile",
        is_bot=True,
        ip_truncated="2001:db8:1::",
        visitor_id=bytes(range(16)),
        bot_reason="head",
        burst=True,
    )


def test_columns_match_the_orm_model() -> None:
    table = Scan.__table__
    # Computed columns (``position``) are the database's, never written.
    written = [c for c in table.columns if c.name != "id" and c.computed is None]
    model = {c.name: c for c in written}
    assert [c.name for c in COLUMNS] == [c.name for c in written]
    for column in COLUMNS:
        orm = model[column.name]
        spelled = orm.type.compile(dialect=postgresql.dialect()).split("(")[0]  # type: ignore[no-untyped-call]
        assert spelled in PG_SPELLINGS[column.pg_type], column.name
        assert orm.nullable == column.nullable, column.name
    assert INSERT_SQL.count("::") == len(COLUMNS)


def test_bot_reasons_match_the_check_constraint() -> None:
    (check,) = [
        c
        for c in Scan.__table__.constraints
        if isinstance(c, CheckConstraint) and "bot_reason" in str(c.sqltext)
    ]
    assert sorted(BOT_REASONS) == sorted(
        part.strip(" '") for part in str(check.sqltext).split("IN (")[1].rstrip(")").split(",")
    )


def test_enrichment_columns_default_so_steps_only_set_fields() -> None:
    record = ScanRecord(
        click_id="c" * 32,
        organization_id=1,
        campaign_id=2,
        tag_id=3,
        scanned_at=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://example.com/",
    )
    assert (record.user_agent, record.is_bot, record.bot_reason, record.burst) == (
        None,
        False,
        None,
        False,
    )
    with pytest.raises(TypeError):
        ScanRecord("c" * 32)  # type: ignore[misc]  # keyword only


def test_current_version_round_trips() -> None:
    record = full_record()
    line = record.to_json()
    doc = json.loads(line)
    assert doc["v"] == SPOOL_VERSION == 1
    assert doc["scanned_at"] == "2026-11-29T12:30:01.250000+00:00"
    assert doc["visitor_id"] == "000102030405060708090a0b0c0d0e0f"
    assert doc["bot_reason"] == "head" and doc["burst"] is True
    assert ScanRecord.from_json(line) == record
    bare = ScanRecord(**{**vars_of(record), "user_agent": None, "visitor_id": None})
    assert ScanRecord.from_json(bare.to_json()) == bare


def vars_of(record: ScanRecord) -> dict[str, object]:
    return {c.name: getattr(record, c.name) for c in COLUMNS}


def test_missing_newer_columns_take_their_defaults() -> None:
    doc = json.loads(full_record().to_json())
    del doc["bot_reason"], doc["burst"], doc["user_agent"]
    record = ScanRecord.from_json(json.dumps(doc))
    assert (record.bot_reason, record.burst, record.user_agent) == (None, False, None)


def test_version_0_lines_read_back() -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    records = [ScanRecord.from_json(line) for line in lines]
    assert len(V0_COLUMNS) == 16
    assert records[0] == ScanRecord(
        click_id="v0AAAAAAAAAAAAAAAAAAAAAAAAAAAAA1",
        organization_id=7,
        campaign_id=11,
        tag_id=101,
        scanned_at=dt.datetime(2026, 11, 28, 9, 15, 3, 123456, tzinfo=dt.UTC),
        channel="qr",
        method="GET",
        outcome="redirect",
        destination="https://shop.example.com/p?utm_source=passerelle&pcid=v0A1",
        user_agent=(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
        ),
        device_type="mobile",
        os="iOS",
        browser="Mobile Safari",
        is_bot=False,
        ip_truncated="203.0.113.0",
        visitor_id=bytes.fromhex("00112233445566778899aabbccddeeff"),
    )
    assert records[1].visitor_id is None
    assert records[2].user_agent is None and records[2].method == "HEAD"
    assert records[3].ip_truncated == "2001:db8:85a3::"
    assert records[3].user_agent == "Navigateur-Été/2.0 (Généric; 日本語) « test »"
    assert all(r.bot_reason is None and r.burst is False for r in records)


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"v": 2, "click_id": "x"}),
        json.dumps({**json.loads(full_record().to_json()), "referrer_host": "example.com"}),
    ],
    ids=["newer-version", "unknown-column"],
)
def test_lines_of_a_newer_format_are_told_apart(line: str) -> None:
    with pytest.raises(NewerSpoolFormat):
        ScanRecord.from_json(line)


@pytest.mark.parametrize(
    "line",
    [
        '["only", "three", "fields"]',
        json.dumps({"click_id": "no version"}),
        json.dumps({"v": 1, "click_id": "missing the rest"}),
        json.dumps({**json.loads(full_record().to_json()), "scanned_at": "yesterday"}),
        '{"v": 1, "click_id": "torn',
        "42",
    ],
    ids=["v0-short", "no-version", "missing-required", "bad-time", "torn", "scalar"],
)
def test_foreign_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError) as raised:
        ScanRecord.from_json(line)
    assert not isinstance(raised.value, NewerSpoolFormat)
