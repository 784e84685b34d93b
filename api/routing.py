"""Route classes of the management API and the dashboard: the checks every request of
``/v1`` and ``/app`` gets before its parameters are parsed.

NUL (U+0000): PostgreSQL refuses it in text, so a NUL reaching a query would be a 500.
:class:`CheckedRoute` refuses it at one boundary, wherever it arrives: a path or query
parameter, a form field (url-encoded or multipart; file contents are bytes and are not
looked at) or any string (or object key) of a JSON body, at any depth. The answer is the
ordinary 422 ``validation_error`` (``errors[].type`` ``string_contains_nul``, ``loc``
naming the parameter), rendered as problem+json under ``/v1`` and as the error page
under ``/app``. The scan path (``/s/``, ``/n/``) bounds and checks its own values
(:mod:`campaigns.scanning.request`) and does not use these classes.

JSON bodies must be sent as JSON.

FastAPI parses a body without ``Content-Type`` as JSON and answers a ``text/plain`` one
with a confusing 422; clients deserve to be told what is wrong. :class:`JsonBodyRoute`
answers 415 ``unsupported_media_type`` before the body is read when a route whose body is
a JSON model (a pydantic model parameter) receives anything but ``application/json`` or
``application/*+json``. Routes taking other media types opt out by construction: an
``UploadFile``/``Form`` parameter or reading ``request.body()`` / ``request.stream()``
itself (no body model) is never checked.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.errors import NUL_ERROR_TYPE, NUL_MESSAGE, problem


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """The media type (lower case; ``""`` when ``value`` is empty or None) and the
    ``charset`` parameter (lower case, or None) of a ``Content-Type`` value (RFC 9110
    §8.3), e.g. ``("text/csv", "windows-1252")``."""
    if not value or not value.strip():
        return "", None
    message = email.message.Message()
    message["content-type"] = value
    return message.get_content_type(), message.get_content_charset()


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value is ``application/json`` or ``application/*+json``
    (RFC 6839 §3.1), parameters such as ``charset`` allowed."""
    main, _, subtype = parse_content_type(content_type)[0].partition("/")
    return main == "application" and (subtype == "json" or subtype.endswith("+json"))


def walk_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(full path, route)`` of every route in ``routes`` (an app's or a router's), those
    of included routers walked with their prefix: FastAPI up to 0.16x copies them into
    ``app.routes``, later versions keep each included router behind one
    ``_IncludedRouter`` entry (``original_router``, ``include_context.prefix``), where a
    search of ``app.routes`` for ``APIRoute`` finds nothing."""
    for route in routes:
        if hasattr(route, "original_router"):
            included = route.original_router.routes
            yield from walk_routes(included, prefix + route.include_context.prefix)
        elif hasattr(route, "path"):
            yield prefix + route.path, route


NUL = "\x00"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _nul_error(*loc: str | int) -> dict[str, Any]:
    return {"loc": loc, "msg": NUL_MESSAGE, "type": NUL_ERROR_TYPE, "input": None}


def json_nul_paths(document: Any) -> list[tuple[str | int, ...]]:
    """Where a parsed JSON ``document`` holds a string (value or object key) containing
    NUL: each a path of object keys and list indexes from the root. Iterative, so a
    deeply nested document cannot exhaust the stack."""
    found: list[tuple[str | int, ...]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                found.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    found.append((*path, key))
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return found


async def refuse_nul(request: Request, *, json_body: bool) -> None:
    """Raise :class:`RequestValidationError` (422) when a path or query parameter, a form
    field or (``json_body``) a string of the JSON body contains NUL. A body that cannot
    be read or parsed (not JSON, malformed multipart, the client gone, over the size
    limit) is left to the route, which answers as without this check (400, 413)."""
    errors: list[dict[str, Any]] = []
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            errors.append(_nul_error("path", name))
    raw_query: bytes = request.scope.get("query_string", b"")
    if b"%00" in raw_query or b"\x00" in raw_query:
        for name, value in request.query_params.multi_items():
            if NUL in name or NUL in value:
                errors.append(_nul_error("query", name))
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_FORM_TYPES):
        try:
            # The body first: Starlette reads a request's stream once, and a route that
            # reads the body itself after this parse (an import, a logo) would fail with
            # "Stream consumed", a 500; the form is then parsed from the kept body.
            await request.body()
            form = (await request.form()).multi_items()
        except HTTPException:
            raise  # Starlette's 400 for a malformed form, as the route would answer
        except Exception:  # cut or too large: the route answers (400, 413)
            form = []
        for name, value in form:
            if NUL in name or (isinstance(value, str) and NUL in value):
                errors.append(_nul_error("body", name))
            elif not isinstance(value, str) and value.filename and NUL in value.filename:
                errors.append(_nul_error("body", name, "filename"))
    elif json_body and is_json_media_type(content_type):
        try:
            document = await request.json()
        except Exception:  # not JSON, cut or too large: the route answers (400, 413)
            document = None
        for path in json_nul_paths(document):
            errors.append(_nul_error("body", *path))
    if errors:
        raise RequestValidationError(errors)


class CheckedRoute(APIRoute):
    """An :class:`APIRoute` that refuses NUL in any parameter (see the module docstring)
    before its dependencies run. Every ``/v1`` and ``/app`` route is one (a test checks)."""

    @property
    def takes_json_body(self) -> bool:
        """True when the body parameter is a JSON model (not a file or form)."""
        field = self.body_field
        return field is not None and not isinstance(field.field_info, (params.Form, params.File))

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        json_body = self.takes_json_body

        async def checked(request: Request) -> Response:
            await refuse_nul(request, json_body=json_body)
            return await handler(request)

        return checked


class JsonBodyRoute(CheckedRoute):
    """An :class:`APIRoute` that answers 415 ``unsupported_media_type`` (problem+json)
    when its JSON body arrives with another ``Content-Type``; see the module docstring."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.takes_json_body:
            return handler

        async def json_only(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if not is_json_media_type(content_type):
                sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
                return problem(
                    415,
                    detail=f"The body must be JSON sent with Content-Type: application/json "
                    f"(got {sent})",
                )
            return await handler(request)

        return json_only
