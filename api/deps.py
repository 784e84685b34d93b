"""Typed FastAPI dependencies: the unit-of-work session and the authenticated organization."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from campaigns.db import CACHE_CHANGES, note_cache_changes, unit_of_work
from campaigns.errors import RateLimited, Unauthorized
from campaigns.feed.store import FEED_COMMITTED
from campaigns.models import Campaign, Organization, RedirectRule, Tag, Webhook
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService
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
    """A session per request: commit on success, roll back on error (unit of work)."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
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


# scope="function": commit before the response is sent, so a 2xx means stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_organization_id(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    """The organization of the bearer API key. Raises :class:`Unauthorized` (401), and
    :class:`RateLimited` (429) past the key's token bucket (``app.state.api_rate_limiter``,
    ``PASSERELLE_API_RATE_LIMIT_PER_S`` and ``_BURST``; None when rate limits are off)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer API key", code="missing_api_key")
    api_key = await authenticate(session, secret=credentials.credentials)
    limiter: RateLimiter | None = request.app.state.api_rate_limiter
    if limiter is not None:
        # Keyed by key id, not secret: each key has its own budget, several keys of one
        # organization (rotation, separate integrations) do not share one.
        wait = limiter.check(f"api-key:{api_key.id}")
        if wait:
            retry_after = str(max(1, math.ceil(wait)))  # RFC 9110 §10.2.3: whole seconds
            raise RateLimited(
                f"Too many requests with this API key; retry in {retry_after} s",
                retry_after=retry_after,
            )
    return api_key.organization_id


OrganizationId = Annotated[int, Depends(get_organization_id)]


async def get_organization_id_released(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    """The organization of the bearer API key, authenticated in a unit of work of its
    own that is committed before the route runs. For routes that wait on CPU work
    (rendering): they open short units of work themselves (:data:`SessionFactory`) and
    hold no connection, let alone an open transaction, while they wait. Raises
    :class:`Unauthorized` (401)."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
        return await get_organization_id(request, session, credentials)


ReleasedOrganizationId = Annotated[int, Depends(get_organization_id_released)]


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
