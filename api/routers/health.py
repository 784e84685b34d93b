"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from campaigns.scanning.service import ScanService

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 while the process serves requests, database or not."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """``{"ready": bool, ...}``: 200 when the tag cache is loaded from the database and the
    database answers, else 503 (a load balancer then prefers other instances)."""
    scans: ScanService = request.app.state.scans
    body = {
        "ready": scans.ready,
        "tags_cached": len(scans.cache),
        "cache_from_database": scans.cache.loaded_from_db,
        "database": scans.writer.database_ok,
    }
    return JSONResponse(body, status_code=200 if scans.ready else 503)
