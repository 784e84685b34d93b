"""One renderer for every error: RFC 9457 ``application/problem+json``.

Shape: ``{"type": str, "title": str, "status": int, "detail": str, "code": str}`` plus
``"errors": [{"loc": [...], "msg": str, "type": str}]`` for field problems (422).
``type`` is ``about:blank`` style URN ``urn:passerelle:problem:<code>``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.security_headers import LOCKED_DOWN_HEADERS
from campaigns.errors import DomainError
from campaigns.schemas import GEO_ERROR_CODES

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: At most this many entries in ``errors``: a hostile body with 80,000 unknown keys must
#: not earn a 7 MB answer.
MAX_FIELD_ERRORS = 20

_STATUS_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Invalid input"),
    429: ("rate_limited", "Too many requests"),
    431: ("headers_too_large", "Request header fields too large"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


#: Every problem ``code`` the service answers, with its HTTP status and meaning: the
#: catalogue published in the OpenAPI document (``Problem.code`` enum, and per operation
#: through :func:`problem_responses`). A new code is added here too (a test checks it).
PROBLEM_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "The body cannot be parsed: malformed JSON or invalid UTF-8"),
    "missing_api_key": (401, "No `Authorization: Bearer` API key"),
    "invalid_api_key": (401, "Unknown or revoked API key"),
    "unauthorized": (401, "Not authenticated"),
    "forbidden": (403, "Authenticated, but not allowed to do this"),
    "insufficient_scope": (
        403,
        "The API key lacks the scope this operation needs (named in `required_scope`)",
    ),
    "not_found": (404, "No such resource or path"),
    "api_key_not_found": (404, "No such API key, or another organization's"),
    "campaign_not_found": (404, "No such campaign, or another organization's"),
    "tag_not_found": (404, "No such tag, or another organization's"),
    "conversion_not_found": (404, "No such conversion, or another organization's"),
    "location_not_found": (404, "No such location, or another organization's"),
    "click_not_found": (404, "No scan has this click id (or its scan is not stored yet)"),
    "privacy_subject_not_found": (
        404,
        "Nothing is held about this click id or visitor (or only by another organization)",
    ),
    "rule_not_found": (404, "No such redirect rule, or another organization's"),
    "logo_not_found": (404, "`logo=true` but the organization has uploaded no logo"),
    "organization_not_found": (404, "No such organization (command line)"),
    "webhook_not_found": (404, "No such webhook, or another organization's"),
    "delivery_not_found": (404, "No such delivery of this webhook"),
    "method_not_allowed": (405, "The path does not accept this method"),
    "conflict": (409, "The request clashes with stored state"),
    "slug_taken": (409, "Another live campaign of the organization uses this slug"),
    "nfc_uid_taken": (409, "Another `nfc_sun` tag of the organization has this UID"),
    "conversion_conflict": (409, "`external_id` already stored with a different body"),
    "refund_conflict": (409, "Refund `external_id` already stored with a different body"),
    "location_external_id_taken": (
        409,
        "Another location of the organization has this `external_id`",
    ),
    "tag_label_taken": (409, "Another tag of the campaign at this location has this label"),
    "location_in_use": (409, "Tags are placed at this location (delete with `?detach=true`)"),
    "location_already_recorded": (409, "A precise location was already recorded for this click id"),
    "gone": (410, "The resource existed but can no longer be acted on"),
    "location_window_closed": (410, "The scan is more than 10 minutes old"),
    "payload_too_large": (413, "The body exceeds `PASSERELLE_MAX_BODY_BYTES`"),
    "unsupported_media_type": (415, "The body is not sent as `application/json`"),
    "validation_error": (422, "The payload or a parameter is invalid; see `errors`"),
    "invalid_schedule": (422, "`ends_at` is not after `starts_at` (with stored values)"),
    "invalid_cursor": (422, "The pagination cursor is not one the API gave"),
    "invalid_window": (422, "`to` is not after `from`"),
    "invalid_privacy_query": (
        422,
        "Give exactly one of `click_id` and `visitor` (a visitor cookie id is a UUID)",
    ),
    "invalid_retention": (
        422,
        "`precise_location_retention_days` is longer than `scan_retention_days`",
    ),
    "too_many_buckets": (422, "The stats series would exceed 10,000 buckets"),
    "occurred_at_in_future": (422, "`occurred_at` is more than 24 hours ahead"),
    "destination_required": (422, "`destination_url` cannot be removed"),
    "name_required": (422, "`name` cannot be removed"),
    "slug_required": (422, "`slug` cannot be removed"),
    "status_required": (422, "`status` cannot be removed"),
    "archived_required": (422, "`archived` must be true or false"),
    "ndef_too_large": (
        422,
        "The NDEF TLV area exceeds the chip's capacity (`size_bytes`, `capacity_bytes`)",
    ),
    "not_sun_tag": (422, "SDM settings exist only for `nfc_sun` tags"),
    "sun_tag_uses_sdm": (422, "An `nfc_sun` tag is personalised from `/sdm`, not `/ndef`"),
    "nfc_invalid_tap_required": (422, "`nfc_invalid_tap` cannot be null"),
    "precise_location_required": (422, "`precise_location` cannot be null"),
    "redirect_loop": (422, "A URL points at this service's own short-link origin"),
    "destination_not_allowed": (
        422,
        "A URL's host is not in the organization's `allowed_destination_hosts`",
    ),
    "too_small_to_scan": (422, "A module would be under 0.4 mm at this size (`min_size_mm`)"),
    "low_contrast": (422, "`fg` and `bg` contrast below 4:1"),
    "inverted_colours": (422, "Light modules on a dark background without `allow_inverted=true`"),
    "invalid_logo": (
        422,
        "Not a PNG or SVG image, too large, or SVG with scripts or external links",
    ),
    "too_many_labels": (422, "More than 1000 labels in one sheet request"),
    "labels_mismatch": (422, "`per_location` is not the number of `labels`"),
    "no_locations": (422, '`location_ids: "all"` but the organization has no locations'),
    "too_many_tags": (422, "More than 100,000 tags (locations x labels) in one bulk call"),
    "timezone_required": (422, "`timezone` cannot be removed"),
    "refund_exceeds_value": (422, "Refunds would exceed the conversion's value (or it has none)"),
    "refunded_at_in_future": (422, "`refunded_at` is in the future"),
    "refunded_before_conversion": (422, "`refunded_at` is before the conversion's `occurred_at`"),
    "invalid_coordinates": (
        422,
        "Latitude outside [-90, 90], longitude outside [-180, 180], or not finite",
    ),
    "invalid_geojson": (
        422,
        "Not GeoJSON of the expected type: wrong type, empty or malformed coordinates",
    ),
    "invalid_geometry": (422, "A self-intersecting or unclosed ring"),
    "geofence_excludes_point": (422, "The location's point is outside its geofence"),
    "invalid_radius": (422, "`radius_m` is not more than 0 and at most 50 km"),
    "area_conflict": (422, "Both a geofence and a `radius_m`"),
    "invalid_timezone": (422, "Not an IANA time zone such as Europe/Paris"),
    "near_required": (422, "`within_m` needs `near=LON,LAT`"),
    "file_required": (422, "The import has no file (multipart field `file`) or body"),
    "qr_content_too_long": (422, "The tag's link does not fit a QR code at this error correction"),
    "invalid_name": (422, "An organization or API key name is empty, too long or unprintable"),
    "webhook_url_insecure": (422, "A webhook URL must be https (http only in development/test)"),
    "webhook_url_not_public": (
        422,
        "The webhook URL's host resolves to a private, loopback, link-local or other "
        "non-public address",
    ),
    "webhook_url_unresolvable": (422, "The webhook URL's host does not resolve"),
    "invalid_email": (422, "Not an e-mail address (dashboard users)"),
    "invalid_role": (422, "A dashboard role other than admin, editor or viewer"),
    "weak_password": (422, "A dashboard password shorter than 10 or longer than 1024 characters"),
    "email_taken": (409, "A dashboard user with this e-mail already exists (any organization)"),
    "last_admin": (409, "The change would leave the organization without a dashboard admin"),
    "user_not_found": (404, "No such dashboard user, or another organization's"),
    "invalid_link": (404, "A dashboard sign-in link that is unknown, used or expired"),
    "invalid_credentials": (401, "Wrong e-mail or password at dashboard sign-in"),
    "rate_limited": (429, "Too many requests; retry after `Retry-After` seconds"),
    "headers_too_large": (431, "The request headers exceed `PASSERELLE_MAX_HEADER_BYTES`"),
    "internal_error": (500, "Unexpected failure; rolled back and logged"),
    "unavailable": (503, "The scan could not be recorded; retry"),
    "database_unavailable": (503, "The database cannot be reached; retry after `Retry-After`"),
    "render_busy": (503, "Too many renders waiting; retry after `Retry-After`"),
}


#: ``errors[].type`` (and message) of a value holding NUL (U+0000), which PostgreSQL
#: refuses in text: 422 ``validation_error`` (:mod:`api.routing` refuses it first).
NUL_ERROR_TYPE = "string_contains_nul"
NUL_MESSAGE = "text contains a NUL character (U+0000)"


def is_nul_refused(exc: DataError) -> bool:
    """Whether a database error is psycopg refusing NUL in a text parameter
    ("PostgreSQL text fields cannot contain NUL (0x00) bytes")."""
    return "NUL (0x00)" in str(exc.orig)


class FieldProblem(BaseModel):
    """One field's problem in a 422 ``validation_error``."""

    loc: list[str | int] = Field(
        description="Where: `body`, `query` or `path`, then field names and list indexes",
        examples=[["body", "destination_url"]],
    )
    msg: str = Field(
        description="What is wrong, in English", examples=["URL scheme must be http or https"]
    )
    type: str = Field(description="Machine-readable kind of problem", examples=["value_error"])


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error is answered
    (``application/problem+json``)."""

    type: str = Field(
        description="URN naming the problem: `urn:passerelle:problem:<code>`",
        examples=["urn:passerelle:problem:campaign_not_found"],
    )
    title: str = Field(description="Short summary of the status", examples=["Not found"])
    status: int = Field(description="The HTTP status code", examples=[404])
    detail: str = Field(
        description="What happened to this request, for people",
        examples=["Campaign 42 not found"],
    )
    code: str = Field(
        description="Stable identifier to switch on (the catalogue is in the API description)",
        examples=["campaign_not_found"],
    )
    required_scope: str | None = Field(
        default=None,
        description="The scope the API key lacks (403 `insufficient_scope` only)",
        examples=["campaigns:write"],
    )
    error_id: str | None = Field(
        default=None,
        description="500 `internal_error` only: the id (16 hex digits) the failure was "
        "logged under; quote it when reporting the failure",
        examples=["3f9c2a7d51e0b846"],
    )
    errors: list[FieldProblem] | None = Field(
        default=None,
        description="Field problems of a 422 (at most 20)",
        examples=[[{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]],
    )


#: Codes every ``/v1`` operation can answer, whatever it does.
MANAGEMENT_CODES = (
    "missing_api_key",
    "invalid_api_key",
    "insufficient_scope",
    "payload_too_large",
    "validation_error",
    "rate_limited",
    "database_unavailable",
)
#: Codes of an operation that takes a JSON body.
JSON_BODY_CODES = ("bad_request", "unsupported_media_type", "validation_error")
#: Codes any path can answer.
ANY_PATH_CODES = ("headers_too_large", "internal_error")


def problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem ``codes`` (keys of :data:`PROBLEM_CODES`): one
    entry per status, ``application/problem+json`` only, its schema restricting ``code``
    to the codes given and its description listing them. Raises ``KeyError`` for a code
    missing from the catalogue."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(PROBLEM_CODES[code][0], []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, status_codes in sorted(by_status.items()):
        listing = "; ".join(f"`{c}`: {PROBLEM_CODES[c][1]}" for c in status_codes)
        responses[status] = {
            "description": f"{_STATUS_CODES.get(status, ('', 'Error'))[1]}. {listing}.",
            "content": {
                PROBLEM_JSON: {
                    "schema": {
                        "allOf": [{"$ref": "#/components/schemas/Problem"}],
                        "properties": {"code": {"type": "string", "enum": status_codes}},
                    }
                }
            },
        }
    return responses


def documented_codes(responses: Iterable[dict[str, Any]]) -> list[str]:
    """The problem codes listed by OpenAPI responses built with :func:`problem_responses`."""
    found: list[str] = []
    for response in responses:
        schema = response.get("content", {}).get(PROBLEM_JSON, {}).get("schema", {})
        found.extend(schema.get("properties", {}).get("code", {}).get("enum", []))
    return found


def problem(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str = "",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    members: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response; ``members`` are extension members (RFC 9457 §3.2) added
    beside the standard ones, which they cannot replace."""
    default_code, default_title = _STATUS_CODES.get(status, ("error", "Error"))
    code = code or default_code
    body: dict[str, Any] = {
        "type": f"urn:passerelle:problem:{code}",
        "title": title or default_title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    for key, value in (members or {}).items():
        body.setdefault(key, value)
    headers = {**LOCKED_DOWN_HEADERS, **headers} if headers else LOCKED_DOWN_HEADERS
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


def _method_table(routes: Iterable[Any]) -> list[tuple[Any, frozenset[str]]]:
    """``(path regex, methods)`` of every route with methods, included routers walked."""
    from api.routing import walk_routes  # that module imports this one

    return [
        (compile_path(path)[0], frozenset(methods))
        for path, route in walk_routes(routes)
        if (methods := getattr(route, "methods", None))
    ]


def allowed_methods(request: Request) -> str:
    """The ``Allow`` value of a 405: every method some route of the app answers on this
    path (RFC 9110 §15.5.6), e.g. ``"GET, POST"``; empty when none is found (mounted
    apps), and then Starlette's own header stays. Starlette's lists only the first route
    whose path matched, so ``PUT /v1/campaigns`` said ``Allow: POST`` without ``GET``.
    Paths under a short-link prefix add what the scan endpoint answers there (``GET,
    HEAD``), since it serves them in front of the router."""
    from api.scan_endpoint import SHORT_LINKS  # that module imports this one

    state = request.app.state
    table = getattr(state, "method_table", None)
    if table is None:
        table = state.method_table = _method_table(request.app.router.routes)
    path: str = request.scope["path"]
    methods: set[str] = set()
    for regex, route_methods in table:
        if regex.match(path):
            methods |= route_methods
    short_link = SHORT_LINKS.get(path[: path.find("/", 1) + 1])
    if short_link is not None and "GET" in methods:
        methods |= short_link.methods
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Route domain errors, validation errors and HTTP errors through :func:`problem`."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem(
            exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
            headers=exc.headers or None,
            members=exc.members,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        all_errors = list(exc.errors())
        for error in all_errors:
            if error.get("type") == "json_invalid":
                reason = error.get("ctx", {}).get("error", "not JSON")
                position = error["loc"][-1] if error.get("loc") else "?"
                return problem(
                    400,
                    detail=f"The body is not valid JSON ({reason} at character {position}); "
                    "send one JSON object, UTF-8 encoded",
                )
        errors = _clean(all_errors[:MAX_FIELD_ERRORS])
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        if len(all_errors) > MAX_FIELD_ERRORS:
            detail += f" (and {len(all_errors) - MAX_FIELD_ERRORS} more problems not listed)"
        # A geographic problem keeps its own code at the top (``invalid_coordinates``...),
        # as when a service finds it; the field list is the same.
        code = errors[0]["type"] if errors and errors[0]["type"] in GEO_ERROR_CODES else None
        return problem(422, code=code, detail=detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405 and (allow := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allow}
        return problem(exc.status_code, detail=str(exc.detail), headers=headers)

    database_log = _ThrottledLog(DATABASE_LOG_INTERVAL_S)

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # Connection refused, database dropped, server gone mid-request, pool exhausted:
        # a 503 the client may retry, and one log line per kind of failure.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        kind = type(cause).__name__
        sqlstate = getattr(cause, "sqlstate", None)
        if sqlstate:
            kind = f"{kind} {sqlstate}"
        first_line = (str(cause).strip().splitlines() or ["no detail"])[0]
        # The same failure repeats with the same message; a different one is logged too.
        database_log.warning(
            f"{kind}: {first_line}",
            "database unavailable (%s: %s); answering 503 database_unavailable "
            "(the same failure is not logged again for %d s)",
            kind,
            first_line,
            DATABASE_LOG_INTERVAL_S,
        )
        return problem(
            503,
            code="database_unavailable",
            detail=f"The database cannot be reached; retry in {DATABASE_RETRY_AFTER_S} s",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # Safety net behind api.routing's check: a NUL that still reaches a query (a CSV
        # import, a header) is the client's input, not a server fault.
        if is_nul_refused(exc):
            return problem(
                422,
                detail=f"A value cannot be stored: {NUL_MESSAGE}",
                errors=[{"loc": [], "msg": NUL_MESSAGE, "type": NUL_ERROR_TYPE}],
            )
        return internal_error(request.method, request.url.path, exc, traceback=True)

    for database_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(database_error, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Clients get the same problem+json shape as for any other error, and nothing
        # about the cause; Starlette re-raises the exception afterwards and the server
        # logs its traceback, right after the line naming the request.
        return internal_error(request.method, request.url.path, exc, traceback=False)


def internal_error(
    method: str,
    path: str,
    exc: BaseException,
    *,
    traceback: bool,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The 500 ``internal_error`` problem for ``exc``, raised while answering ``method``
    ``path`` (the path only: a query string may carry tokens), and its log line.

    The document carries an ``error_id`` member (16 hex digits, random) that the log line
    names too, so that a client quoting it leads to the request and its traceback; the
    exception's message is never sent. ``traceback``: whether the line carries it (False
    where the server logs it anyway, after Starlette re-raises)."""
    error_id = secrets.token_hex(8)
    log.error(
        "internal error %s answering %s %r: %s",
        error_id,
        method,
        path,
        type(exc).__name__,
        exc_info=exc if traceback else None,
    )
    return problem(
        500,
        detail=f"An unexpected error occurred; it has been logged as {error_id}.",
        headers=headers,
        members={"error_id": error_id},
    )


#: ``Retry-After`` of a 503 ``database_unavailable``, in seconds.
DATABASE_RETRY_AFTER_S = 5
#: A kind of database failure is logged at most once per this many seconds.
DATABASE_LOG_INTERVAL_S = 60


class _ThrottledLog:
    """Log one line per failure kind, then nothing for that kind during ``interval_s``
    seconds: an outage under load must not write a traceback per request."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            return
        self._last[kind] = now
        log.warning(message, *args)
