"""What a campaign's print exports contain: its tags with their store, file names, and
the manifest (``print.zip``, ``sheets.pdf``)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, Select, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.models import Location, Tag
from campaigns.services.campaigns import get_campaign

#: Every column of ``manifest.csv``, in order.
MANIFEST_COLUMNS: Final = ("code", "short_url", "store", "label", "kind", "file", "ndef_hex")
#: Stands for the store in file names of tags without a location.
NO_STORE: Final = "nostore"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")
_SEGMENT_MAX: Final = 60


@dataclass(frozen=True, slots=True)
class PrintItem:
    """One tag of an export: ``store`` is its location's external id (store number), or
    its name when it has none; None without a location."""

    tag_id: int
    code: str
    kind: str
    label: str | None
    store: str | None


async def load_print_items(
    session: AsyncSession,
    *,
    organization_id: int,
    campaign_id: int,
    tag_ids: Sequence[int] | None = None,
) -> list[PrintItem]:
    """The campaign's tags (oldest first; only ``tag_ids`` when given, in that order)
    with their store. Raises :class:`NotFound` (``campaign_not_found``) for another
    organization's or a deleted campaign."""
    await get_campaign(session, organization_id=organization_id, campaign_id=campaign_id)
    query = _items_query(organization_id, campaign_id)
    if tag_ids is not None:
        query = query.where(Tag.__table__.c.id == any_(literal(list(tag_ids), ARRAY(BigInteger))))
    items = {
        tag_id: PrintItem(tag_id=tag_id, code=code, kind=kind, label=label, store=store)
        for tag_id, code, kind, label, store in await session.execute(query)
    }
    if tag_ids is None:
        return list(items.values())
    return [items[tag_id] for tag_id in tag_ids if tag_id in items]


def _items_query(organization_id: int, campaign_id: int) -> Select[int, str, str, str | None, Any]:
    """Tags with their store: the location's ``external_id`` (store number), else its
    ``name`` (``external_id`` is optional), None for a tag without a location."""
    tags, locations = Tag.__table__, Location.__table__
    store = func.coalesce(locations.c.external_id, locations.c.name).label("store")
    return (
        select(tags.c.id, tags.c.code, tags.c.kind, tags.c.label, store)
        .select_from(tags.outerjoin(locations, locations.c.id == tags.c.location_id))
        .where(tags.c.campaign_id == campaign_id, tags.c.organization_id == organization_id)
        .order_by(tags.c.id)
    )


def _segment(text: str) -> str:
    """``text`` as a safe file-name segment: accents stripped, anything but ASCII
    letters, digits, ``.`` and ``-`` replaced by ``-``, no leading dots, at most 60."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE.sub("-", ascii_text).strip("-.")[:_SEGMENT_MAX].strip("-.")


def print_file_stem(item: PrintItem) -> str:
    """``{store}_{label}_{code}`` for an export entry: the store's external id or name
    (``nostore`` for a tag without a location), the label (empty when none) and the
    code, each made safe for a zip path (no ``/``, ``\\``, ``..``, control or non-ASCII
    characters). Unique within a campaign because codes are."""
    return "_".join((_segment(item.store or "") or NO_STORE, _segment(item.label or ""), item.code))
