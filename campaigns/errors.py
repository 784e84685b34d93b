"""Domain errors. Each carries an HTTP status and a stable machine ``code``.

The API renders them as RFC 9457 ``application/problem+json``
(``type, title, status, detail, code`` and ``errors`` for field problems).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose.

    ``status`` is the HTTP status the API answers with, ``code`` a stable
    snake_case identifier clients may switch on, ``errors`` optional field problems
    (``[{"loc": [...], "msg": str, "type": str}]``), ``members`` optional extension
    members of the problem document (RFC 9457 §3.2), e.g. ``{"size_bytes": 300}``.
    """

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        members: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = errors
        #: Extra HTTP response headers (``Retry-After``, ``WWW-Authenticate``).
        self.headers = headers or {}
        self.members = members or {}


class NotFound(DomainError):
    """The resource does not exist or belongs to another organization (404)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    """The request clashes with stored state (409)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(DomainError):
    """The resource existed but can no longer be acted on (410)."""

    status = 410
    code = "gone"
    title = "Gone"


class InvalidInput(DomainError):
    """Semantically invalid input detected by a service rather than by a schema (422)."""

    status = 422
    code = "validation_error"
    title = "Invalid input"


class Unauthorized(DomainError):
    """Missing, unknown or revoked API key (401)."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    """Authenticated, but not allowed to do this (403), e.g. an API key without the
    scope a route needs (``insufficient_scope``, member ``required_scope``)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimited(DomainError):
    """Too many requests for one API key (429); ``Retry-After`` says when to come back."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: str) -> None:
        super().__init__(detail, headers={"Retry-After": retry_after})
