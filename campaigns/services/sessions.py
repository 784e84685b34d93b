"""Dashboard sessions: server-side rows behind a random cookie token.

The cookie holds 32 random bytes (``secrets.token_urlsafe``); the row holds their
SHA-256, the user, a per-session CSRF token (32 random bytes, compared in constant time)
and ``last_seen_at``. A session unused for ``idle_s`` seconds is over (and deleted when
next presented); signing out deletes the row.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.models import DashboardSession, DashboardUser, utcnow
from campaigns.services.users import token_hash

#: ``last_seen_at`` is written at most this often per session (seconds): a page that
#: loads ten images must not cost ten row updates.
TOUCH_EVERY: Final = 30


@dataclass(frozen=True)
class Opened:
    """A new session and the cookie token to send (shown once, never stored)."""

    session: DashboardSession
    token: str


@dataclass(frozen=True)
class Current:
    """The session of a request and its user."""

    session: DashboardSession
    user: DashboardUser

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is this session's CSRF token (constant-time compare)."""
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.session.csrf_token.encode()
        )


async def open_session(session: AsyncSession, *, user_id: int) -> Opened:
    """Start a session for ``user_id``; returns the row and its cookie token."""
    token = secrets.token_urlsafe(32)
    row = DashboardSession(
        user_id=user_id, token_hash=token_hash(token), csrf_token=secrets.token_urlsafe(32)
    )
    session.add(row)
    await session.flush()
    return Opened(session=row, token=token)


async def current_session(
    session: AsyncSession, *, token: str, idle_s: int, now: dt.datetime | None = None
) -> Current | None:
    """The live session of cookie ``token`` with its user, its ``last_seen_at`` moved to
    now; None when unknown or idle for ``idle_s`` seconds or more (that row is deleted)."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(DashboardSession, DashboardUser)
            .join(DashboardUser, DashboardUser.id == DashboardSession.user_id)
            .where(DashboardSession.token_hash == token_hash(token))
        )
    ).first()
    if row is None:
        return None
    found, user = row
    if now - found.last_seen_at >= dt.timedelta(seconds=idle_s):
        await session.delete(found)
        await session.flush()
        return None
    if now - found.last_seen_at >= dt.timedelta(seconds=TOUCH_EVERY):
        found.last_seen_at = now
        await session.flush()
    return Current(session=found, user=user)


async def close_session(session: AsyncSession, *, token: str) -> None:
    """Sign out: delete the session of cookie ``token`` (nothing if unknown)."""
    await session.execute(
        delete(DashboardSession).where(DashboardSession.token_hash == token_hash(token))
    )


async def close_user_sessions(
    session: AsyncSession, *, user_id: int, keep_id: int | None = None
) -> None:
    """End every session of ``user_id`` but ``keep_id`` (after a password change)."""
    query = delete(DashboardSession).where(DashboardSession.user_id == user_id)
    if keep_id is not None:
        query = query.where(DashboardSession.id != keep_id)
    await session.execute(query)
