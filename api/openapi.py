"""The OpenAPI document: readable operation ids, and every error documented once.

FastAPI documents a 422 ``HTTPValidationError`` under ``application/json`` for every
route with parameters, which is not what the service answers. :func:`install_openapi`
replaces the generator so that each operation lists the problems it can answer, each
status once, under ``application/problem+json`` only, with its ``code`` values (see
:func:`api.errors.problem_responses`): the codes a route declares, plus those shared by
every management route, every JSON-body route and every path. Success responses carry
OpenAPI links (:data:`LINKS`) from a created or listed resource to the operations on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.errors import (
    ANY_PATH_CODES,
    JSON_BODY_CODES,
    MANAGEMENT_CODES,
    PROBLEM_CODES,
    PROBLEM_JSON,
    Problem,
    documented_codes,
    problem_responses,
)
from campaigns.schemas import GEO_ERROR_CODES

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: FastAPI's own validation-error schemas, replaced by ``Problem``.
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def operation_id(route: APIRoute) -> str:
    """``{tag}_{verb}``: the route's first tag, then its function name without the tag's
    noun (``create_campaign`` tagged ``campaigns`` -> ``campaigns_create``; ``get_tag_qr``
    tagged ``tags`` -> ``tags_get_qr``). Stable as long as names and tags are."""
    tag = str(route.tags[0]) if route.tags else "default"
    prefix = tag.lower().replace(" ", "_").replace("-", "_")
    nouns = {prefix, prefix.removesuffix("s")}
    verb = "_".join(token for token in route.name.split("_") if token not in nouns)
    return f"{prefix}_{verb or route.name}"


def _catalogue() -> str:
    rows = "\n".join(
        f"| `{code}` | {status} | {meaning} |"
        for code, (status, meaning) in sorted(PROBLEM_CODES.items(), key=lambda i: (i[1][0], i[0]))
    )
    return (
        "Every error is an RFC 9457 `application/problem+json` document with a stable "
        "`code`. Each operation lists the codes it can answer.\n\n"
        "| code | status | meaning |\n| --- | --- | --- |\n" + rows
    )


def _problem_schemas() -> dict[str, Any]:
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = problem_schema.pop("$defs", {})
    problem_schema["properties"]["code"]["enum"] = sorted(PROBLEM_CODES)
    return {"Problem": problem_schema, "FieldProblem": definitions.get("FieldProblem")}


def _normalise_errors(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    errors = {status: responses[status] for status in responses if status[0] in "45"}
    codes = documented_codes(errors.values())
    for status, response in errors.items():
        content = response.get("content", {})
        if not content or PROBLEM_JSON in content or "application/json" in content:
            del responses[status]  # rebuilt below, once, from the codes
    codes.extend(ANY_PATH_CODES)
    if path.startswith("/v1/"):
        codes.extend(MANAGEMENT_CODES)
    body = operation.get("requestBody", {}).get("content", {})
    if "application/json" in body:
        codes.extend(JSON_BODY_CODES)
        # A geographic field problem found by a body schema keeps its own code instead of
        # validation_error (api/errors.py): any JSON body may hold one (time zones,
        # GeoJSON, coordinates), so every such operation documents them.
        codes.extend(sorted(GEO_ERROR_CODES))
    for code_status, response in problem_responses(*codes).items():
        responses.setdefault(str(code_status), response)


_CREATED = "$response.body#/id"
_FIRST = "$response.body#/items/0/id"

#: OpenAPI 3.1 links (§4.8.20) from an operation's success to the operations that take
#: the id it returns: ``{source operationId: {link name: (target operationId,
#: {path parameter: runtime expression})}}``. Clients (and schemathesis' stateful
#: phase) follow them from a created or listed resource to its reads, updates and
#: deletes. A new resource with an id joins here.
LINKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "campaigns_create": {
        "GetCampaign": ("campaigns_get", {"campaign_id": _CREATED}),
        "UpdateCampaign": ("campaigns_update", {"campaign_id": _CREATED}),
        "DeleteCampaign": ("campaigns_delete", {"campaign_id": _CREATED}),
        "CreateTag": ("tags_create", {"campaign_id": _CREATED}),
        "ListTags": ("tags_list", {"campaign_id": _CREATED}),
        "CreateRule": ("rules_create", {"campaign_id": _CREATED}),
        "GetStats": ("stats_get", {"campaign_id": _CREATED}),
    },
    "campaigns_list": {
        "GetCampaign": ("campaigns_get", {"campaign_id": _FIRST}),
        "UpdateCampaign": ("campaigns_update", {"campaign_id": _FIRST}),
        "ListTags": ("tags_list", {"campaign_id": _FIRST}),
        "CreateTag": ("tags_create", {"campaign_id": _FIRST}),
        "ListRules": ("rules_list", {"campaign_id": _FIRST}),
    },
    "tags_create": {
        "GetTag": ("tags_get", {"tag_id": _CREATED}),
        "UpdateTag": ("tags_update", {"tag_id": _CREATED}),
        "GetTagQr": ("tags_get_qr", {"tag_id": _CREATED}),
    },
    "tags_list": {
        "GetTag": ("tags_get", {"tag_id": _FIRST}),
        "UpdateTag": ("tags_update", {"tag_id": _FIRST}),
    },
    "locations_create": {
        "GetLocation": ("locations_get", {"location_id": _CREATED}),
        "UpdateLocation": ("locations_update", {"location_id": _CREATED}),
        "DeleteLocation": ("locations_delete", {"location_id": _CREATED}),
    },
    "locations_list": {
        "GetLocation": ("locations_get", {"location_id": _FIRST}),
        "UpdateLocation": ("locations_update", {"location_id": _FIRST}),
    },
    "rules_create": {
        "UpdateRule": ("rules_update", {"rule_id": _CREATED}),
        "DeleteRule": ("rules_delete", {"rule_id": _CREATED}),
    },
    "rules_list": {"UpdateRule": ("rules_update", {"rule_id": _FIRST})},
    "webhooks_create": {
        "ListDeliveries": ("webhooks_list_deliveries", {"webhook_id": _CREATED}),
        "Ping": ("webhooks_ping", {"webhook_id": _CREATED}),
        "DeleteWebhook": ("webhooks_delete", {"webhook_id": _CREATED}),
    },
    "webhooks_list": {
        "ListDeliveries": ("webhooks_list_deliveries", {"webhook_id": _FIRST}),
        "Ping": ("webhooks_ping", {"webhook_id": _FIRST}),
    },
    "api_keys_create": {"RevokeKey": ("api_keys_revoke", {"key_id": _CREATED})},
    "conversions_create": {
        "CreateRefund": ("conversions_create_refund", {"conversion_id": _CREATED})
    },
    "conversions_list": {"CreateRefund": ("conversions_create_refund", {"conversion_id": _FIRST})},
}


def _add_links(document: dict[str, Any]) -> None:
    """Put :data:`LINKS` on each source operation's success responses (2xx with a JSON
    body). Raises ``KeyError`` for an operation id the document lacks."""
    operations = {
        operation["operationId"]: operation
        for item in document.get("paths", {}).values()
        for method, operation in item.items()
        if method in _METHODS
    }
    for source, links in LINKS.items():
        built = {}
        for name, (target, parameters) in links.items():
            if target not in operations:
                raise KeyError(f"link {source}.{name}: no operation {target}")
            built[name] = {"operationId": target, "parameters": dict(parameters)}
        for status, response in operations[source]["responses"].items():
            if status.startswith("2") and "application/json" in response.get("content", {}):
                response["links"] = built


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, post-processed as described in the module docstring."""
    document = FastAPI.openapi(app)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(_problem_schemas())
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _normalise_errors(path, item[method])
    _add_links(document)
    info = document.setdefault("info", {})
    info["description"] = _catalogue()
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi`'s document at ``/openapi.json`` (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
