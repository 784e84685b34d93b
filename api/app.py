"""The ASGI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp

from api import metrics
from api.errors import install_error_handlers
from api.middleware import BodySizeLimit, ForwardedFor, HeaderSizeLimit
from api.openapi import install_openapi, operation_id
from api.routers import (
    api_keys,
    artwork,
    attribution,
    audit,
    campaigns,
    conversions,
    geo_reports,
    health,
    locations,
    nfc,
    organization,
    qr,
    rules,
    scan_locations,
    scans,
    short_links,
    stats,
    tags,
)
from api.scan_endpoint import ShortLinks
from api.security_headers import SecurityHeaders
from campaigns.db import libpq_url, make_engine, make_sessionmaker
from campaigns.payloads.rendering import RenderPool
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.service import ScanService
from campaigns.settings import Settings, get_settings
from geo.geoip import GeoIPReader


def served_app(app: FastAPI) -> ASGIApp:
    """The ASGI application a server runs for ``app`` (made by :func:`create_app`): the
    header-size guard (431 ``headers_too_large`` on every path), the client address
    behind trusted proxies (:class:`api.middleware.ForwardedFor`), then the short links
    (:class:`api.scan_endpoint.ShortLinks`), then the security headers of every other
    response (:class:`api.security_headers.SecurityHeaders`), then FastAPI. A scan is
    answered before any of FastAPI's own layers (its OpenTelemetry hook, Starlette's
    error and body-limit middleware, the router); every other request and the lifespan
    go on to ``app``."""
    settings = app.state.settings
    short_links = ShortLinks(SecurityHeaders(app, base_url=settings.base_url), state=app.state)
    forwarded = ForwardedFor(short_links, trusted=settings.trusted_proxies)
    return HeaderSizeLimit(forwarded, max_bytes=settings.max_header_bytes)


def create_served_app() -> ASGIApp:
    """uvicorn's application factory (``passerelle serve``): :func:`served_app` of
    :func:`create_app` with the process's settings."""
    return served_app(create_app())


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
            limiter=app.state.rate_limiter,
            geoip=(
                GeoIPReader(settings.geoip_db, check_interval_s=settings.geoip_check_interval_s)
                if settings.geoip_db is not None
                else None
            ),
            batch_size=settings.writer_batch_size,
            max_delay_s=settings.writer_max_delay_s,
            reconcile_interval_s=settings.cache_reconcile_interval_s,
            writer_options={
                "queue_max": settings.writer_queue_max,
                "spool_max_bytes": settings.spool_max_bytes,
                "replay_timeout_s": settings.replay_statement_timeout_s,
                "stop_timeout_s": settings.writer_stop_timeout_s,
            },
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
    for module in (
        campaigns,
        tags,
        locations,
        conversions,
        stats,
        scans,
        geo_reports,
        rules,
        attribution,
        organization,
        qr,
        nfc,
        artwork,
        api_keys,
        audit,
    ):
        app.include_router(module.router)
    return app
