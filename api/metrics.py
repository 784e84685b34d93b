"""Prometheus metrics (``GET /metrics``, text exposition format 0.0.4).

Each server process exposes its own figures (a scrape reaches one process); run one
process per container, or scrape each worker port, to see them all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from campaigns.scanning.service import ScanService


class Metrics:
    """The app's metrics, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.scans = Counter(
            "passerelle_scans",
            "Scans recorded, by channel, outcome and bot flag.",
            ["channel", "outcome", "bot"],
            registry=r,
        )
        self.responses = Counter(
            "passerelle_public_responses",
            "Responses of the public endpoints, by status.",
            ["status"],
            registry=r,
        )
        self.batch_size = Histogram(
            "passerelle_writer_batch_size",
            "Scans per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "passerelle_writer_commit_seconds",
            "Duration of one group commit (COPY + COMMIT).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2),
            registry=r,
        )
        self.committed = Gauge(
            "passerelle_writer_committed", "Scans committed since start.", registry=r
        )
        self.spooled = Gauge(
            "passerelle_writer_spooled", "Scans spooled to disk since start.", registry=r
        )
        self.replayed = Gauge(
            "passerelle_writer_replayed", "Spooled scans replayed since start.", registry=r
        )
        self.spool_depth = Gauge(
            "passerelle_spool_depth", "Scans waiting in spool files.", registry=r
        )
        self.queue_depth = Gauge(
            "passerelle_writer_queue_depth", "Scans waiting for a batch.", registry=r
        )
        self.database_ok = Gauge(
            "passerelle_database_up", "1 when the scan writer reaches the database.", registry=r
        )
        self.cache_tags = Gauge("passerelle_cache_tags", "Active tags held in memory.", registry=r)
        self.rate_limited_clients = Gauge(
            "passerelle_rate_limiter_clients", "Clients tracked by the rate limiter.", registry=r
        )
        self._response_children: dict[int, Counter] = {}
        self._scan_children: dict[tuple[str, str, bool], Counter] = {}

    # The scan path counts two things per scan. ``Counter.labels()`` validates the values,
    # builds a key and takes the metric's lock on every call: labels().inc() twice costs
    # 4.8 µs per scan, the kept children's inc() 1.3 µs (timeit; 3.5 µs less per scan).
    # The child counters are kept here, one per label set (a handful: statuses,
    # channels x outcomes x bot flag).

    def count_response(self, status: int) -> None:
        """Count one response of a public endpoint with HTTP ``status``."""
        child = self._response_children.get(status)
        if child is None:
            child = self._response_children[status] = self.responses.labels(str(status))
        child.inc()

    def count_scan(self, channel: str, outcome: str, *, is_bot: bool) -> None:
        """Count one scan recorded (``channel``, stored ``outcome``: ``redirect``,
        ``fallback`` or ``blocked``, bot flag)."""
        key = (channel, outcome, is_bot)
        child = self._scan_children.get(key)
        if child is None:
            bot = "true" if is_bot else "false"
            child = self._scan_children[key] = self.scans.labels(channel, outcome, bot)
        child.inc()

    def collect_from(self, scans: ScanService, limiter_clients: int) -> None:
        """Copy the scan runtime's state into the metrics (called at scrape time)."""
        stats = scans.writer.stats
        sizes, seconds = stats.batch_sizes[:], stats.commit_seconds[:]
        del stats.batch_sizes[: len(sizes)], stats.commit_seconds[: len(seconds)]
        for size in sizes:
            self.batch_size.observe(size)
        for value in seconds:
            self.commit_seconds.observe(value)
        self.committed.set(stats.committed)
        self.spooled.set(stats.spooled)
        self.replayed.set(stats.replayed)
        self.spool_depth.set(scans.writer.spool_depth())
        self.queue_depth.set(scans.writer.queue_depth)
        self.database_ok.set(1 if scans.writer.database_ok else 0)
        self.cache_tags.set(len(scans.cache))
        self.rate_limited_clients.set(limiter_clients)


router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics."""
    app_metrics: Metrics = request.app.state.metrics
    limiter = request.app.state.rate_limiter
    app_metrics.collect_from(request.app.state.scans, len(limiter) if limiter is not None else 0)
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
