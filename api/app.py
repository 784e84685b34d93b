"""The ASGI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics
from api.errors import PROBLEM_RESPONSES, install_error_handlers
from api.middleware import BodySizeLimit
from api.routers import artwork, campaigns, conversions, health, qr, stats, tags
from api.scan_endpoint import ScanEndpoint
from campaigns.db import libpq_url, make_engine, make_sessionmaker
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService
from campaigns.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The lifespan opens the database pool and starts the scan runtime
    (tag cache, listener, writer); shutdown drains the scan writer."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        scans = ScanService(
            conninfo=libpq_url(settings.database_url),
            data_dir=settings.data_dir,
            secret_key=settings.secret_key,
            batch_size=settings.writer_batch_size,
            max_delay_s=settings.writer_max_delay_s,
            reconcile_interval_s=settings.cache_reconcile_interval_s,
        )
        app.state.scans = scans
        await scans.start()
        try:
            yield
        finally:
            await scans.stop()
            # Worker processes start with the first render; stop them with the app.
            await asyncio.to_thread(app.state.render_pool.shutdown)
            await engine.dispose()

    app = FastAPI(
        title="Passerelle",
        version="0.1.0",
        summary="QR and NFC campaigns, scans, conversions and attribution.",
        lifespan=lifespan,
        # A trailing-slash redirect would be built from the client's Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.metrics = metrics.Metrics()
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        if settings.rate_limit_enabled
        else None
    )
    app.state.render_pool = RenderPool(
        workers=settings.render_workers or None,
        queue_per_owner=settings.render_queue_per_organization,
        queue_total=settings.render_queue_total,
        cache_bytes=settings.render_cache_bytes,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost: scans skip the router and its dependency machinery (see scan_endpoint).
    app.add_middleware(ScanEndpoint)
    install_error_handlers(app)
    app.include_router(metrics.router)
    app.include_router(health.router)
    for module in (campaigns, tags, conversions, stats, qr, artwork):
        app.include_router(module.router, responses=PROBLEM_RESPONSES)
    return app
