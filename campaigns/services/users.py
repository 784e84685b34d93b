"""Dashboard users: invitation by sign-in link, argon2id passwords, roles.

- Passwords are hashed with argon2id (RFC 9106) through ``argon2-cffi``'s
  :class:`~argon2.PasswordHasher` defaults (its ``RFC_9106_LOW_MEMORY`` profile: t=3,
  m=64 MiB, p=4), stored as the PHC string; a hash made with weaker parameters is
  re-hashed at the next successful sign-in.
- A sign-in link is ``{app origin}/app/sign-in/{token}``: 32 random bytes
  (``secrets.token_urlsafe``), valid :data:`LINK_VALID` hours (setting), single use; only
  its SHA-256 is stored, so a database read yields no usable link. Issuing a new link
  replaces the pending one.
- When ``PASSERELLE_SMTP_URL`` is set, links are e-mailed (:func:`mail_or_url`,
  :mod:`campaigns.mail`) inside the transaction that issues them, before its commit: an
  SMTP failure rolls the new user or link back, so the command or form can simply be
  tried again (the previous link of a reset keeps working).
- Roles: ``admin`` (everything, users and API keys included), ``editor`` (campaigns,
  tags, stores), ``viewer`` (reads only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.db import flush_unique
from campaigns.errors import Conflict, InvalidInput, NotFound, Unauthorized
from campaigns.mail import LinkKind, MailLanguage, send_async, sign_in_message
from campaigns.models import DashboardUser, utcnow

if TYPE_CHECKING:
    from campaigns.settings import Settings

Role = Literal["admin", "editor", "viewer"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
#: Shortest and longest password accepted (characters). Long passphrases are welcome;
#: the upper bound keeps one hash from costing more than any other.
MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,252}\.[^@\s]{2,63}$")
_hasher = PasswordHasher()
#: A hash to verify against when the e-mail is unknown, so both answers cost the same.
_DUMMY_HASH: Final = _hasher.hash("passerelle-no-such-user")


def hash_password(password: str) -> str:
    """argon2id PHC string of ``password``."""
    return _hasher.hash(password)


def token_hash(token: str) -> bytes:
    """SHA-256 (32 bytes) of a link or session token, as stored."""
    return hashlib.sha256(token.encode()).digest()


def normalize_email(email: str) -> str:
    """``email`` trimmed and lower case. Raises :class:`InvalidInput` ``invalid_email``."""
    value = email.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidInput(f"{email!r} is not an e-mail address", code="invalid_email")
    return value


def check_role(role: str) -> Role:
    """``role`` if it is one of :data:`ROLES`. Raises :class:`InvalidInput` ``invalid_role``."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    return role  # type: ignore[return-value]


def check_password(password: str) -> None:
    """Raises :class:`InvalidInput` ``weak_password`` outside
    :data:`MIN_PASSWORD`..:data:`MAX_PASSWORD` characters."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(
            f"The password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            code="weak_password",
        )


@dataclass(frozen=True)
class SignInLink:
    """A user with the token of their new sign-in link (shown once) and its expiry."""

    user: DashboardUser
    token: str
    expires_at: dt.datetime

    def url(self, origin: str) -> str:
        """The link on the dashboard ``origin`` (``https://app.example.com``)."""
        return f"{origin}/app/sign-in/{self.token}"


def _new_link(user: DashboardUser, valid_hours: int) -> SignInLink:
    token = secrets.token_urlsafe(32)
    user.link_token_hash = token_hash(token)
    user.link_expires_at = utcnow() + dt.timedelta(hours=valid_hours)
    return SignInLink(user=user, token=token, expires_at=user.link_expires_at)


async def mail_or_url(
    settings: Settings,
    link: SignInLink,
    *,
    kind: LinkKind,
    language: MailLanguage = "en",
    organization: str | None = None,
    inviter: str | None = None,
) -> str | None:
    """E-mail ``link`` to its user when ``settings.smtp_url`` is set and answer None;
    else answer the link's URL (to print or show once). Call it before the transaction
    that issued the link commits. Raises :class:`campaigns.mail.MailNotSent`."""
    url = link.url(settings.dashboard_origin)
    server = settings.smtp_server
    if server is None:
        return url
    message = sign_in_message(
        sender=settings.mail_sender,
        to=link.user.email,
        url=url,
        kind=kind,
        valid_hours=settings.dashboard_link_valid_h,
        language=language,
        organization=organization,
        inviter=inviter,
    )
    await send_async(server, message)
    return None


async def create_user(
    session: AsyncSession,
    *,
    organization_id: int,
    email: str,
    role: str = "editor",
    valid_hours: int = 24,
) -> SignInLink:
    """Create a user without password, and their first sign-in link.

    Raises :class:`InvalidInput` (``invalid_email``, ``invalid_role``), :class:`Conflict`
    ``email_taken`` (e-mails are unique across the service, every organization)."""
    user = DashboardUser(
        organization_id=organization_id, email=normalize_email(email), role=check_role(role)
    )
    link = _new_link(user, valid_hours)
    await flush_unique(
        session,
        add=user,
        constraint="uq_dashboard_users_email",
        conflict=Conflict(f"{user.email} already has an account", code="email_taken"),
    )
    return link


async def reset_link(session: AsyncSession, *, email: str, valid_hours: int = 24) -> SignInLink:
    """A fresh sign-in link for the user of ``email`` (the previous one stops working).
    Raises :class:`NotFound` ``user_not_found``."""
    user = await session.scalar(
        select(DashboardUser).where(DashboardUser.email == email.strip().lower())
    )
    if user is None:
        raise NotFound(f"No dashboard user {email!r}", code="user_not_found")
    link = _new_link(user, valid_hours)
    await session.flush()
    return link


async def user_for_link(session: AsyncSession, *, token: str) -> DashboardUser:
    """The user whose pending, unexpired sign-in link has ``token``. Raises
    :class:`NotFound` ``invalid_link`` (unknown, used or expired)."""
    user = await session.scalar(
        select(DashboardUser).where(
            DashboardUser.link_token_hash == token_hash(token),
            DashboardUser.link_expires_at > func.now(),
        )
    )
    if user is None:
        raise NotFound("This sign-in link is unknown, used or expired", code="invalid_link")
    return user


async def set_password_with_link(
    session: AsyncSession, *, token: str, password: str
) -> DashboardUser:
    """Set the password of the link's user and use the link up (single use). Raises
    :class:`NotFound` ``invalid_link``, :class:`InvalidInput` ``weak_password``."""
    user = await user_for_link(session, token=token)
    check_password(password)
    user.password_hash = hash_password(password)
    user.link_token_hash = None
    user.link_expires_at = None
    await session.flush()
    return user


async def authenticate_user(session: AsyncSession, *, email: str, password: str) -> DashboardUser:
    """The user of ``email`` if ``password`` is theirs. Raises :class:`Unauthorized`
    ``invalid_credentials`` otherwise (unknown e-mail, no password yet, wrong password:
    one answer, and an argon2 verification in every case)."""
    user = await session.scalar(
        select(DashboardUser).where(DashboardUser.email == email.strip().lower())
    )
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password[:MAX_PASSWORD])
        ok = user is not None and user.password_hash is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        raise Unauthorized("Wrong e-mail or password", code="invalid_credentials")
    if _hasher.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
        await session.flush()
    return user


async def change_password(
    session: AsyncSession, *, user: DashboardUser, current: str, new: str
) -> None:
    """Replace the password of ``user`` after checking ``current``. Raises
    :class:`Unauthorized` ``invalid_credentials``, :class:`InvalidInput` ``weak_password``."""
    await authenticate_user(session, email=user.email, password=current)
    check_password(new)
    user.password_hash = hash_password(new)
    await session.flush()


async def list_users(session: AsyncSession, *, organization_id: int) -> list[DashboardUser]:
    """The organization's users by e-mail."""
    rows = await session.scalars(
        select(DashboardUser)
        .where(DashboardUser.organization_id == organization_id)
        .order_by(DashboardUser.email)
    )
    return list(rows)


async def get_user(session: AsyncSession, *, organization_id: int, user_id: int) -> DashboardUser:
    """One of the organization's users. Raises :class:`NotFound` ``user_not_found``."""
    user = await session.scalar(
        select(DashboardUser).where(
            DashboardUser.id == user_id, DashboardUser.organization_id == organization_id
        )
    )
    if user is None:
        raise NotFound(f"User {user_id} not found", code="user_not_found")
    return user


async def _other_admins(session: AsyncSession, user: DashboardUser) -> int:
    count = await session.scalar(
        select(func.count()).where(
            DashboardUser.organization_id == user.organization_id,
            DashboardUser.role == "admin",
            DashboardUser.id != user.id,
        )
    )
    return int(count or 0)


async def set_role(
    session: AsyncSession, *, organization_id: int, user_id: int, role: str
) -> DashboardUser:
    """Change a user's role. Raises :class:`NotFound` ``user_not_found``,
    :class:`InvalidInput` ``invalid_role``, :class:`Conflict` ``last_admin`` (the
    organization would be left without an admin)."""
    user = await get_user(session, organization_id=organization_id, user_id=user_id)
    new = check_role(role)
    if user.role == "admin" and new != "admin" and not await _other_admins(session, user):
        raise Conflict("The organization needs at least one admin", code="last_admin")
    user.role = new
    await session.flush()
    return user


async def remove_user(session: AsyncSession, *, organization_id: int, user_id: int) -> None:
    """Delete a user and their sessions. Raises :class:`NotFound` ``user_not_found``,
    :class:`Conflict` ``last_admin``."""
    user = await get_user(session, organization_id=organization_id, user_id=user_id)
    if user.role == "admin" and not await _other_admins(session, user):
        raise Conflict("The organization needs at least one admin", code="last_admin")
    await session.delete(user)
    await session.flush()
