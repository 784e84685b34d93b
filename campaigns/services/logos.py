"""The organization's logo for QR artwork (one per organization)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.db import note_written_rows
from campaigns.models import OrganizationLogo, utcnow
from campaigns.payloads.logo import Logo


async def put_logo(session: AsyncSession, *, organization_id: int, logo: Logo) -> OrganizationLogo:
    """Store (or replace) the organization's logo. ``logo`` must have passed
    :func:`campaigns.payloads.logo.validate_logo` (CPU-bound, so the caller runs it
    off the event loop before opening the transaction). An upsert statement, which the
    ORM flush hook does not see: the row is noted for the audit trail here."""
    values = {
        "media_type": logo.media_type,
        "content": logo.content,
        "sha256": logo.sha256,
        "updated_at": utcnow(),
    }
    statement = (
        insert(OrganizationLogo)
        .values(organization_id=organization_id, **values)
        .on_conflict_do_update(index_elements=[OrganizationLogo.organization_id], set_=values)
        .returning(OrganizationLogo)
    )
    stored = await session.scalar(statement, execution_options={"populate_existing": True})
    assert stored is not None  # RETURNING of an upsert always yields the row
    note_written_rows(session, OrganizationLogo.__tablename__, ids=(organization_id,))
    return stored


async def get_logo(session: AsyncSession, *, organization_id: int) -> Logo | None:
    """The organization's logo, or None when it has none."""
    row = await session.execute(
        select(OrganizationLogo.media_type, OrganizationLogo.content).where(
            OrganizationLogo.organization_id == organization_id
        )
    )
    found = row.first()
    return Logo(media_type=found.media_type, content=found.content) if found else None
