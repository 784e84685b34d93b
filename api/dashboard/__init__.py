"""The marketer's web dashboard under ``/app``: server-rendered pages (Jinja2), a little
plain JavaScript (chart, map, live feed) and vendored front-end libraries in ``static/``.

:func:`install` adds its routes, its static files (``/app/static``) and its error pages:
under ``/app`` a domain error, an unknown page or a refused action is an HTML page in the
user's language, never problem+json; ``/v1`` is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from api.dashboard import routes
from api.dashboard.security import Forbidden, SignInRequired, sign_in_url
from api.errors import NUL_MESSAGE
from campaigns.errors import DomainError

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _is_dashboard(request: Request) -> bool:
    return request.url.path == "/app" or request.url.path.startswith("/app/")


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app`` (after :func:`api.errors.install_error_handlers`)."""
    app.include_router(routes.router)
    app.mount("/app/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        target = sign_in_url(request)
        if exc.expired:
            target += "&expired=true"
        return RedirectResponse(target, status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        f = routes.formatter(request)
        message = f.t("forbidden_csrf") if exc.reason == "csrf" else f.t("forbidden_role")
        return routes.error_page(request, 403, f.t("forbidden"), message)

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(Forbidden, forbidden)

    for kind in (DomainError, StarletteHTTPException, RequestValidationError, DataError):
        api_handler = app.exception_handlers[kind]

        async def handler(request: Request, exc: Any, api_handler: Any = api_handler) -> Response:
            if not _is_dashboard(request):
                return await api_handler(request, exc)  # type: ignore[no-any-return]
            f = routes.formatter(request)
            status = getattr(exc, "status", None) or getattr(exc, "status_code", None) or 422
            if isinstance(exc, DataError):  # 422 for a NUL, else 500 (logged by the API's)
                status = (await api_handler(request, exc)).status_code
                message = NUL_MESSAGE if status == 422 else ""
                return routes.error_page(request, status, f.t("error"), message)

            if status == 404:
                return routes.error_page(request, 404, f.t("not_found"), f.t("not_found_text"))
            detail = getattr(exc, "detail", "")
            if isinstance(exc, RequestValidationError):
                detail = "; ".join(str(e.get("msg", "")) for e in exc.errors()[:5])
            return routes.error_page(request, int(status), f.t("error"), str(detail))

        app.add_exception_handler(kind, handler)
