"""``POST /s/{click_id}/location``: the consent page's beacon (a precise position).

Public, no API key: the click id is the capability (unguessable, 128 bits). Bounded by a
per-address token bucket (``PASSERELLE_LOCATION_RATE_LIMIT_PER_S`` / ``_BURST``).
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.deps import SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.errors import RateLimited
from campaigns.models import utcnow
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.schemas import ScanLocationCreate
from campaigns.services.scan_locations import record_scan_location
from geo.ip import parse_client

router = APIRouter(tags=["short links"], route_class=JsonBodyRoute)


@router.post(
    "/s/{click_id}/location",
    status_code=204,
    response_class=Response,
    summary="Record a scan's consented precise position",
    responses=problem_responses(
        "click_not_found",
        "location_already_recorded",
        "location_window_closed",
        "invalid_coordinates",
        "rate_limited",
    ),
)
async def record_location(
    request: Request,
    click_id: Annotated[
        str,
        Path(
            description="The scan's click id (`pcid` of its redirect)",
            examples=["q3VhZ2V0LWNsaWNrLWlk"],
            max_length=64,
        ),
    ],
    body: ScanLocationCreate,
    session: SessionDep,
    token: Annotated[
        str | None,
        Query(
            alias="t",
            description="The scan's signed click token, as the consent page gives it: "
            "vouches for a scan not stored yet",
            examples=["42.1764950400000.b1Zk3x0V7lq2m9QeF8oHkA"],
            max_length=96,
        ),
    ] = None,
) -> Response:
    """Sent by the consent page of a campaign with `precise_location: ask`, with the
    browser's answer to the Geolocation API. Accepted once per click id, within 10
    minutes of the scan; read afterwards as the scan's position with `geo_source: gps`,
    and the store whose area covers it (else the scan's own store) as its `location_id`.
    The page's beacon URL carries the scan's signed click token (`t`): with it, a scan
    not yet in the database (spooled, or in another server process's group commit) is
    accepted too, and its position joined to it once stored; without it, an unknown
    click id is 404 `click_not_found`."""
    limiter: RateLimiter | None = request.app.state.location_rate_limiter
    if limiter is not None:
        key = parse_client(request.client.host if request.client else None).key
        wait = limiter.check(f"location:{key}")
        if wait:
            retry_after = str(max(1, math.ceil(wait)))
            raise RateLimited(
                f"Too many positions from this address; retry in {retry_after} s",
                retry_after=retry_after,
            )
    scans = request.app.state.scans
    await record_scan_location(
        session,
        click_id=click_id,
        data=body,
        now=utcnow(),
        recent=scans.recent_clicks,
        vouched=scans.click_tokens.verify("location", token, click_id=click_id),
        match=scans.locations.match,
    )
    return Response(status_code=204)
