"""Typed FastAPI dependencies: the unit-of-work session and the authenticated organization."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from api.openapi import operation_id
from campaigns import scopes
from campaigns.db import CACHE_CHANGES, note_cache_changes, unit_of_work
from campaigns.errors import Forbidden, RateLimited, Unauthorized
from campaigns.feed.store import FEED_COMMITTED
from campaigns.models import Campaign, Organization, RedirectRule, Tag, Webhook
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService
from campaigns.scopes import SCOPES, grants
from campaigns.services.audit import Actor, record_changes
from campaigns.services.organizations import authenticate
from campaigns.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer psk_...`")


@event.listens_for(Session, "after_flush")
def _remember_cache_changes(session: Session, _flush_context: object) -> None:
    """Note the tags and campaigns a request changed, so this process's tag cache is
    refreshed right after commit (other processes learn it through NOTIFY)."""
    objects = (*session.new, *session.dirty, *session.deleted)
    note_cache_changes(
        session,
        tag_ids=[obj.id for obj in objects if isinstance(obj, Tag)],
        campaign_ids=[obj.id for obj in objects if isinstance(obj, Campaign)],
        rule_ids=[obj.id for obj in objects if isinstance(obj, RedirectRule)],
        webhook_ids=[obj.id for obj in objects if isinstance(obj, Webhook)],
        organization_ids=[obj.id for obj in objects if isinstance(obj, Organization)],
    )


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request: commit on success, roll back on error (unit of work). The
    management writes it made are recorded in the audit trail just before the commit, in
    the same transaction (:func:`campaigns.services.audit.record_changes`), by the
    request's :class:`Principal` under the route's operation id."""
    async with audited_unit_of_work(request, request.app.state.sessionmaker) as session:
        yield session
    if session.info.pop(FEED_COMMITTED, False):
        request.app.state.feed.committed()  # the live feed: tell the other processes
    changes = session.info.pop(CACHE_CHANGES, None)
    if changes:
        scans: ScanService = request.app.state.scans
        await scans.reload(
            tag_ids=changes["tags"],
            campaign_ids=changes["campaigns"],
            rule_ids=changes["rules"],
            webhook_ids=changes["webhooks"],
            organization_ids=changes["organizations"],
        )


@asynccontextmanager
async def audited_unit_of_work(
    request: Request, factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    """A unit of work of its own (for a route that holds no session while it waits,
    :data:`SessionFactory`) whose management writes are recorded in the audit trail
    before the commit, as :func:`get_session` does: by the request's caller, under the
    route's operation id."""
    async with unit_of_work(factory) as session:
        yield session
        await record_changes(session, actor=_actor(request), action=_action(request))


# scope="function": commit before the response is sent, so a 2xx means stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls the management API: an API key (``api_key_id``, its visible ``prefix``)
    of ``organization_id`` holding ``scopes`` (:mod:`campaigns.scopes`)."""

    organization_id: int
    api_key_id: int
    prefix: str
    scopes: frozenset[str]


def _actor(request: Request) -> Actor | None:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        # A dashboard user (api/dashboard/security.py), or nobody accountable.
        user: Actor | None = getattr(request.state, "dashboard_actor", None)
        return user
    return Actor(
        organization_id=principal.organization_id,
        type="api_key",
        id=principal.api_key_id,
        label=principal.prefix,
    )


def _action(request: Request) -> str:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return request.method.lower()
    return route.operation_id or operation_id(route)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The bearer API key, looked up in a short unit of work of its own (committed before
    the route runs, so routes that wait on CPU work hold no connection, and a revoked key
    is refused by every process from its next request on: keys are not cached). Raises
    :class:`Unauthorized` (401), and :class:`RateLimited` (429) past the key's token
    bucket (``app.state.api_rate_limiter``, ``PASSERELLE_API_RATE_LIMIT_PER_S`` and
    ``_BURST``; None when rate limits are off)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer API key", code="missing_api_key")
    async with unit_of_work(request.app.state.sessionmaker) as session:
        api_key = await authenticate(session, secret=credentials.credentials)
        principal = Principal(
            organization_id=api_key.organization_id,
            api_key_id=api_key.id,
            prefix=api_key.prefix,
            scopes=frozenset(api_key.scopes),
        )
    limiter: RateLimiter | None = request.app.state.api_rate_limiter
    if limiter is not None:
        # Keyed by key id, not secret: each key has its own budget, several keys of one
        # organization (rotation, separate integrations) do not share one.
        wait = limiter.check(f"api-key:{principal.api_key_id}")
        if wait:
            retry_after = str(max(1, math.ceil(wait)))  # RFC 9110 §10.2.3: whole seconds
            raise RateLimited(
                f"Too many requests with this API key; retry in {retry_after} s",
                retry_after=retry_after,
            )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str) -> Any:
    """The dependency (``Depends``) that admits only keys holding ``scope`` or ``admin``:
    ``dependencies=[require_scope("campaigns:write")]`` on a route or a router, the one
    place a route's scope is written. Raises :class:`Forbidden` (403
    ``insufficient_scope``, ``required_scope`` naming it)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check_scope(principal: PrincipalDep) -> None:
        if not grants(principal.scopes, scope):
            raise Forbidden(
                f"This API key lacks the `{scope}` scope",
                code="insufficient_scope",
                members={"required_scope": scope},
            )

    check_scope.__name__ = f"require_{scope.replace(':', '_')}"
    return Depends(check_scope)


#: The scope dependencies, one per scope (:func:`require_scope`).
CAMPAIGNS_READ = require_scope(scopes.CAMPAIGNS_READ)
CAMPAIGNS_WRITE = require_scope(scopes.CAMPAIGNS_WRITE)
CONVERSIONS_WRITE = require_scope(scopes.CONVERSIONS_WRITE)
REPORTS_READ = require_scope(scopes.REPORTS_READ)
ADMIN = require_scope(scopes.ADMIN)


async def get_organization_id(principal: PrincipalDep) -> int:
    """The organization of the bearer API key (see :func:`get_principal`)."""
    return principal.organization_id


OrganizationId = Annotated[int, Depends(get_organization_id)]
#: The same as :data:`OrganizationId` now that keys are always checked in a unit of work
#: of their own; kept for the routes that wait on CPU work and say so.
ReleasedOrganizationId = OrganizationId


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    """The app's session factory, for routes that open their own short units of work."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return factory


SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
