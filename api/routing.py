"""Route class of the management API: JSON bodies must be sent as JSON.

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
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.errors import problem


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value is ``application/json`` or ``application/*+json``
    (RFC 6839 §3.1), parameters such as ``charset`` allowed."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JsonBodyRoute(APIRoute):
    """An :class:`APIRoute` that answers 415 ``unsupported_media_type`` (problem+json)
    when its JSON body arrives with another ``Content-Type``; see the module docstring."""

    @property
    def takes_json_body(self) -> bool:
        """True when the body parameter is a JSON model (not a file or form)."""
        field = self.body_field
        return field is not None and not isinstance(field.field_info, (params.Form, params.File))

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
