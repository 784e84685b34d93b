"""``/v1/webhooks``: endpoints receiving signed events (``scan.created``,
``conversion.created``), their deliveries, retries and test events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import ADMIN, OrganizationId, SessionDep, SettingsDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookDeliveryRead,
    WebhookPage,
    WebhookRead,
)
from campaigns.services import webhooks as service
from campaigns.services.campaigns import MAX_PAGE_SIZE

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], route_class=JsonBodyRoute, dependencies=[ADMIN]
)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size, 1 to 200")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of a page")]


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problem_responses(
        "validation_error",
        "webhook_url_insecure",
        "webhook_url_not_public",
        "webhook_url_unresolvable",
    ),
)
async def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    organization_id: OrganizationId,
    settings: SettingsDep,
) -> WebhookCreated:
    """Register an endpoint for `events`. The answer carries the signing `secret`, shown
    this once: every delivery is signed with it (`Passerelle-Signature: t=<unix>,v1=<hex>`,
    HMAC-SHA256 over `"<t>.<raw body>"`; see the README's "Webhooks" section).

    - **422** `webhook_url_insecure`: not https (http is accepted only in development and
      test); `webhook_url_not_public`: the host resolves to a private, loopback,
      link-local or otherwise non-public address; `webhook_url_unresolvable`: it does not
      resolve; `validation_error`: bad body (credentials in the URL, unknown event).
    """
    created = await service.create_webhook(
        session,
        organization_id=organization_id,
        data=body,
        secret_key=settings.keyring,
        allow_private=settings.allows_private_webhooks,
    )
    return WebhookCreated.model_validate(
        {**WebhookRead.model_validate(created.webhook).model_dump(), "secret": created.secret}
    )


@router.get(
    "",
    response_model=WebhookPage,
    responses=problem_responses("validation_error", "invalid_cursor"),
)
async def list_webhooks(
    session: SessionDep,
    organization_id: OrganizationId,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> WebhookPage:
    """The organization's webhooks, newest first (never their secrets)."""
    rows, next_cursor = await service.list_webhooks(
        session, organization_id=organization_id, limit=limit, cursor=cursor
    )
    return WebhookPage(
        items=[WebhookRead.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses("webhook_not_found"),
)
async def delete_webhook(
    webhook_id: int, session: SessionDep, organization_id: OrganizationId
) -> Response:
    """Delete the webhook: no event is sent to it any more, and its deliveries go."""
    await service.delete_webhook(session, organization_id=organization_id, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=WebhookDeliveryPage,
    responses=problem_responses("webhook_not_found", "validation_error", "invalid_cursor"),
)
async def list_webhook_deliveries(
    webhook_id: int,
    session: SessionDep,
    organization_id: OrganizationId,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> WebhookDeliveryPage:
    """The webhook's deliveries, newest first: status, attempts, the last response code
    and time, and the last ten attempts."""
    rows, next_cursor = await service.list_deliveries(
        session, organization_id=organization_id, webhook_id=webhook_id, limit=limit, cursor=cursor
    )
    return WebhookDeliveryPage(
        items=[WebhookDeliveryRead.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=WebhookDeliveryRead,
    responses=problem_responses("webhook_not_found", "delivery_not_found"),
)
async def retry_webhook_delivery(
    webhook_id: int,
    delivery_id: int,
    request: Request,
    session: SessionDep,
    organization_id: OrganizationId,
) -> WebhookDeliveryRead:
    """Send the delivery again (same event id and body), whatever its status: it is due
    at once, with a full series of attempts."""
    delivery = await service.retry_delivery(
        session, organization_id=organization_id, webhook_id=webhook_id, delivery_id=delivery_id
    )
    await session.commit()
    request.app.state.webhooks.wake()
    return WebhookDeliveryRead.model_validate(delivery)


@router.post(
    "/{webhook_id}/ping",
    status_code=202,
    response_model=WebhookDeliveryRead,
    responses=problem_responses("webhook_not_found"),
)
async def ping_webhook(
    webhook_id: int, request: Request, session: SessionDep, organization_id: OrganizationId
) -> WebhookDeliveryRead:
    """Queue a `ping` test event (`{"id", "type": "ping", "created_at", "data":
    {"webhook_id"}}`), signed and sent like any event; follow it in the deliveries."""
    delivery = await service.ping_webhook(
        session, organization_id=organization_id, webhook_id=webhook_id
    )
    await session.commit()
    request.app.state.webhooks.wake()
    return WebhookDeliveryRead.model_validate(delivery)
