"""The engine keeps statement parameters out of errors and logs."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from campaigns.db import make_engine


async def test_parameters_never_reach_error_messages_or_logs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(database_url, pool_size=1)
    secret = "psk_very-secret-value"
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    try:
        assert engine.sync_engine.hide_parameters is True
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as conn:
                # Fails after binding (division by zero), with a message of its own that
                # does not quote the value: what is left to leak is the parameter dump.
                await conn.execute(
                    text("SELECT length(CAST(:value AS text)) / 0"), {"value": secret}
                )
    finally:
        await engine.dispose()
    assert secret not in str(failed.value)
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(failed.value)
    assert all(secret not in record.getMessage() for record in caplog.records)
