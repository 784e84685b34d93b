"""``/v1/api-keys``: the organization's API keys (``admin`` scope): create (the secret is
shown once), list, revoke. A revoked key is refused by every server process from its next
request on: keys are looked up in the database on every request, never cached."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import ADMIN, OrganizationId, SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyRead
from campaigns.services import organizations as service
from campaigns.services.campaigns import MAX_ID

router = APIRouter(
    prefix="/v1/api-keys", tags=["api keys"], route_class=JsonBodyRoute, dependencies=[ADMIN]
)


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    operation_id="api_keys_create",
    responses=problem_responses("invalid_name", "validation_error"),
)
async def create_api_key(
    data: ApiKeyCreate, session: SessionDep, organization_id: OrganizationId
) -> ApiKeyCreated:
    """Issue a key holding `scopes` (at least one). The `secret` is in this response
    only: store it now; only its SHA-256 is kept."""
    issued = await service.issue_api_key(
        session, organization_id=organization_id, name=data.name, scopes=data.scopes
    )
    read = ApiKeyRead.model_validate(issued.api_key)
    return ApiKeyCreated(**read.model_dump(), secret=issued.secret)


@router.get("", response_model=ApiKeyList, operation_id="api_keys_list")
async def list_api_keys(session: SessionDep, organization_id: OrganizationId) -> ApiKeyList:
    """The organization's keys, revoked ones included, oldest first: prefix, name,
    scopes, `last_used_at` (to the minute); never a secret or its hash."""
    keys = await service.list_api_keys(session, organization_id=organization_id)
    return ApiKeyList(items=[ApiKeyRead.model_validate(key) for key in keys])


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses("api_key_not_found"),
    operation_id="api_keys_revoke",
)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    session: SessionDep,
    organization_id: OrganizationId,
) -> Response:
    """Revoke a key (again: no change): every process refuses it (401
    `invalid_api_key`) from its next request on. Another organization's key: 404."""
    await service.revoke_api_key(session, organization_id=organization_id, key_id=key_id)
    return Response(status_code=204)
