"""``POST /s/{click_id}/consent``: the visitor's answer to the cookie question of the
consent page (organizations with ``visitor_cookie_consent = ask``).

Public, no API key: a plain HTML form (works without JavaScript), authenticated by the
scan's signed click token ``t`` (:mod:`campaigns.scanning.click_tokens`), which also
binds the destination ``next`` (no open redirect). Valid even before the scan is in
``scans`` (spooled, or in another process's group commit): the token says whose scan it
is.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Request, Response

from api.deps import SessionDep
from api.errors import problem_responses
from api.routing import JsonBodyRoute
from campaigns.errors import NotFound
from campaigns.scanning.cookies import read_cookies
from campaigns.scanning.service import ScanService
from campaigns.services.visitor_consents import record_cookie_consent

# A form, not JSON: JsonBodyRoute leaves Form bodies unchecked (api/routing.py).
router = APIRouter(tags=["short links"], route_class=JsonBodyRoute)


@router.post(
    "/s/{click_id}/consent",
    status_code=303,
    response_class=Response,
    summary="Answer the visitor-cookie question of the consent page",
    responses={
        303: {"description": "Go on to the destination, with the cookie of the answer"},
        **problem_responses("click_not_found", "validation_error"),
    },
)
async def record_cookie_answer(
    request: Request,
    click_id: Annotated[
        str,
        Path(
            description="The scan's click id (`pcid` of its redirect)",
            examples=["q3VhZ2V0LWNsaWNrLWlk"],
            max_length=64,
        ),
    ],
    answer: Annotated[
        Literal["yes", "no"],
        Form(description="The visitor's answer", examples=["yes"]),
    ],
    next_url: Annotated[
        str,
        Form(
            alias="next",
            description="Where to go on to: the scan's destination, as the page gave it",
            examples=["https://shop.example.com/summer?pcid=q3VhZ2V0LWNsaWNrLWlk"],
            max_length=8192,
        ),
    ],
    token: Annotated[
        str,
        Form(
            alias="t",
            description="The scan's signed click token, as the page gave it",
            examples=["42.1764950400000.b1Zk3x0V7lq2m9QeF8oHkA"],
            max_length=96,
        ),
    ],
    session: SessionDep,
) -> Response:
    """Sent by the consent page's form. `yes`: the visitor cookie is set (a random UUID,
    13 months, `HttpOnly`, `SameSite=Lax`, `Secure` on an https origin) and linked to
    this scan for attribution journeys; `no`: a `passerelle_consent=no` cookie (6 months)
    so the visitor is not asked again. Either way 303 to the destination. A token that
    does not match the click id and destination: 404 `click_not_found`."""
    scans: ScanService = request.app.state.scans
    click = scans.click_tokens.verify("consent", token, click_id=click_id, bound=next_url)
    if click is None:
        raise NotFound("No scan has this click id", code="click_not_found")
    response = Response(
        status_code=303,
        headers={
            "Location": next_url,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
    if answer == "no":
        response.headers.append("set-cookie", scans.cookie_headers.refusal)
        return response
    if scans.cookies.consent_mode(click.organization_id) is None:
        return response  # the organization turned the cookie off since the page was shown
    current, _ = read_cookies(request.headers.get("cookie"))
    cookie_id = await record_cookie_consent(
        session,
        click_id=click_id,
        organization_id=click.organization_id,
        cookie_id=current or uuid.uuid4(),
    )
    if cookie_id != current:
        response.headers.append("set-cookie", scans.cookie_headers.visitor(cookie_id))
    return response
