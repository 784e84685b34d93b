"""``GET /v1/campaigns/{id}/events``: the campaign's scans and conversions as they are
committed, as Server-Sent Events (``text/event-stream``), resumable with
``Last-Event-ID``. The stream is served by this process's
:class:`campaigns.feed.hub.FeedHub`; it holds no database connection while it waits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from api.deps import REPORTS_READ, ReleasedOrganizationId, SessionFactory
from api.errors import problem_responses
from api.routing import CheckedRoute
from campaigns.db import unit_of_work
from campaigns.feed.cursor import Position
from campaigns.feed.hub import FeedHub, Listener, Seen, sse_comment
from campaigns.services.campaigns import get_campaign

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/campaigns", tags=["events"], dependencies=[REPORTS_READ], route_class=CheckedRoute
)


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` body written by the route itself (FastAPI's own
    ``EventSourceResponse`` wraps a generator endpoint; here the events come from the
    hub already encoded, once for every stream of the campaign)."""

    media_type = "text/event-stream"


_STREAM_DOC = (
    "Server-Sent Events, one per scan (`event: scan`) or conversion (`event: conversion`). "
    "Scans from a phone signed into the dashboard (staff testing a poster) are shown too, "
    "with `internal: true`; they count in no report:"
    "\n\n```\nevent: scan\nid: 7812:7815:7813|s1042\n"
    'data: {"id":1042,"click_id":"…","campaign_id":3,"tag_id":12,'
    '"scanned_at":"2026-12-06T15:02:11.52Z","channel":"qr","device_type":"mobile",'
    '"os":"iOS","country":"FR","city":"Paris","location_id":4,"is_bot":false,'
    '"bot_reason":null,"burst":false,"nfc_verification":null,"internal":false}\n\n'
    "event: conversion\nid: 7815:7818:|c77\n"
    'data: {"id":77,"click_id":"…","campaign_id":3,"tag_id":12,"scan_id":1042,'
    '"event":"purchase","value":{"amount_minor":4990,"currency":"EUR"},'
    '"occurred_at":"2026-12-06T15:09:40Z"}\n\n'
    ": heartbeat\nid: 7815:7820:\n```"
)


@router.get(
    "/{campaign_id}/events",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": _STREAM_DOC,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses("campaign_not_found", "validation_error"),
    },
)
async def stream_events(
    request: Request,
    campaign_id: int,
    organization_id: ReleasedOrganizationId,
    sessions: SessionFactory,
    last_event_id: Annotated[
        str | None,
        Header(
            description="Resume after this event (the `id` of the last event received; "
            "browsers' `EventSource` sends it when reconnecting)"
        ),
    ] = None,
) -> EventStreamResponse:
    """The campaign's scans (event ``scan``) and conversions (event ``conversion``, when
    a conversion is credited to one of its scans) within about a second of their commit,
    whichever server process handled them. ``data`` is JSON (no IP address); times are
    UTC ISO 8601, money in minor units.

    - **Resuming**: every event has an ``id``; send the last one received as
      ``Last-Event-ID`` (``EventSource`` does it by itself) and the stream continues
      after it, without gap or repeat, for ``PASSERELLE_FEED_RETENTION_S`` (24 h). An
      older, unknown or malformed id starts from now, said in a comment (``: ...``).
    - **Heartbeat**: an idle stream sends a comment every ``PASSERELLE_FEED_HEARTBEAT_S``
      (15 s) with an ``id`` line (no event), so a reconnect after a quiet spell resumes
      from there.
    - **Slow clients**: past ``PASSERELLE_FEED_QUEUE_MAX`` events waiting, the stream
      ends (comment ``: dropped``); reconnect with ``Last-Event-ID``.
    - **404** ``campaign_not_found``: no such campaign in this organization.
    """
    async with unit_of_work(sessions) as session:
        await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    return event_stream(request, campaign_id, last_event_id)


def event_stream(
    request: Request, campaign_id: int, last_event_id: str | None
) -> EventStreamResponse:
    """The live feed's response for a campaign the caller may read (checked before:
    this route's bearer key, or the dashboard's session under ``/app``)."""
    hub: FeedHub = request.app.state.feed
    heartbeat_s: float = request.app.state.settings.feed_heartbeat_s
    # Subscribed before the response starts, so nothing committed from here on is missed.
    listener = hub.subscribe(campaign_id)
    return EventStreamResponse(
        _stream(hub, listener, campaign_id, last_event_id, heartbeat_s),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    hub: FeedHub,
    listener: Listener,
    campaign_id: int,
    last_event_id: str | None,
    heartbeat_s: float,
) -> AsyncIterator[bytes]:
    """The response body. Ends when the client goes (the server cancels it: no cleanup
    awaits anything), when the hub closes the stream (shutdown) or drops it (slow)."""
    try:
        start = await listener.wait_started()
        if start is None:
            return
        seen: Seen | None = None
        if last_event_id is not None:
            try:
                seen, comment = await _resume_point(hub, campaign_id, last_event_id)
                if comment:
                    yield sse_comment(comment)
                if seen is not None:
                    async for page in hub.replay(seen, campaign_id, start):
                        yield b"".join(e.text for e in page)
            except psycopg.Error as exc:
                # End the stream: the client reconnects with the same Last-Event-ID.
                log.warning("live feed resume failed: %s", exc)
                yield sse_comment("resume failed (database unavailable); reconnect")
                return
        # The cursor up to the live stream's start: a client that reconnects before any
        # event resumes from here (an id without data sets it, dispatches nothing).
        yield f"retry: 1000\nid: {start}\n\n".encode()
        while True:
            events = await listener.next(heartbeat_s)
            if events is None:
                if listener.dropped:
                    yield sse_comment("dropped: too slow; reconnect with Last-Event-ID")
                return
            if not events:  # heartbeat_s without events, queue empty
                if hub.snapshot is not None:
                    # Everything up to the hub's cursor has been sent: say so.
                    yield f": heartbeat\nid: {hub.snapshot}\n\n".encode()
                else:
                    yield sse_comment("heartbeat")
                continue
            if seen is not None:
                # The id may come from a process whose cursor was ahead of this one's.
                events = [e for e in events if not seen(e)]
            if events:
                yield b"".join(e.text for e in events)
    finally:
        hub.unsubscribe(listener)


async def _resume_point(
    hub: FeedHub, campaign_id: int, last_event_id: str
) -> tuple[Seen | None, str | None]:
    """What the client of ``Last-Event-ID`` has, or None and the comment saying why the
    stream starts from now instead. Raises ``psycopg.Error``."""
    try:
        position = Position.parse(last_event_id)
    except ValueError:
        return None, "Last-Event-ID not understood; starting from now"
    if await hub.expired(position):
        return None, "Last-Event-ID older than the retention; starting from now"
    return await hub.seen_before(position, campaign_id), None
