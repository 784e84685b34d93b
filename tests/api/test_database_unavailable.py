"""The management API with its database away: 503 ``database_unavailable`` with
``Retry-After``, and one log line per kind of failure instead of a traceback per request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api.app import create_app, served_app
from campaigns.db import CONNECT_TIMEOUT_S
from campaigns.settings import Settings

CLOSED_PORT = "postgresql+psycopg://postgres@127.0.0.1:1/passerelle"


@pytest.fixture
async def app_without_database(
    settings: Settings, tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two apps: one whose server refuses connections (closed port), one whose database
    does not exist on a live server (as after a DROP DATABASE)."""
    missing = make_url(database_url).set(database="passerelle_dropped_for_test")
    apps = []
    for name, url in (("closed", CLOSED_PORT), ("dropped", missing.render_as_string(False))):
        apps.append(
            create_app(
                settings.model_copy(update={"database_url": url, "data_dir": tmp_path / name})
            )
        )
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
    ):
        yield apps[0], apps[1]


async def test_v1_answers_503_and_logs_each_kind_once(
    app_without_database: tuple[FastAPI, FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": "Bearer psk_" + "a" * 43}
    caplog.set_level(logging.WARNING, logger="api.errors")
    responses = []
    for app in app_without_database:
        transport = httpx.ASGITransport(app=served_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
            for _ in range(3):
                responses.append(await c.get("/v1/campaigns", headers=headers))
            responses.append(
                await c.post(
                    "/v1/campaigns",
                    json={"name": "X", "destination_url": "https://shop.example.com/"},
                    headers=headers,
                )
            )
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        problem = response.json()
        assert problem["code"] == "database_unavailable"
        assert problem["detail"] == "The database cannot be reached; retry in 5 s"
    logged = [r for r in caplog.records if r.name == "api.errors"]
    assert len(logged) == 2, [r.getMessage() for r in logged]  # one per app, not per request
    assert all(r.exc_info is None for r in caplog.records)  # no traceback anywhere
    closed, dropped = (r.getMessage() for r in logged)
    assert closed.startswith("database unavailable (OperationalError")
    assert "answering 503 database_unavailable" in closed
    assert dropped.startswith("database unavailable (OperationalError: ")
    assert 'database "passerelle_dropped_for_test" does not exist' in dropped


async def test_v1_answers_503_soon_when_the_database_host_never_answers(
    settings: Settings, tmp_path: Path
) -> None:
    """A database host that accepts TCP but never speaks (a stalled server, a proxy in
    front of a dead one) must not hold API requests for psycopg's default 130 s connect
    timeout: the engine's ``CONNECT_TIMEOUT_S`` turns it into a 503 within seconds."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answers the startup packet

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    app = create_app(
        settings.model_copy(
            update={
                "database_url": f"postgresql+psycopg://postgres@127.0.0.1:{port}/passerelle",
                "data_dir": tmp_path,
            }
        )
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=served_app(app))
            async with httpx.AsyncClient(
                transport=transport, base_url="https://go.example.com"
            ) as c:
                headers = {"Authorization": "Bearer psk_" + "a" * 43}
                # Well under 130 s, with room for a loaded machine.
                response = await asyncio.wait_for(
                    c.get("/v1/campaigns", headers=headers), timeout=10 * CONNECT_TIMEOUT_S
                )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
