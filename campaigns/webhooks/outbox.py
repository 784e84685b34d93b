"""The webhook outbox: delivery rows written in the transaction that stores the event.

One row per (webhook, event) in ``webhook_deliveries``, built by PostgreSQL from the row
just stored (so the event says exactly what was committed, NFC verdict included) and
joined with ``webhooks`` (so only subscribed webhooks get one, even when this process's
in-memory index is a moment stale). ``ON CONFLICT (webhook_id, event_id) DO NOTHING``:
the event id derives from the stored row (``evt_scan_<click id>``,
``evt_conversion_<id>``), so a scan replayed from a spool, already stored, adds nothing.

Event bodies (JSON; times ISO 8601 UTC with microseconds)::

    {"id": "evt_scan_aTvF6AbnfnAUZXmG", "type": "scan.created",
     "created_at": "2026-12-06T15:00:00.123456Z", "data": {...}}

``data`` of ``scan.created``: ``click_id``, ``campaign_id``, ``tag_id``, ``scanned_at``,
``channel``, ``method``, ``outcome``, ``is_bot``, ``bot_reason``, ``burst``,
``device_type``, ``os``, ``browser``, ``country``, ``region``, ``city``,
``location_id``, ``geo_source``, ``nfc_verification``, ``rule_id``, ``variant``,
``internal`` (a phone signed into the dashboard: staff testing a poster) (no address,
visitor id nor user agent). ``data`` of ``conversion.created``: ``id``,
``click_id``, ``event``, ``value`` (``{"amount_minor", "currency"}`` or null),
``external_id``, ``occurred_at``, ``attributed``, ``scan_id``, ``campaign_id``,
``tag_id`` (as credited when the conversion was recorded).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from campaigns.scanning.hooked import HookedOrganizations
    from campaigns.scanning.record import ScanRecord


def _iso(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


_INSERT: Final = "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload) "

#: The ``scan.created`` rows of the scans ``click_ids`` (stored in this transaction).
SCAN_EVENTS_SQL: Final = (
    _INSERT + "SELECT w.id, 'evt_scan_' || s.click_id, 'scan.created', jsonb_build_object("  # noqa: S608
    "'id', 'evt_scan_' || s.click_id, 'type', 'scan.created', "
    f"'created_at', {_iso('now()')}, "
    "'data', jsonb_build_object("
    "'click_id', s.click_id, 'campaign_id', s.campaign_id, 'tag_id', s.tag_id, "
    f"'scanned_at', {_iso('s.scanned_at')}, 'channel', s.channel, 'method', s.method, "
    "'outcome', s.outcome, 'is_bot', s.is_bot, 'bot_reason', s.bot_reason, "
    "'burst', s.burst, 'device_type', s.device_type, 'os', s.os, 'browser', s.browser, "
    "'country', s.country, 'region', s.region, 'city', s.city, "
    "'location_id', s.location_id, 'geo_source', s.geo_source, "
    "'nfc_verification', s.nfc_verification, 'rule_id', s.rule_id, 'variant', s.variant, "
    "'internal', s.internal)) "
    "FROM scans AS s JOIN webhooks AS w "
    "ON w.organization_id = s.organization_id AND 'scan.created' = ANY(w.events) "
    "WHERE s.click_id = ANY(%(click_ids)s) "
    "ON CONFLICT (webhook_id, event_id) DO NOTHING"
)

#: The ``conversion.created`` rows of the conversion ``:conversion_id``.
CONVERSION_EVENTS_SQL: Final = (
    _INSERT + "SELECT w.id, 'evt_conversion_' || c.id, 'conversion.created', jsonb_build_object("  # noqa: S608
    "'id', 'evt_conversion_' || c.id, 'type', 'conversion.created', "
    f"'created_at', {_iso('now()')}, "
    "'data', jsonb_build_object("
    "'id', c.id, 'click_id', c.click_id, 'event', c.event, "
    "'value', CASE WHEN c.value_amount_minor IS NULL THEN NULL ELSE jsonb_build_object("
    "'amount_minor', c.value_amount_minor, 'currency', c.value_currency) END, "
    "'external_id', c.external_id, "
    f"'occurred_at', {_iso('c.occurred_at')}, "
    "'attributed', c.scan_id IS NOT NULL, 'scan_id', c.scan_id, "
    "'campaign_id', c.campaign_id, 'tag_id', c.tag_id)) "
    "FROM conversions AS c JOIN webhooks AS w "
    "ON w.organization_id = c.organization_id AND 'conversion.created' = ANY(w.events) "
    "WHERE c.id = :conversion_id "
    "ON CONFLICT (webhook_id, event_id) DO NOTHING"
)


async def write_scan_events(conn: psycopg.AsyncConnection[Any], click_ids: Sequence[str]) -> None:
    """Write the ``scan.created`` deliveries of the scans ``click_ids`` (just stored on
    ``conn``, in its open transaction; :func:`scan_event_click_ids` picks them). Runs no
    statement at all for none, so scans of organizations without webhooks cost one set
    test per batch. Raises ``psycopg.Error`` (the caller's transaction fails with it,
    scans included: retried or spooled)."""
    if click_ids:
        await conn.execute(SCAN_EVENTS_SQL, {"click_ids": list(click_ids)})


def scan_event_click_ids(
    records: Sequence[ScanRecord], hooked: HookedOrganizations | None
) -> list[str]:
    """The click ids of ``records`` whose organization has a ``scan.created`` webhook
    (per :class:`HookedOrganizations`): those :func:`write_scan_events` writes (they do
    not depend on the taps' verdicts)."""
    organizations = hooked.scans if hooked is not None else None
    if not organizations:
        return []
    return [r.click_id for r in records if r.organization_id in organizations]


async def write_conversion_events(session: AsyncSession, *, conversion_id: int) -> None:
    """Write the ``conversion.created`` deliveries of a conversion just stored (and
    credited) in ``session``'s transaction; none when its organization has no webhook for
    it. One statement per new conversion (not the hot path)."""
    await session.execute(text(CONVERSION_EVENTS_SQL), {"conversion_id": conversion_id})


def ping_payload(webhook_id: int, now: dt.datetime) -> tuple[str, dict[str, Any]]:
    """A test event for ``POST /v1/webhooks/{id}/ping``: its id and body
    (``{"id", "type": "ping", "created_at", "data": {"webhook_id"}}``)."""
    event_id = f"evt_ping_{secrets.token_hex(12)}"
    created = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return event_id, {
        "id": event_id,
        "type": "ping",
        "created_at": created,
        "data": {"webhook_id": webhook_id},
    }


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The bytes sent (and signed) for a stored payload: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
