"""Who is signed into the dashboard, what they may do, and the headers every page sends.

- The session cookie (:data:`SESSION_COOKIE`) is ``HttpOnly; SameSite=Lax; Path=/app``,
  ``Secure`` when the base URL is https, and carries a random token whose SHA-256 keys a
  ``dashboard_sessions`` row (:mod:`campaigns.services.sessions`).
- The installer cookie (:data:`~campaigns.scanning.installers.INSTALLER_COOKIE`,
  ``Path=/``): set with the session and on every page a signed-in user loads, cleared on
  sign-out; it makes the phone's scans of its organization's tags internal (staff
  testing posters, issue 11), see :mod:`campaigns.scanning.installers`.
- CSRF: every unsafe request (anything but GET, HEAD, OPTIONS) of a signed-in user must
  carry the session's token, as the form field ``csrf`` or the ``X-CSRF-Token`` header
  (synchroniser token, OWASP CSRF Prevention Cheat Sheet). The anonymous forms (sign-in,
  choose a password) use a double-submit cookie (:data:`ANON_CSRF_COOKIE`).
- Roles: :data:`Viewer` reads, :data:`Editor` also changes campaigns, tags and stores,
  :data:`Admin` also users and API keys; a lower role gets the 403 page.
- :func:`csp` is the Content-Security-Policy of every page: scripts and styles only from
  the dashboard's own static files (plus a per-response nonce), images from itself (and
  the map tile origin when set), no frames, no plugins.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData

from api.deps import SessionDep
from campaigns.db import unit_of_work
from campaigns.scanning.installers import INSTALLER_COOKIE, MAX_LIFETIME_S, installer_token
from campaigns.services.audit import Actor
from campaigns.services.sessions import Current, current_session
from campaigns.settings import Settings

SESSION_COOKIE: Final = "passerelle_session"
ANON_CSRF_COOKIE: Final = "passerelle_csrf"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Signed:
    """What pages show of the signed-in user (copied out of the ORM rows)."""

    email: str
    role: str
    organization_id: int
    csrf: str
    user_id: int


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page (``expired`` when the
    cookie named a session that has ended)."""

    def __init__(self, *, expired: bool = False) -> None:
        super().__init__("sign in required")
        self.expired = expired


class Forbidden(Exception):
    """The signed-in user may not do this (``reason``: ``role`` or ``csrf``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cookie_secure(settings: Settings) -> bool:
    """Cookies get ``Secure`` when the service's base URL is https."""
    return urlsplit(settings.base_url).scheme == "https"


def set_installer_cookie(
    response: Response,
    settings: Settings,
    *,
    organization_id: int,
    user_id: int,
    now: dt.datetime | None = None,
) -> Response:
    """Add the installer cookie of ``user_id`` of ``organization_id`` to ``response``:
    a token signed under the current secret key, valid for the dashboard's idle timeout
    (at most :data:`~campaigns.scanning.installers.MAX_LIFETIME_S`) from ``now``;
    ``Path=/`` (every short-link prefix, in any case), ``HttpOnly``, ``SameSite=Lax``,
    ``Secure`` when the base URL is https."""
    lifetime = min(settings.dashboard_session_idle_s, MAX_LIFETIME_S)
    expires_at = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=lifetime)
    token = installer_token(
        settings.keyring, organization_id=organization_id, user_id=user_id, expires_at=expires_at
    )
    response.set_cookie(
        INSTALLER_COOKIE,
        token,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(settings),
    )
    return response


def clear_installer_cookie(response: Response, settings: Settings) -> Response:
    """Add the ``Set-Cookie`` that removes the installer cookie (sign-out)."""
    response.delete_cookie(
        INSTALLER_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(settings)
    )
    return response


def csp(settings: Settings, nonce: str) -> str:
    """The Content-Security-Policy of dashboard pages (no inline script without
    ``nonce``, no third-party origin but the map tiles')."""
    images = "'self' data: blob:"
    if settings.map_tiles_url:
        parts = urlsplit(settings.map_tiles_url.replace("{s}", "a"))
        images += f" {parts.scheme}://{parts.netloc}"
        if "{s}" in settings.map_tiles_url:
            images += f" {parts.scheme}://*.{parts.netloc.split('.', 1)[-1]}"
    return (
        "default-src 'none'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self'; "
        f"img-src {images}; "
        "connect-src 'self'; "
        "font-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def security_headers(settings: Settings, nonce: str) -> dict[str, str]:
    """Headers of every dashboard page."""
    return {
        "Content-Security-Policy": csp(settings, nonce),
        "X-Content-Type-Options": "nosniff",
        # Issue 12: no page tells anyone where it was; nothing here reads Referer.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


async def _form(request: Request) -> FormData:
    return await request.form()


async def presented_csrf(request: Request) -> str | None:
    """The CSRF token of a request: the ``X-CSRF-Token`` header, else the ``csrf``
    form field (url-encoded or multipart)."""
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await _form(request)).get("csrf")
        return value if isinstance(value, str) else None
    return None


async def signed_in(request: Request, session: SessionDep) -> Current:
    """The request's live session and user (moved forward: inactivity counts from now).
    Raises :class:`SignInRequired` without one, :class:`Forbidden` ``csrf`` for an unsafe
    method without the session's CSRF token."""
    settings: Settings = request.app.state.settings
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    current = await current_session(session, token=token, idle_s=settings.dashboard_session_idle_s)
    if current is None:
        await session.commit()  # the ended session's row is deleted even though we raise
        raise SignInRequired(expired=True)
    if request.method not in SAFE_METHODS and not current.csrf_ok(await presented_csrf(request)):
        raise Forbidden("csrf")
    # Plain values for the page: error pages are rendered after the unit of work is over.
    # Who the dashboard's writes are audited as (api.deps records them at commit).
    request.state.dashboard_actor = Actor(
        organization_id=current.user.organization_id,
        type="user",
        id=current.user.id,
        label=current.user.email,
    )
    request.state.viewer = Signed(
        email=current.user.email,
        role=current.user.role,
        organization_id=current.user.organization_id,
        csrf=current.session.csrf_token,
        user_id=current.user.id,
    )
    return current


Viewer = Annotated[Current, Depends(signed_in)]


async def editor(current: Viewer) -> Current:
    """A signed-in admin or editor. Raises :class:`Forbidden` ``role`` for a viewer."""
    if current.user.role not in ("admin", "editor"):
        raise Forbidden("role")
    return current


Editor = Annotated[Current, Depends(editor)]


async def admin(current: Viewer) -> Current:
    """A signed-in admin. Raises :class:`Forbidden` ``role`` otherwise."""
    if current.user.role != "admin":
        raise Forbidden("role")
    return current


Admin = Annotated[Current, Depends(admin)]


async def released_organization(request: Request) -> AsyncIterator[int]:
    """The signed-in user's organization, checked in a unit of work of its own that is
    over before the route runs (for routes that wait on rendering: no connection held)."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
        current = await signed_in(request, session)
        organization_id = current.user.organization_id
    yield organization_id


ReleasedOrganization = Annotated[int, Depends(released_organization)]


def sign_in_url(request: Request) -> str:
    """The sign-in page, with ``next`` the current path (same-origin only)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/app/sign-in?next=" + quote(target, safe="")


def safe_next(value: str | None) -> str:
    """A post-sign-in destination: a path under ``/app/`` (never another origin), else
    the campaigns list."""
    if value and value.startswith("/app/") and not value.startswith("/app//"):
        if "\\" not in value and "\n" not in value and "\r" not in value:
            return value
    return "/app/campaigns"


def new_nonce() -> str:
    """A fresh CSP nonce (128 random bits)."""
    return secrets.token_urlsafe(16)
