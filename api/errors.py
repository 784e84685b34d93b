"""One renderer for every error: RFC 9457 ``application/problem+json``.

Shape: ``{"type": str, "title": str, "status": int, "detail": str, "code": str}`` plus
``"errors": [{"loc": [...], "msg": str, "type": str}]`` for field problems (422).
``type`` is ``about:blank`` style URN ``urn:passerelle:problem:<code>``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.errors import DomainError

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
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


class FieldProblem(BaseModel):
    """One field's problem in a 422 ``validation_error``."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error is answered
    (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldProblem] | None = None


def _documented(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}


#: Error answers shared by every management route, for the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("`missing_api_key` or `invalid_api_key`"),
    404: _documented("Not found, or another organization's (`*_not_found`)"),
    413: _documented("`payload_too_large`"),
    422: _documented("`validation_error` (with `errors`) or a rule's own code"),
}


def problem(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str = "",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response; ``extensions`` adds members (RFC 9457 §3.2)."""
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
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


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
            extensions=exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        all_errors = list(exc.errors())
        errors = _clean(all_errors[:MAX_FIELD_ERRORS])
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        if len(all_errors) > MAX_FIELD_ERRORS:
            detail += f" (and {len(all_errors) - MAX_FIELD_ERRORS} more problems not listed)"
        return problem(422, detail=detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, detail=str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Clients get the same problem+json shape as for any other error, and nothing
        # about the cause; Starlette re-raises the exception afterwards, so it is logged.
        return problem(500, detail="An unexpected error occurred; it has been logged.")
