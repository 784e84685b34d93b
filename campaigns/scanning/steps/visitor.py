"""Step "visitor": the visitor id (see :mod:`campaigns.scanning.visitors`)."""

from __future__ import annotations

from datetime import UTC

from campaigns.scanning.steps.base import ScanDraft
from campaigns.scanning.visitors import VisitorIds


class Visitor:
    """Sets ``visitor_id`` from the organization, client key (IPv4, IPv6 /64), user agent
    and UTC day of the scan, under the day's salt held in memory."""

    name = "visitor"

    def __init__(self, visitors: VisitorIds) -> None:
        self.visitors = visitors

    def __call__(self, draft: ScanDraft, /) -> None:
        request = draft.request
        draft.visitor_id = self.visitors.visitor_id(
            organization_id=draft.resolution.campaign.organization_id,
            client_key=request.client.key,
            user_agent=request.user_agent,
            day=request.received_at.astimezone(UTC).date(),
        )
