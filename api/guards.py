"""Protection shared by every public (unauthenticated) endpoint."""

from __future__ import annotations

from fastapi import Request

from campaigns.errors import RateLimited
from campaigns.scanning.ratelimit import RateLimiter


async def public_rate_limit(request: Request) -> None:
    """Router dependency of public endpoints: per-client token bucket, 429
    ``rate_limited`` with ``Retry-After`` when exhausted. Holds no database connection."""
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is None or request.client is None:
        return
    wait = limiter.check(request.client.host)
    if wait:
        request.app.state.metrics.responses.labels("429").inc()
        raise RateLimited(int(limiter.retry_after_header(wait)))
