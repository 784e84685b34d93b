"""Per-client token buckets for the public endpoints, held in process memory.

No database and no network: a limiter must keep working when everything else is
overloaded. Each process limits on its own, so with N server processes behind a load
balancer a client gets up to N times the configured rate; that is acceptable for a
guard against floods, and documented in docs/SCALING.md.

Clients are keyed by IPv4 address, or by IPv6 /64 (one subscriber's usual allocation,
RFC 6177), so that rotating through a /64 does not escape the limit.
"""

from __future__ import annotations

import ipaddress
import math
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

    @staticmethod
    def client_key(address: str) -> str:
        """``address`` itself for IPv4, its /64 network for IPv6, as is if not an IP."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if ip.version == 6:
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False).network_address)
        return str(ip)

    def check(self, address: str, *, now: float | None = None) -> float:
        """Take one token for ``address``. Returns 0.0 when allowed, else the seconds to
        wait before the next token (for ``Retry-After``)."""
        now = time.monotonic() if now is None else now
        key = self.client_key(address)
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_clients:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def retry_after_header(self, wait_s: float) -> str:
        """``Retry-After`` value: whole seconds, at least 1 (RFC 9110 §10.2.3)."""
        return str(max(1, math.ceil(wait_s)))

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
