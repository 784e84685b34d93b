"""The OpenAPI document: valid, readable operation ids, every error documented once under
``application/problem+json`` with its codes, every schema field described with an
example, short links included, and /docs without a CDN."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from api.errors import _STATUS_CODES, PROBLEM_CODES, PROBLEM_JSON
from campaigns.schemas import GEO_ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: {**op, "path": path, "method": method}
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def codes_of(operation: dict[str, Any]) -> dict[str, list[str]]:
    found = {}
    for status, response in operation["responses"].items():
        schema = response.get("content", {}).get(PROBLEM_JSON, {}).get("schema")
        if schema is not None:
            found[status] = schema["properties"]["code"]["enum"]
    return found


def raised_codes() -> set[str]:
    """Every problem code written in the code base: ``code="..."`` arguments and
    ``code = "..."`` class defaults in api/ and campaigns/, and the per-status defaults
    of api/errors.py."""
    pattern = re.compile(r'\bcode\s*=\s*"([a-z_]+)"')
    found = {code for code, _title in _STATUS_CODES.values()}
    for package in ("api", "campaigns"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_operation_ids_are_readable_and_stable(document: dict[str, Any]) -> None:
    ids = {(op["method"], op["path"]): op_id for op_id, op in operations(document).items()}
    assert ids == {
        ("get", "/health/live"): "health_live",
        ("get", "/health/scans"): "health_scans_ready",
        ("get", "/health/ready"): "health_ready",
        ("get", "/s/{code}"): "short_links_scan",
        ("get", "/v1/campaigns/{campaign_id}/scans"): "scans_list",
        ("get", "/v1/campaigns/{campaign_id}/stats/locations"): "stats_scans_per_location",
        ("get", "/v1/campaigns/{campaign_id}/heatmap"): "stats_heatmap",
        ("post", "/v1/campaigns/{campaign_id}/rules"): "rules_create",
        ("get", "/v1/campaigns/{campaign_id}/rules"): "rules_list",
        ("patch", "/v1/rules/{rule_id}"): "rules_update",
        ("delete", "/v1/rules/{rule_id}"): "rules_delete",
        ("post", "/s/{click_id}/location"): "short_links_record_location",
        ("post", "/s/{click_id}/consent"): "short_links_record_cookie_answer",
        ("post", "/v1/campaigns"): "campaigns_create",
        ("get", "/v1/campaigns"): "campaigns_list",
        ("get", "/v1/campaigns/{campaign_id}"): "campaigns_get",
        ("patch", "/v1/campaigns/{campaign_id}"): "campaigns_update",
        ("delete", "/v1/campaigns/{campaign_id}"): "campaigns_delete",
        ("post", "/v1/campaigns/{campaign_id}/tags"): "tags_create",
        ("post", "/v1/campaigns/{campaign_id}/tags/bulk"): "tags_create_bulk",
        ("get", "/v1/campaigns/{campaign_id}/tags"): "tags_list",
        ("get", "/v1/tags/{tag_id}"): "tags_get",
        ("patch", "/v1/tags/{tag_id}"): "tags_update",
        ("get", "/v1/tags/{tag_id}/qr"): "tags_get_qr",
        ("post", "/v1/conversions"): "conversions_create",
        ("get", "/v1/campaigns/{campaign_id}/stats"): "stats_get",
        ("get", "/v1/campaigns/{campaign_id}/stats.csv"): "stats_get_csv",
        ("post", "/v1/locations"): "locations_create",
        ("get", "/v1/locations"): "locations_list",
        ("post", "/v1/locations/import"): "locations_import",
        ("get", "/v1/locations/{location_id}"): "locations_get",
        ("patch", "/v1/locations/{location_id}"): "locations_update",
        ("delete", "/v1/locations/{location_id}"): "locations_delete",
        ("get", "/v1/tags/{tag_id}/ndef"): "tags_get_ndef",
        ("get", "/v1/tags/{tag_id}/sdm"): "tags_get_sdm",
        ("get", "/v1/conversions"): "conversions_list",
        ("post", "/v1/conversions/{conversion_id}/refunds"): "conversions_create_refund",
        ("get", "/v1/campaigns/{campaign_id}/attribution"): "attribution_get",
        ("get", "/v1/campaigns/{campaign_id}/attribution.csv"): "attribution_get_csv",
        ("get", "/v1/organization"): "organization_get",
        ("patch", "/v1/organization"): "organization_update",
        ("get", "/v1/privacy/scans"): "privacy_get_scans",
        ("delete", "/v1/privacy/scans"): "privacy_erase_scans",
        ("put", "/v1/organization/logo"): "printing_put_logo",
        ("get", "/v1/campaigns/{campaign_id}/print.zip"): "printing_get_print_zip",
        ("get", "/v1/campaigns/{campaign_id}/sheets.pdf"): "printing_get_sheets",
        ("post", "/v1/webhooks"): "webhooks_create",
        ("get", "/v1/webhooks"): "webhooks_list",
        ("delete", "/v1/webhooks/{webhook_id}"): "webhooks_delete",
        ("get", "/v1/webhooks/{webhook_id}/deliveries"): "webhooks_list_deliveries",
        ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (
            "webhooks_retry_delivery"
        ),
        ("post", "/v1/webhooks/{webhook_id}/ping"): "webhooks_ping",
        ("get", "/v1/campaigns/{campaign_id}/events"): "events_stream",
        ("post", "/v1/api-keys"): "api_keys_create",
        ("get", "/v1/api-keys"): "api_keys_list",
        ("delete", "/v1/api-keys/{key_id}"): "api_keys_revoke",
        ("get", "/v1/audit"): "audit_list",
    }


def test_the_live_feed_is_documented_as_an_event_stream(document: dict[str, Any]) -> None:
    operation = operations(document)["events_stream"]
    assert set(operation["responses"]["200"]["content"]) == {"text/event-stream"}
    assert "event: scan" in operation["responses"]["200"]["description"]
    headers = [p for p in operation["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["last-event-id"]
    assert codes_of(operation)["404"] == ["campaign_not_found"]


def test_errors_are_problem_json_only(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for op_id, op in operations(document).items():
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            media_types = set(response.get("content", {}))
            if op_id == "short_links_scan" and status in ("404", "410"):
                assert media_types == {"text/html"}  # the scan path's HTML pages
            else:
                assert media_types == {PROBLEM_JSON}, (op_id, status, media_types)
                codes = codes_of(op)[status]
                assert codes and all(PROBLEM_CODES[c][0] == int(status) for c in codes)
                assert all(f"`{c}`" in response["description"] for c in codes)


def test_each_operation_lists_the_codes_it_can_answer(document: dict[str, Any]) -> None:
    ops = {op_id: codes_of(op) for op_id, op in operations(document).items()}
    for op_id, codes in ops.items():
        assert codes["431"] == ["headers_too_large"]
        assert codes["500"] == ["internal_error"]
        if operations(document)[op_id]["path"].startswith("/v1/"):
            assert codes["401"] == ["missing_api_key", "invalid_api_key"]
            assert codes["403"] == ["insufficient_scope"]
            assert codes["413"] == ["payload_too_large"]
            assert codes["429"] == ["rate_limited"]
            renders = op_id.startswith("printing_get") or op_id == "tags_get_qr"
            expected_503 = ["render_busy", "database_unavailable"] if renders else None
            assert codes["503"] == (expected_503 or ["database_unavailable"]), op_id
    assert ops["campaigns_create"]["400"] == ["bad_request"]
    assert ops["campaigns_create"]["415"] == ["unsupported_media_type"]
    assert ops["campaigns_create"]["409"] == ["slug_taken"]
    geo = sorted(GEO_ERROR_CODES)  # any JSON body may carry a geographic field problem
    assert ops["campaigns_create"]["422"] == [
        "redirect_loop",
        "destination_not_allowed",
        "validation_error",
        *geo,
    ]
    assert set(ops["campaigns_update"]["422"]) == {
        *geo,
        "destination_not_allowed",
        "invalid_schedule",
        "destination_required",
        "name_required",
        "slug_required",
        "archived_required",
        "redirect_loop",
        "validation_error",
    }
    assert ops["campaigns_get"]["404"] == ["campaign_not_found"]
    assert "415" not in ops["campaigns_get"]
    assert ops["tags_update"]["404"] == ["tag_not_found", "location_not_found"]
    assert "redirect_loop" in ops["tags_create"]["422"]
    assert ops["tags_create"]["409"] == ["nfc_uid_taken", "tag_label_taken"]
    assert ops["tags_create_bulk"]["404"] == ["campaign_not_found", "location_not_found"]
    assert ops["tags_create_bulk"]["422"] == [
        "labels_mismatch",
        "no_locations",
        "too_many_tags",
        "validation_error",
        *geo,
    ]
    assert ops["conversions_create"]["409"] == ["conversion_conflict"]
    assert "occurred_at_in_future" in ops["conversions_create"]["422"]
    assert "invalid_window" in ops["stats_get"]["422"]
    assert "429" not in ops["short_links_scan"]  # a person is never refused a redirect
    assert ops["short_links_scan"]["503"] == ["unavailable"]


def test_every_code_in_the_code_base_is_in_the_catalogue(document: dict[str, Any]) -> None:
    raised = raised_codes()
    assert {"redirect_loop", "rate_limited", "slug_taken", "database_unavailable"} <= raised
    catalogue = set(document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert raised <= catalogue, raised - catalogue
    assert catalogue == set(PROBLEM_CODES)
    description = document["info"]["description"]
    assert all(f"| `{code}` |" in description for code in catalogue)
    listed = {c for op in operations(document).values() for cs in codes_of(op).values() for c in cs}
    assert listed <= catalogue


def test_every_schema_field_has_a_description_and_an_example(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"CampaignCreate", "TagRead", "ConversionCreate", "CampaignStats", "Money"} <= set(
        schemas
    ) or {"CampaignRead-Output"} <= set(schemas)
    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, spec in schema.get("properties", {}).items()
        if not spec.get("description") or not (spec.get("examples") or "example" in spec)
    ]
    assert missing == []


def test_short_links_are_documented(document: dict[str, Any]) -> None:
    scan = document["paths"]["/s/{code}"]["get"]
    assert set(scan["responses"]) >= {"302", "404", "410", "503"}
    assert "429" not in scan["responses"]
    assert "Location" in scan["responses"]["302"]["headers"]
    assert "security" not in scan
    (parameter,) = scan["parameters"]
    assert parameter["name"] == "code" and parameter["in"] == "path"


async def test_docs_load_their_assets_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static-offline-docs/swagger-ui-bundle.js" in sources
    assert all(source.startswith("/") for source in sources), sources  # nothing remote
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200, source
    script = await client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert len(script.content) > 100_000


def test_links_name_each_path_parameter_of_their_target(document: dict[str, Any]) -> None:
    """Every link (``api.openapi.LINKS``) fills exactly its target's path parameters
    from the source's answer, and sits on the source's success response."""
    ops = operations(document)
    found = 0
    for source, operation in ops.items():
        for status, response in operation["responses"].items():
            for link in response.get("links", {}).values():
                assert status.startswith("2"), (source, status)
                target = ops[link["operationId"]]
                wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == wanted, (source, link)
                assert all(v.startswith("$response.body#/") for v in link["parameters"].values())
                found += 1
    assert found >= 30
