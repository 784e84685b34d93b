"""Step "burst": flag scans past the per-client rate (never refuse them)."""

from __future__ import annotations

from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.steps.base import ScanDraft


class Burst:
    """Sets ``burst`` when the client (``ClientAddress.key``) is past the token bucket's
    rate. A burst scan still redirects and still counts as a person's: many people share
    one address behind carrier NAT or venue Wi-Fi. Without a limiter or an address,
    nothing is flagged."""

    name = "burst"

    def __init__(self, limiter: RateLimiter | None) -> None:
        self.limiter = limiter

    def __call__(self, draft: ScanDraft, /) -> None:
        key = draft.request.client.key
        if self.limiter is not None and key is not None:
            draft.burst = self.limiter.check(key) > 0.0
