"""Per-client token buckets for the public endpoints, held in process memory.

For scans the bucket is a flag, not a refusal: a scan past the rate is redirected and
stored with ``burst = true`` (carrier NAT and stadium Wi-Fi put many people behind one
address). Floods are stopped at the edge (docs/SCALING.md).

No database and no network: a limiter must keep working when everything else is
overloaded. Each process limits on its own, so with N server processes behind a load
balancer a client gets up to N times the configured rate; that is acceptable for a
guard against floods, and documented in docs/SCALING.md.

Clients are keyed by :attr:`geo.ip.ClientAddress.key` (an IPv4 address, or an IPv6
/64), so that rotating through a /64 does not escape the limit.
"""

from __future__ import annotations

import time


class RateLimiter:
    """Token bucket per client: ``rate`` tokens per second (float), ``burst`` tokens at
    most. ``max_clients`` bounds memory: when exceeded, buckets that have refilled
    completely (idle clients) are dropped, and if that is not enough, the oldest half."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, *, now: float | None = None) -> float:
        """Take one token for the client ``key`` (``ClientAddress.key``). Returns 0.0 when
        within the rate, else the seconds until the next token."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_clients:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > self.max_clients:
            by_age = sorted(self._buckets.items(), key=lambda item: item[1][1])
            for key, _ in by_age[: len(by_age) // 2]:
                del self._buckets[key]
