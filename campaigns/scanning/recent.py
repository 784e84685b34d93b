"""Click ids this process issued recently, for the precise-location beacon.

A consented position (``POST /s/{click_id}/location``) must name a scan at most
:data:`LOCATION_WINDOW` old. The scan may still be in this process's spool (the database
was away when it was answered), so the beacon asks here first, then the ``scans`` table
(:func:`campaigns.services.scan_locations.record_scan_location`). Only scans that were
shown the consent page are remembered: the others never post a position.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import NamedTuple

#: How long after its scan a precise position is accepted.
LOCATION_WINDOW = dt.timedelta(minutes=10)


class RecentClick(NamedTuple):
    """What the beacon needs of a scan: its organization and time (aware UTC)."""

    organization_id: int
    scanned_at: dt.datetime


class RecentClicks:
    """Click id -> :class:`RecentClick` for scans of the last :data:`LOCATION_WINDOW`,
    at most ``max_entries`` (the oldest forgotten first; a forgotten click id is still
    found in the database once its scan is committed). Event-loop use only."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._clicks: OrderedDict[str, RecentClick] = OrderedDict()
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._clicks)

    def add(self, click_id: str, click: RecentClick) -> None:
        """Remember a click id issued now (scans arrive in time order)."""
        self._clicks[click_id] = click
        horizon = click.scanned_at - LOCATION_WINDOW
        while self._clicks:
            oldest = next(iter(self._clicks.values()))
            if len(self._clicks) <= self.max_entries and oldest.scanned_at >= horizon:
                break
            self._clicks.popitem(last=False)

    def get(self, click_id: str) -> RecentClick | None:
        """The click, if this process issued it within the window (and still holds it)."""
        return self._clicks.get(click_id)
