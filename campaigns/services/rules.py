"""Redirect rules of a campaign: create, list, update, delete.

Evaluation happens in memory on the scan path (:mod:`campaigns.scanning.rules`); every
change reaches every server process through ``LISTEN/NOTIFY`` (this process re-reads
at commit, :func:`api.deps.get_session`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.errors import InvalidInput, NotFound
from campaigns.models import Location, RedirectRule
from campaigns.schemas import RuleConditions, RuleCreate, RuleUpdate, SplitVariant
from campaigns.services.campaigns import MAX_ID, get_campaign
from campaigns.services.destinations import check_destinations

#: Fields a PATCH may not set to null.
_NOT_NULL = ("priority", "when", "destination_url", "split")


def _not_found(rule_id: int) -> NotFound:
    return NotFound(f"Rule {rule_id} not found", code="rule_not_found")


async def _check_targets(
    session: AsyncSession,
    *,
    organization_id: int,
    short_link_origin: str,
    conditions: RuleConditions | None,
    destination_url: str | None,
    split: list[SplitVariant] | None,
) -> None:
    """Raise :class:`InvalidInput` ``redirect_loop`` for a URL on the short-link origin,
    :class:`NotFound` ``location_not_found`` for a location not the organization's."""
    urls: dict[str, str | None] = {"destination_url": destination_url}
    for index, variant in enumerate(split or ()):
        urls[f"split.{index}.destination_url"] = variant.destination_url
    await check_destinations(
        session, organization_id=organization_id, short_link_origin=short_link_origin, **urls
    )
    wanted = set(conditions.location_ids or ()) if conditions is not None else set()
    if wanted:
        # An id past bigint is nobody's location (and PostgreSQL refuses to compare it).
        in_range = [i for i in wanted if i <= MAX_ID]
        found = set(
            await session.scalars(
                select(Location.id).where(
                    Location.organization_id == organization_id, Location.id.in_(in_range)
                )
            )
        )
        missing = sorted(wanted - found)
        if missing:
            raise NotFound(f"Location {missing[0]} not found", code="location_not_found")


def _conditions(conditions: RuleConditions) -> dict[str, Any]:
    return conditions.model_dump(exclude_none=True)


def _split(split: list[SplitVariant] | None) -> list[dict[str, Any]] | None:
    return [variant.model_dump() for variant in split] if split is not None else None


async def create_rule(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    data: RuleCreate,
    short_link_origin: str,
) -> RedirectRule:
    """Add a rule to the organization's campaign. Raises :class:`NotFound`
    (``campaign_not_found``, ``location_not_found``), :class:`InvalidInput`
    (``redirect_loop``)."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    await _check_targets(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        conditions=data.when,
        destination_url=data.destination_url,
        split=data.split,
    )
    rule = RedirectRule(
        organization_id=organization_id,
        campaign_id=campaign_id,
        priority=data.priority,
        conditions=_conditions(data.when),
        destination_url=data.destination_url,
        split=_split(data.split),
    )
    session.add(rule)
    await session.flush()
    return rule


async def list_rules(
    session: AsyncSession, *, organization_id: int, campaign_id: int
) -> list[RedirectRule]:
    """The campaign's rules in evaluation order. Raises :class:`NotFound`
    (``campaign_not_found``)."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    rows = await session.scalars(
        select(RedirectRule)
        .where(
            RedirectRule.organization_id == organization_id,
            RedirectRule.campaign_id == campaign_id,
        )
        .order_by(RedirectRule.priority, RedirectRule.id)
    )
    return list(rows)


async def get_rule(session: AsyncSession, *, organization_id: int, rule_id: int) -> RedirectRule:
    """The organization's rule. Raises :class:`NotFound` ``rule_not_found``."""
    if not 1 <= rule_id <= MAX_ID:
        raise _not_found(rule_id)
    rule = await session.scalar(
        select(RedirectRule).where(
            RedirectRule.id == rule_id, RedirectRule.organization_id == organization_id
        )
    )
    if rule is None:
        raise _not_found(rule_id)
    return rule


async def update_rule(
    session: AsyncSession,
    *,
    organization_id: int,
    rule_id: int,
    data: RuleUpdate,
    short_link_origin: str,
) -> RedirectRule:
    """Change the fields sent. Raises :class:`NotFound` (``rule_not_found``,
    ``location_not_found``), :class:`InvalidInput` (``redirect_loop``, and
    ``validation_error`` for ``null`` on ``priority`` or ``when``)."""
    rule = await get_rule(session, organization_id=organization_id, rule_id=rule_id)
    fields = data.model_dump(exclude_unset=True)
    nulls = [name for name in _NOT_NULL if name in fields and fields[name] is None]
    if nulls:
        raise InvalidInput(
            f"{', '.join(nulls)} cannot be null",
            code="validation_error",
            errors=[{"loc": ["body", n], "msg": "cannot be null", "type": "null"} for n in nulls],
        )
    await _check_targets(
        session,
        organization_id=organization_id,
        short_link_origin=short_link_origin,
        conditions=data.when,
        destination_url=data.destination_url,
        split=data.split,
    )
    if data.priority is not None:
        rule.priority = data.priority
    if data.when is not None:
        rule.conditions = _conditions(data.when)
    if data.destination_url is not None:
        rule.destination_url, rule.split = data.destination_url, None
    elif data.split is not None:
        rule.destination_url, rule.split = None, _split(data.split)
    await session.flush()
    return rule


async def delete_rule(session: AsyncSession, *, organization_id: int, rule_id: int) -> None:
    """Delete the rule. Raises :class:`NotFound` ``rule_not_found``."""
    rule = await get_rule(session, organization_id=organization_id, rule_id=rule_id)
    await session.delete(rule)
    await session.flush()
