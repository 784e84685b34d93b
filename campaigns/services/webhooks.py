"""Webhooks of an organization: create (the secret shown once), list, delete; their
deliveries: list, retry, and a test event (ping).

Delivery itself is :mod:`campaigns.webhooks.delivery`; the rows it sends are written with
the events (:mod:`campaigns.webhooks.outbox`). Every server process learns of a webhook
change through ``LISTEN/NOTIFY`` (this process right after commit: the flush hook of
``api/deps.py`` notes :class:`~campaigns.models.Webhook` rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.crypto import SecretKeys, seal
from campaigns.db import note_written_rows
from campaigns.errors import InvalidInput, NotFound
from campaigns.models import Webhook, WebhookDelivery, utcnow
from campaigns.schemas import WebhookCreate
from campaigns.services.campaigns import MAX_ID, keyset_page
from campaigns.webhooks.addresses import AddressRefused, check_scheme, checked_addresses
from campaigns.webhooks.outbox import ping_payload
from campaigns.webhooks.signing import SECRET_PURPOSE, new_secret, secret_aad


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    """A new webhook and its signing secret in clear (shown once, never stored so)."""

    webhook: Webhook
    secret: str = field(repr=False)  # never in logs or tracebacks' reprs


def _not_found(webhook_id: int) -> NotFound:
    return NotFound(f"Webhook {webhook_id} not found", code="webhook_not_found")


async def check_url(url: str, *, allow_private: bool) -> None:
    """Raise :class:`InvalidInput` (``webhook_url_insecure``, ``webhook_url_unresolvable``,
    ``webhook_url_not_public``) for a URL the dispatcher may not call
    (:func:`campaigns.webhooks.addresses.checked_addresses`). With ``allow_private``
    (development, test) only the scheme is checked: nothing is refused by address, so
    the host need not resolve yet."""
    try:
        if allow_private:
            check_scheme(url, allow_private=True)
        else:
            await checked_addresses(url, allow_private=False)
    except AddressRefused as exc:
        raise InvalidInput(
            str(exc),
            code=exc.code,
            errors=[{"loc": ["body", "url"], "msg": str(exc), "type": exc.code}],
        ) from None


async def create_webhook(
    session: AsyncSession,
    *,
    organization_id: int,
    data: WebhookCreate,
    secret_key: SecretKeys,
    allow_private: bool,
) -> CreatedWebhook:
    """Register an endpoint for ``data.events``; the secret is sealed under
    ``secret_key`` (:mod:`campaigns.crypto`, bound to organization and id). Raises
    :class:`InvalidInput` as :func:`check_url`; nothing is stored then."""
    await check_url(data.url, allow_private=allow_private)
    # The id first: it is part of the sealed secret's associated data.
    webhook_id = int(
        await session.scalar(select(func.nextval(func.pg_get_serial_sequence("webhooks", "id"))))
        or 0
    )
    secret = new_secret()
    webhook = Webhook(
        id=webhook_id,
        organization_id=organization_id,
        url=data.url,
        events=list(data.events),
        secret_encrypted=seal(
            secret_key,
            SECRET_PURPOSE,
            secret.encode(),
            aad=secret_aad(organization_id, webhook_id),
        ),
        created_at=utcnow(),
    )
    session.add(webhook)
    await session.flush()
    return CreatedWebhook(webhook, secret)


async def list_webhooks(
    session: AsyncSession, *, organization_id: int, limit: int = 50, cursor: str | None = None
) -> tuple[list[Webhook], str | None]:
    """The organization's webhooks, newest first, cursor-paginated. Raises
    :class:`InvalidInput` (``invalid_cursor``)."""
    query = select(Webhook).where(Webhook.organization_id == organization_id)
    return await keyset_page(session, query, Webhook.id, limit=limit, cursor=cursor)


async def get_webhook(session: AsyncSession, *, organization_id: int, webhook_id: int) -> Webhook:
    """The organization's webhook. Raises :class:`NotFound` (``webhook_not_found``, also
    for another organization's)."""
    if not 1 <= webhook_id <= MAX_ID:
        raise _not_found(webhook_id)
    webhook = await session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.organization_id == organization_id)
    )
    if webhook is None:
        raise _not_found(webhook_id)
    return webhook


async def delete_webhook(session: AsyncSession, *, organization_id: int, webhook_id: int) -> None:
    """Delete the webhook and its deliveries (none is attempted afterwards; one in flight
    finishes but is not recorded). Raises :class:`NotFound` (``webhook_not_found``)."""
    webhook = await get_webhook(session, organization_id=organization_id, webhook_id=webhook_id)
    await session.delete(webhook)
    await session.flush()


async def list_deliveries(
    session: AsyncSession,
    *,
    organization_id: int,
    webhook_id: int,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[WebhookDelivery], str | None]:
    """The webhook's deliveries, newest first, cursor-paginated. Raises
    :class:`NotFound` (``webhook_not_found``), :class:`InvalidInput`
    (``invalid_cursor``)."""
    await get_webhook(session, organization_id=organization_id, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    return await keyset_page(session, query, WebhookDelivery.id, limit=limit, cursor=cursor)


async def retry_delivery(
    session: AsyncSession, *, organization_id: int, webhook_id: int, delivery_id: int
) -> WebhookDelivery:
    """Send the delivery again now, with the same event id and body, whatever its
    status: ``pending`` and due at once, its attempt count back to 0 (a full series of
    attempts); the attempt log is kept. Raises :class:`NotFound` (``webhook_not_found``,
    ``delivery_not_found``)."""
    await get_webhook(session, organization_id=organization_id, webhook_id=webhook_id)
    missing = NotFound(f"Delivery {delivery_id} not found", code="delivery_not_found")
    if not 1 <= delivery_id <= MAX_ID:
        raise missing
    delivery = await session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
        .values(status="pending", attempts=0, next_attempt_at=func.now())
        .returning(WebhookDelivery)
        .execution_options(populate_existing=True)
    )
    if delivery is None:
        raise missing
    # A Core UPDATE, which the ORM flush hook does not see: noted for the audit trail.
    note_written_rows(session, WebhookDelivery.__tablename__, ids=(delivery.id,))
    return delivery


async def ping_webhook(
    session: AsyncSession, *, organization_id: int, webhook_id: int
) -> WebhookDelivery:
    """Queue a ``ping`` test event for the webhook (sent like any delivery, whatever its
    ``events``). Raises :class:`NotFound` (``webhook_not_found``)."""
    webhook = await get_webhook(session, organization_id=organization_id, webhook_id=webhook_id)
    now = utcnow()
    event_id, payload = ping_payload(webhook.id, now)
    delivery = WebhookDelivery(
        webhook_id=webhook.id,
        event_id=event_id,
        event_type="ping",
        payload=payload,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        attempt_log=[],
        created_at=now,
    )
    session.add(delivery)
    await session.flush()
    note_written_rows(session, WebhookDelivery.__tablename__, ids=(delivery.id,))
    return delivery
