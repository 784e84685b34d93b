"""``/health/scans``: answers 503 when scans can be stored nowhere."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from campaigns.scanning.writer import ScanWriter


async def test_scans_probe_reports_where_scans_can_be_stored(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await client.get("/health/scans")
    assert r.status_code == 200
    assert r.json() == {
        "serving": True,
        "tags_cached": len(app.state.scans.cache),
        "database": True,
        "storable": True,
    }
    # Database away and spool failing: the writer says so (tests/scanning/test_writer.py
    # checks when), and the probe takes the instance out of rotation.
    monkeypatch.setattr(ScanWriter, "storable", property(lambda self: False))
    r = await client.get("/health/scans")
    assert r.status_code == 503
    assert (r.json()["serving"], r.json()["storable"]) == (False, False)
