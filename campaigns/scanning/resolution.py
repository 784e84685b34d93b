"""Resolution: which tag, campaign and destination a scanned code stands for (memory only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from campaigns.scanning.cache import CampaignEntry, TagCache, TagEntry
from campaigns.scanning.links import normalize_code


@dataclass(frozen=True, slots=True)
class Resolution:
    """How to answer a scan. ``outcome`` is ``redirect`` (live campaign), ``fallback``
    (outside its schedule or archived, with a fallback URL) or ``gone`` (same, without one:
    answer 410)."""

    tag: TagEntry
    campaign: CampaignEntry
    outcome: str
    destination: str | None


def resolve(cache: TagCache, raw_code: str, *, now: dt.datetime) -> Resolution | None:
    """The resolution of a scanned code, or None for an unknown, malformed or disabled
    code. Pure memory; never raises."""
    code = normalize_code(raw_code)
    if code is None:
        return None
    hit = cache.lookup(code)
    if hit is None:
        return None
    tag, campaign = hit
    if campaign.is_live(now):
        return Resolution(
            tag, campaign, "redirect", tag.destination_url or campaign.destination_url
        )
    if campaign.fallback_url:
        return Resolution(tag, campaign, "fallback", campaign.fallback_url)
    return Resolution(tag, campaign, "gone", None)
