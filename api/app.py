"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp

from api import dashboard, metrics
from api.errors import install_error_handlers
from api.middleware import BodySizeLimit, HeadersAndClient
from api.openapi import install_openapi, operation_id
from api.routers import (
    api_keys,
    artwork,
    attribution,
    audit,
    campaigns,
    conversions,
    events,
    geo_reports,
    health,
    locations,
    nfc,
    organization,
    privacy,
    qr,
    rules,
    scan_locations,
    scans,
    short_links,
    stats,
    tags,
    visitor_consent,
    webhooks,
)
from api.scan_endpoint import ShortLinks
from api.security_headers import SecurityHeaders, hsts_header
from campaigns.db import libpq_url, make_engine, make_sessionmaker
from campaigns.feed.hub import FeedHub
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService
from campaigns.services import retention
from campaigns.services.credits import RefreshWorker
from campaigns.services.rollups import RollupWorker
from campaigns.settings import Settings, get_settings
from campaigns.webhooks.delivery import WebhookDispatcher
from geo.geoip import GeoIPReader


def served_app(app: FastAPI) -> ASGIApp:
    """The ASGI application a server runs for ``app`` (made by :func:`create_app`): the
    header-size guard (431 ``headers_too_large`` on every path) and the client address
    behind trusted proxies (:class:`api.middleware.ForwardedFor`), both in one pass over
    the headers (:class:`api.middleware.HeadersAndClient`), then the short links
    (:class:`api.scan_endpoint.ShortLinks`), then the security headers of every other
    response (:class:`api.security_headers.SecurityHeaders`), then FastAPI. A scan is
    answered before any of FastAPI's own layers (its OpenTelemetry hook, Starlette's error
    and body-limit middleware, the router); every other request and the lifespan go on to
    ``app``."""
    settings = app.state.settings
    short_links = ShortLinks(SecurityHeaders(app, base_url=settings.base_url), state=app.state)
    return HeadersAndClient(
        short_links,
        max_bytes=settings.max_header_bytes,
        trusted=settings.trusted_proxies,
        extra_headers=hsts_header(settings.base_url),
    )


def close_streams_on_exit_signal(feed: FeedHub) -> Callable[[], None]:
    """Make SIGTERM and SIGINT also end the live feed's streams, then run the handler
    that was installed (uvicorn's). uvicorn waits for open responses before it runs the
    lifespan's shutdown, and an event stream never ends by itself: without this, every
    shutdown with a client listening would wait the whole graceful timeout. Returns the
    function that puts the previous handlers back. Does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(feed.close_streams)
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:
            signal.default_int_handler(signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, chained in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, chained)

    return restore


def create_served_app() -> ASGIApp:
    """uvicorn's application factory (``passerelle serve``): :func:`served_app` of
    :func:`create_app` with the process's settings."""
    return served_app(create_app())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The lifespan opens the database pool and starts the scan runtime
    (tag cache, listener, writer) and the webhook dispatcher; shutdown stops the
    dispatcher and drains the scan writer."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        scans = ScanService(
            conninfo=libpq_url(settings.database_url),
            data_dir=settings.data_dir,
            secret_key=settings.keyring,
            limiter=app.state.rate_limiter,
            geoip=(
                GeoIPReader(settings.geoip_db, check_interval_s=settings.geoip_check_interval_s)
                if settings.geoip_db is not None
                else None
            ),
            batch_size=settings.writer_batch_size,
            max_delay_s=settings.writer_max_delay_s,
            reconcile_interval_s=settings.cache_reconcile_interval_s,
            secure_cookies=settings.short_link_origin.lower().startswith("https://"),
            writer_options={
                "queue_max": settings.writer_queue_max,
                "connections": settings.writer_connections,
                "spool_max_bytes": settings.spool_max_bytes,
                "replay_timeout_s": settings.replay_statement_timeout_s,
                "stop_timeout_s": settings.writer_stop_timeout_s,
            },
        )
        app.state.scans = scans
        feed = FeedHub(
            libpq_url(settings.database_url),
            poll_interval_s=settings.feed_poll_interval_s,
            retention_s=settings.feed_retention_s,
            queue_max=settings.feed_queue_max,
        )
        app.state.feed = feed
        scans.writer.on_commit = feed.committed
        await scans.start()
        dispatcher = WebhookDispatcher(
            conninfo=libpq_url(settings.database_url),
            secret_key=settings.keyring,
            allow_private=settings.allows_private_webhooks,
            max_attempts=settings.webhook_max_attempts,
            backoff_base_s=settings.webhook_backoff_base_s,
            backoff_cap_s=settings.webhook_backoff_cap_s,
            timeout_s=settings.webhook_timeout_s,
            lease_s=settings.webhook_lease_s,
            poll_interval_s=settings.webhook_poll_interval_s,
            concurrency=settings.webhook_concurrency,
        )
        app.state.webhooks = dispatcher
        if settings.webhook_delivery_enabled:
            await dispatcher.start()
        await feed.start()
        restore_signals = close_streams_on_exit_signal(feed)
        rollups = RollupWorker(
            engine,
            interval_s=settings.rollup_interval_s,
            margin=dt.timedelta(seconds=settings.rollup_margin_s),
        )
        app.state.rollups = rollups
        rollups.start()
        credits = RefreshWorker(engine, interval_s=settings.credits_refresh_interval_s)
        credits.start()
        purging = (
            asyncio.create_task(
                retention.purge_loop(
                    engine,
                    interval_s=settings.purge_check_interval_s,
                    first_delay_s=min(300.0, settings.purge_check_interval_s),
                ),
                name="passerelle-purge",
            )
            if settings.purge_enabled
            else None
        )
        # What is loaded by now (modules, the tag cache, the parsers' tables) lives as long
        # as the process: moved out of the cyclic collector's sight, so a full collection
        # while serving walks only what serving created instead of stalling every request
        # of the process (docs/DECISIONS.md, "Garbage collection on the scan path").
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if purging is not None:
                purging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purging
            restore_signals()
            await credits.stop()
            await rollups.stop()
            await feed.stop()
            await dispatcher.stop()
            await scans.stop()
            # Worker processes start with the first render; stop them with the app.
            await asyncio.to_thread(app.state.render_pool.shutdown)
            await engine.dispose()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from files shipped in the
    # fastapi-offline package (under /static-offline-docs), not from a CDN.
    app = FastAPIOffline(
        title="Passerelle",
        version="0.1.0",
        summary="QR and NFC campaigns, scans, conversions and attribution.",
        lifespan=lifespan,
        # A trailing-slash redirect would be built from the client's Host header.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
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
    app.state.location_rate_limiter = (
        RateLimiter(settings.location_rate_limit_per_s, settings.location_rate_limit_burst)
        if settings.rate_limit_enabled
        else None
    )
    app.state.api_rate_limiter = (
        RateLimiter(settings.api_rate_limit_per_s, settings.api_rate_limit_burst)
        if settings.rate_limit_enabled
        else None
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        # Bulk imports are larger than any other body (10,000 stores as GeoJSON ~ 3 MB).
        path_limits={"/v1/locations/import": settings.max_import_bytes},
    )
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(short_links.router)
    app.include_router(scan_locations.router)
    app.include_router(visitor_consent.router)
    for module in (
        campaigns,
        tags,
        locations,
        conversions,
        stats,
        events,
        scans,
        geo_reports,
        rules,
        attribution,
        organization,
        privacy,
        qr,
        nfc,
        artwork,
        webhooks,
        api_keys,
        audit,
    ):
        app.include_router(module.router)
    dashboard.install(app)
    return app
