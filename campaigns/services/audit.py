"""The audit trail of management writes (issue 12): who wrote what, when, how many rows.

One place records it: a flush hook notes every audited row a session writes through the
ORM (:data:`AUDITED`), services that write with Core statements note theirs
(:func:`campaigns.db.note_written_rows`), and the unit of work calls
:func:`record_changes` just before it commits, so the events are stored in the same
transaction as the write (rolled back with it). One event per table written: ``rows``
rows, ``resource_id`` the row's id when there was exactly one.

Audited: API keys, organization settings and logo, campaigns, tags, locations, redirect
rules, webhooks (and the deliveries an admin retries or pings), dashboard users, privacy
erasures (counts only, never the erased ids) and purges (by the system, one event per
organization and table). Conversions and refunds are
business data posted by shop servers, not management, and are not audited.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from campaigns.db import AUDIT_ROWS, note_written_rows
from campaigns.errors import InvalidInput
from campaigns.models import (
    ApiKey,
    AuditEvent,
    Campaign,
    DashboardUser,
    Location,
    Organization,
    OrganizationLogo,
    RedirectRule,
    Tag,
    Webhook,
)

#: ORM classes whose writes are audited; a new management resource joins here.
AUDITED: tuple[type, ...] = (
    ApiKey,
    Organization,
    OrganizationLogo,
    Campaign,
    Tag,
    Location,
    RedirectRule,
    Webhook,
    DashboardUser,
)

#: At most this many events per page of ``GET /v1/audit``.
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class Actor:
    """Who writes: ``type`` ``api_key`` (``id`` the key's id, ``label`` its prefix),
    ``user`` (a dashboard user: id and e-mail), ``cli`` or ``system``; in
    ``organization_id``."""

    organization_id: int
    type: Literal["api_key", "user", "cli", "system"]
    id: int | None = None
    label: str | None = None


def _row_id(obj: object) -> int | None:
    value = getattr(obj, "id", None)
    if value is None:
        value = getattr(obj, "organization_id", None)
    return value if isinstance(value, int) else None


@event.listens_for(Session, "after_flush")
def note_flushed(session: Session, _flush_context: object = None) -> None:
    """Note the audited rows of a flush (the ORM's new, changed and deleted objects;
    in ``after_flush`` these lists still hold the flush's objects, with their ids)."""
    changed = [obj for obj in session.dirty if session.is_modified(obj)]
    for obj in (*session.new, *changed, *session.deleted):
        if isinstance(obj, AUDITED):
            row_id = _row_id(obj)
            table = type(obj).__tablename__  # type: ignore[attr-defined]
            if row_id is None:
                note_written_rows(session, table, count=1)
            else:
                note_written_rows(session, table, ids=(row_id,))


async def record_changes(session: AsyncSession, *, actor: Actor | None, action: str) -> int:
    """Store one :class:`AuditEvent` per table the unit of work wrote (flushing it first),
    then forget the noted rows. Call it just before commit. Returns the number of events
    stored; none without an ``actor`` (a write nobody is accountable for: tests, setup)."""
    await session.flush()
    noted: dict[str, tuple[set[int], list[int]]] = session.info.pop(AUDIT_ROWS, {})
    if actor is None or not noted:
        return 0
    for table, (ids, extra) in sorted(noted.items()):
        rows = len(ids) + extra[0]
        session.add(
            AuditEvent(
                organization_id=actor.organization_id,
                actor_type=actor.type,
                actor_id=actor.id,
                actor_label=actor.label,
                action=action[:100],
                resource_type=table,
                resource_id=next(iter(ids)) if rows == 1 and ids else None,
                rows=rows,
            )
        )
    await session.flush()
    session.info.pop(AUDIT_ROWS, None)  # the events themselves are not audited
    return len(noted)


def encode_cursor(event_id: int) -> str:
    """An opaque cursor after ``event_id`` (URL-safe base64 of a small JSON object)."""
    return base64.urlsafe_b64encode(json.dumps({"before": event_id}).encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))["before"]
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise InvalidInput("cursor is not one the API gave", code="invalid_cursor") from exc
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise InvalidInput("cursor is not one the API gave", code="invalid_cursor")
    return value


async def list_events(
    session: AsyncSession,
    *,
    organization_id: int,
    limit: int = 50,
    cursor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """The organization's audit events, newest first: at most ``limit`` (1 to
    :data:`MAX_PAGE`) from ``cursor``, only ``action`` when given, ``occurred_at`` in
    ``[since, until)``. Returns the events and the cursor of the next page (``None`` on
    the last). Raises :class:`InvalidInput` (``invalid_cursor``, ``invalid_window``)."""
    if since is not None and until is not None and until <= since:
        raise InvalidInput("`to` must be after `from`", code="invalid_window")
    query = select(AuditEvent).where(AuditEvent.organization_id == organization_id)
    if cursor is not None:
        query = query.where(AuditEvent.id < _decode_cursor(cursor))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    rows = list(await session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None
