"""schemathesis against the OpenAPI document, on a real server process: every ``/v1``
operation with a bounded number of generated requests (stateless), then sequences
following the document's links (stateful: a created or listed resource's id reused by
its reads, updates and deletes, ``api.openapi.LINKS``). No 5xx, every answer conforms
to the document (status code, content type, body schema). Bounded to stay well under
two minutes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from campaigns.services.organizations import hash_secret
from tests.conftest import TABLES
from tests.e2e.harness import Server

#: Examples per operation (stateless): a smoke-sized fuzz run.
MAX_EXAMPLES = 4
#: Scenarios and steps per scenario of the stateful phase.
STATEFUL_SCENARIOS = 50
STATEFUL_STEPS = 10
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SECRET = "psk_fuzz-" + "f" * 38
KEY_ID = 736_529_104


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
            # An id the fuzzer will not draw: a generated DELETE /v1/api-keys/{key_id}
            # must not revoke the key the run itself uses.
            "INSERT INTO api_keys (id, organization_id, name, prefix, secret_hash, scopes) "
            "VALUES (%s, %s, 'fuzz', 'psk_fuzz', %s, '{admin}')",
            (KEY_ID, org[0], hash_secret(SECRET)),
        )
        conn.execute(
            "INSERT INTO campaigns (organization_id, name, slug, destination_url) "
            "VALUES (%s, 'fuzz', 'fuzz', 'https://shop.example.com/')",
            (org[0],),
        )
    process = Server(database_url, Path(tmp_path_factory.mktemp("fuzz")))
    process.start()
    try:
        seed(process)
        yield process
    finally:
        process.stop()
        with psycopg.connect(conninfo) as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def seed(server: Server) -> None:
    """One of each resource the links start from (a list's first item), so that the
    stateful phase's chains reach real rows even when a generated create is refused."""
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    ) as client:
        campaign = client.get("/v1/campaigns").json()["items"][0]["id"]
        for path, body in (
            (f"/v1/campaigns/{campaign}/tags", {"kind": "qr", "label": "seed"}),
            ("/v1/locations", {"name": "Seed", "point": {"type": "Point", "coordinates": [2, 48]}}),
            (
                f"/v1/campaigns/{campaign}/rules",
                {"priority": 1, "when": {}, "destination_url": "https://shop.example.com/r"},
            ),
            ("/v1/webhooks", {"url": "https://hooks.example.com/f", "events": ["scan.created"]}),
            ("/v1/conversions", {"click_id": "seed", "event": "purchase", "external_id": "s1"}),
        ):
            response = client.post(path, json=body)
            assert response.status_code in (200, 201), response.text


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
    """Sequences of calls along the document's links (a created or listed resource's id
    reused by its reads, updates and deletes): schema-conforming data, the key sent as
    given (not generated), only the links the document declares. The run must chain:
    calls on real ids succeed for several kinds of resource."""
    config = api_schema.config.phases.stateful
    config.inference.algorithms = []  # the document's own links, not guessed ones
    for generation in (api_schema.config.generation, config.generation):
        generation.update(modes=[GenerationMode.POSITIVE], with_security_parameters=False)
    machine = api_schema.as_state_machine()
    calls: list[tuple[str, str, int]] = []

    class Machine(machine):  # type: ignore[misc,valid-type]
        def after_call(self, response: object, case: schemathesis.Case) -> None:
            calls.append((case.method, case.path, response.status_code))  # type: ignore[attr-defined]

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
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
    # Chained: ids taken from earlier answers worked, on several operations.
    chained = {
        (method, path) for method, path, status in calls if "{" in path and 200 <= status < 300
    }
    assert len(chained) >= 6, sorted(set(calls))
