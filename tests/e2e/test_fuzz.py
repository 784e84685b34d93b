"""schemathesis against the OpenAPI document, on a real server process: every ``/v1``
operation with a bounded number of generated requests (stateless), then sequences
following the API's links (stateful). No 5xx, every answer conforms to the document
(status code, content type, body schema). Bounded to stay well under two minutes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from campaigns.services.organizations import hash_secret
from tests.conftest import TABLES
from tests.e2e.harness import Server

#: Examples per operation (stateless) and steps (stateful): a smoke-sized fuzz run.
MAX_EXAMPLES = 4
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SECRET = "psk_fuzz-" + "f" * 38


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the test database with one organization and an admin key; the tables
    are emptied afterwards (other tests start from empty tables)."""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("INSERT INTO organizations (name) VALUES ('fuzz') RETURNING id")
        org = row.fetchone()
        assert org is not None
        conn.execute(
            "INSERT INTO api_keys (organization_id, name, prefix, secret_hash, scopes) "
            "VALUES (%s, 'fuzz', 'psk_fuzz', %s, '{admin}')",
            (org[0], hash_secret(SECRET)),
        )
        conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url) "
            "VALUES (%s, 'fuzz', 'fuzz', 'https://shop.example.com/')",
            (org[0],),
        )
    process = Server(database_url, Path(tmp_path_factory.mktemp("fuzz")))
    process.start()
    try:
        yield process
    finally:
        process.stop()
        with psycopg.connect(conninfo) as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    schema.config.update(base_url=server.base_url)
    # The management API: the public scan path is exercised by its own tests.
    return schema.include(path_regex="^/v1/")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_stateless(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {SECRET}"},
        checks=CHECKS,
        timeout=30,
    )


def test_stateful(api_schema: schemathesis.BaseSchema, server: Server) -> None:
    """Sequences of calls along the links schemathesis finds (a created resource's id
    reused by its reads, updates and deletes), a few short runs."""
    machine = api_schema.as_state_machine()

    class Machine(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {
                "base_url": server.base_url,
                "headers": {"Authorization": f"Bearer {SECRET}"},
                "timeout": 30,
            }

        def validate_response(
            self, response: object, case: schemathesis.Case, **kwargs: object
        ) -> None:
            case.validate_response(response, checks=CHECKS)  # type: ignore[arg-type]

    Machine.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
