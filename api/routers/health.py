"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from campaigns.scanning.service import ScanService

router = APIRouter(tags=["health"])


@router.get("/health/live")
@router.head("/health/live", include_in_schema=False)
async def live() -> dict[str, str]:
    """200 while the process serves requests, database or not."""
    return {"status": "ok"}


@router.get("/health/scans")
@router.head("/health/scans", include_in_schema=False)
async def scans_ready(request: Request) -> JSONResponse:
    """``{"serving": bool, "tags_cached": int, "database": bool, "storable": bool}``: 200
    while this process can answer scans, even with the database away (tags from memory or
    the snapshot, scans to the spool), else 503, also when scans can be stored nowhere
    (database away and spool failing or full: ``storable`` false). Route ``/s/`` traffic
    on this probe: on ``/health/ready`` a database outage would take every instance out
    of the load balancer and stop all redirects."""
    scans: ScanService = request.app.state.scans
    serving = scans.serving and scans.writer.storable
    body = {
        "serving": serving,
        "tags_cached": len(scans.cache),
        "database": scans.writer.database_ok,
        "storable": scans.writer.storable,
    }
    return JSONResponse(body, status_code=200 if serving else 503)


@router.get("/health/ready")
@router.head("/health/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """``{"ready": bool, ...}``: 200 when the tag cache is loaded from the database and the
    database answers, else 503: gate deployments and the management API on it.
    ``snapshot`` is ``"ok"``, ``"failed: <reason>"`` (the data directory cannot be
    written: a cold start during an outage would serve older tags; fix the volume) or
    null before the first write; it does not make the process unready."""
    scans: ScanService = request.app.state.scans
    body = {
        "ready": scans.ready,
        "tags_cached": len(scans.cache),
        "cache_from_database": scans.cache.loaded_from_db,
        "database": scans.writer.database_ok,
        "snapshot": scans.runtime.snapshot_status,
    }
    return JSONResponse(body, status_code=200 if scans.ready else 503)
