"""The dashboard's pages under ``/app``: thin routes over the same services as ``/v1``.

Every route here is left out of the OpenAPI document (HTML for browsers, not the API).
Reads need a signed-in user (:data:`~api.dashboard.security.Viewer`), changes an editor
or an admin and the session's CSRF token (:mod:`api.dashboard.security`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Final

from babel.numbers import get_currency_precision
from fastapi import APIRouter, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.dashboard.i18n import LANG_COOKIE, LANGUAGES, Formatter, pick_language
from api.dashboard.security import (
    ANON_CSRF_COOKIE,
    SESSION_COOKIE,
    Admin,
    Editor,
    ReleasedOrganization,
    Viewer,
    clear_installer_cookie,
    cookie_secure,
    new_nonce,
    safe_next,
    security_headers,
    set_installer_cookie,
)
from api.deps import SessionDep, SessionFactory, SettingsDep
from api.routers.artwork import get_print_zip, get_sheets
from api.routers.events import event_stream
from api.routers.qr import get_tag_qr, style_params
from api.routing import CheckedRoute
from campaigns.attribution import MODELS, Model
from campaigns.db import unit_of_work
from campaigns.errors import DomainError, InvalidInput, Unauthorized
from campaigns.mail import LinkKind, MailNotSent
from campaigns.models import Campaign, Location
from campaigns.payloads import qr
from campaigns.scanning.links import qr_url, short_url
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.schemas import CampaignCreate, CampaignUpdate, TagCreate, TagUpdate
from campaigns.scopes import SCOPES
from campaigns.services import attribution as attribution_service
from campaigns.services import campaigns as campaign_service
from campaigns.services import geo_reports, locations, organizations, sessions, stats, tags, users
from campaigns.services.campaigns import MAX_ID
from campaigns.services.sessions import Current
from campaigns.settings import Settings


class DashboardRoute(CheckedRoute):
    """The route class of every dashboard page: a :class:`~api.routing.CheckedRoute`
    whose integer path parameters (``campaign_id``, ``user_id``, ``key_id``...) must be
    database ids, 1 to :data:`~campaigns.services.campaigns.MAX_ID`: any other value
    (too large for PostgreSQL's ``bigint``, zero, negative, not a number) names no row,
    so it is the 404 page before anything else runs, as an unknown id is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        ids = [p.name for p in self.dependant.path_params if p.field_info.annotation is int]
        if not ids:
            return handler

        async def ids_in_range(request: Request) -> Response:
            for name in ids:
                if not is_database_id(request.path_params.get(name, "")):
                    raise StarletteHTTPException(404, f"No such {name}")
            return await handler(request)

        return ids_in_range


def is_database_id(value: str) -> bool:
    """Whether a path segment is a decimal id PostgreSQL's ``bigint`` holds (1 to
    :data:`~campaigns.services.campaigns.MAX_ID`, ASCII digits only)."""
    return (
        0 < len(value) <= 19 and value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID
    )


router = APIRouter(prefix="/app", include_in_schema=False, route_class=DashboardRoute)

_HERE = Path(__file__).resolve().parent
_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

#: The periods of the campaign pages: query value -> days back from today's UTC midnight.
PERIODS: Final[dict[str, int | None]] = {"7d": 7, "30d": 30, "90d": 90, "all": None}
DEFAULT_PERIOD: Final = "30d"
#: Hexagon size of the dashboard's heatmap (metres, centre to vertex).
HEAT_CELL_M: Final = 250
#: Most campaigns and tags listed on one page.
LIST_LIMIT: Final = 100


def period_start(period: str, *, today: dt.date | None = None) -> dt.datetime | None:
    """Start of ``period`` (:data:`PERIODS`): UTC midnight ``days`` before today; None for
    ``all``. The end is open (now), as in ``/v1`` without ``to``."""
    days = PERIODS.get(period, PERIODS[DEFAULT_PERIOD])
    if days is None:
        return None
    today = today or dt.datetime.now(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=days), dt.time(), tzinfo=dt.UTC)


def formatter(request: Request) -> Formatter:
    """The request's language (cookie, else ``Accept-Language``)."""
    return Formatter(
        pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    )


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page: ``template`` with the user, CSRF token, language, a CSP nonce, and the
    dashboard's security headers."""
    settings: Settings = request.app.state.settings
    f = formatter(request)
    nonce = new_nonce()
    viewer = getattr(request.state, "viewer", None)
    html = _templates.get_template(template).render(
        request=request,
        f=f,
        t=f.t,
        lang=f.language,
        languages=LANGUAGES,
        nonce=nonce,
        user=viewer,
        csrf=viewer.csrf if viewer else context.pop("anon_csrf", None),
        path=request.url.path,
        **context,
    )
    headers = security_headers(settings, nonce)
    headers["Content-Language"] = f.language
    response = HTMLResponse(html, status_code=status, headers=headers)
    if viewer is not None:
        # Each page keeps the phone's installer mark alive as long as the session.
        set_installer_cookie(
            response, settings, organization_id=viewer.organization_id, user_id=viewer.user_id
        )
    return response


def see_other(url: str) -> RedirectResponse:
    """303 to a path of the dashboard (after a form post)."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    """The error page (403, 404, 422, 429...) in the user's language."""
    return render(request, "error.html", status=status, title=title, message=message)


# --- Signing in -----------------------------------------------------------------------


def _anon_csrf(request: Request) -> str:
    return request.cookies.get(ANON_CSRF_COOKIE) or new_nonce()


def _with_anon_csrf(response: Response, token: str, settings: Settings) -> Response:
    response.set_cookie(
        ANON_CSRF_COOKIE,
        token,
        path="/app",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(settings),
    )
    return response


def _anon_csrf_ok(request: Request, presented: str) -> bool:
    import hmac

    cookie = request.cookies.get(ANON_CSRF_COOKIE)
    return bool(cookie) and hmac.compare_digest(cookie.encode(), presented.encode())  # type: ignore[union-attr]


def _start_session(
    response: Response, token: str, settings: Settings, *, organization_id: int, user_id: int
) -> Response:
    set_installer_cookie(response, settings, organization_id=organization_id, user_id=user_id)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/app",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(settings),
    )
    response.delete_cookie(ANON_CSRF_COOKIE, path="/app")
    return response


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return see_other("/app/campaigns")


@router.get("/sign-in")
async def sign_in_page(
    request: Request, settings: SettingsDep, next: str | None = None, expired: bool = False
) -> Response:
    token = _anon_csrf(request)
    page = render(
        request,
        "sign_in.html",
        anon_csrf=token,
        next=safe_next(next),
        notice="session_expired" if expired else None,
    )
    return _with_anon_csrf(page, token, settings)


def _sign_in_limiters(request: Request) -> tuple[RateLimiter, RateLimiter]:
    state = request.app.state
    if not hasattr(state, "sign_in_limiters"):
        s: Settings = state.settings
        rate = 1.0 / s.dashboard_sign_in_refill_s
        state.sign_in_limiters = (
            RateLimiter(rate, s.dashboard_sign_in_per_account),
            RateLimiter(rate, s.dashboard_sign_in_per_address),
        )
    limiters: tuple[RateLimiter, RateLimiter] = state.sign_in_limiters
    return limiters


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=4096)],
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the password; at most ``dashboard_sign_in_per_account`` attempts per
    e-mail and ``_per_address`` per client address, then one per
    ``dashboard_sign_in_refill_s`` seconds (429 page saying how long to wait)."""
    f = formatter(request)
    if not _anon_csrf_ok(request, csrf):
        return error_page(request, 403, f.t("forbidden"), f.t("forbidden_csrf"))
    per_account, per_address = _sign_in_limiters(request)
    address = request.client.host if request.client else "unknown"
    wait = max(
        per_account.check("account:" + email.strip().lower()),
        per_address.check("address:" + address),
    )
    token = _anon_csrf(request)
    if wait:
        seconds = max(1, math.ceil(wait))
        page = render(
            request,
            "sign_in.html",
            status=429,
            anon_csrf=token,
            next=safe_next(next),
            email=email,
            error=f.t("too_many_attempts", seconds=seconds),
        )
        page.headers["Retry-After"] = str(seconds)
        return page
    try:
        user = await users.authenticate_user(session, email=email, password=password)
    except Unauthorized:
        page = render(
            request,
            "sign_in.html",
            status=401,
            anon_csrf=token,
            next=safe_next(next),
            email=email,
            error=f.t("bad_credentials"),
        )
        return page
    opened = await sessions.open_session(session, user_id=user.id)
    return _start_session(
        see_other(safe_next(next)),
        opened.token,
        settings,
        organization_id=user.organization_id,
        user_id=user.id,
    )


@router.post("/sign-out")
async def sign_out(
    request: Request, current: Viewer, session: SessionDep, settings: SettingsDep
) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    await sessions.close_session(session, token=token)
    response = see_other("/app/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/app")
    return clear_installer_cookie(response, settings)


@router.get("/sign-in/{token}")
async def link_page(
    token: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    f = formatter(request)
    try:
        user = await users.user_for_link(session, token=token)
    except DomainError:
        return error_page(request, 404, f.t("error"), f.t("invalid_link"))
    anon = _anon_csrf(request)
    page = render(request, "set_password.html", anon_csrf=anon, email=user.email)
    return _with_anon_csrf(page, anon, settings)


@router.post("/sign-in/{token}")
async def link_set_password(
    token: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    password: Annotated[str, Form(max_length=4096)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Choose a password with a sign-in link (used up), then signed in."""
    f = formatter(request)
    if not _anon_csrf_ok(request, csrf):
        return error_page(request, 403, f.t("forbidden"), f.t("forbidden_csrf"))
    try:
        user = await users.set_password_with_link(session, token=token, password=password)
    except InvalidInput:
        found = await users.user_for_link(session, token=token)
        page = render(
            request,
            "set_password.html",
            status=422,
            anon_csrf=_anon_csrf(request),
            email=found.email,
            error=f.t("password_hint"),
        )
        return page
    except DomainError:
        return error_page(request, 404, f.t("error"), f.t("invalid_link"))
    opened = await sessions.open_session(session, user_id=user.id)
    return _start_session(
        see_other("/app/campaigns"),
        opened.token,
        settings,
        organization_id=user.organization_id,
        user_id=user.id,
    )


@router.get("/lang/{language}")
async def switch_language(language: str, next: str | None = None) -> Response:
    """Remember the chosen language (a cookie for a year) and go back."""
    response = see_other(safe_next(next))
    if language in LANGUAGES:
        response.set_cookie(LANG_COOKIE, language, path="/app", max_age=365 * 86400, samesite="lax")
    return response


@router.get("/account")
async def account_page(request: Request, current: Viewer, done: bool = False) -> Response:
    return render(request, "account.html", notice="password_changed" if done else None)


@router.post("/account/password")
async def change_password(
    request: Request,
    current: Viewer,
    session: SessionDep,
    current_password: Annotated[str, Form(max_length=4096)],
    new_password: Annotated[str, Form(max_length=4096)],
) -> Response:
    """Any role may change their own password; their other sessions end."""
    try:
        await users.change_password(
            session, user=current.user, current=current_password, new=new_password
        )
    except (Unauthorized, InvalidInput) as exc:
        f = formatter(request)
        message = f.t("bad_credentials") if isinstance(exc, Unauthorized) else f.t("password_hint")
        return render(request, "account.html", status=422, error=message)
    await sessions.close_user_sessions(session, user_id=current.user.id, keep_id=current.session.id)
    return see_other("/app/account?done=true")


# --- Campaigns ------------------------------------------------------------------------


def _period(value: str | None) -> str:
    return value if value in PERIODS else DEFAULT_PERIOD


@router.get("/campaigns")
async def campaigns_page(
    request: Request, current: Viewer, session: SessionDep, period: str | None = None
) -> Response:
    """Every live campaign with this period's scans, unique visitors, conversions,
    revenue and ROAS (``campaign_stats``, as ``GET /v1/campaigns/{id}/stats?from=``)."""
    period = _period(period)
    start = period_start(period)
    organization_id = current.user.organization_id
    rows, _ = await campaign_service.list_campaigns(
        session, organization_id=organization_id, limit=LIST_LIMIT
    )
    figures = [
        (
            campaign,
            await stats.campaign_stats(
                session, organization_id=organization_id, campaign_id=campaign.id, start=start
            ),
        )
        for campaign in rows
    ]
    return render(
        request, "campaigns.html", figures=figures, period=period, periods=PERIODS, start=start
    )


def _form_text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _cost(amount: str | None, currency: str | None) -> dict[str, Any] | None:
    """The form's cost in major units (``1250.50``, comma accepted) as ``Money`` fields;
    None when empty. Raises :class:`InvalidInput` for an unreadable amount."""
    amount = _form_text(amount)
    if amount is None:
        return None
    code = (_form_text(currency) or "EUR").upper()
    try:
        value = Decimal(amount.replace(" ", "").replace(",", "."))
    except InvalidOperation:
        raise InvalidInput("The cost is not a number", code="validation_error") from None
    minor = value.scaleb(get_currency_precision(code))
    if minor != minor.to_integral_value() or not minor.is_finite():
        raise InvalidInput("The cost has too many decimals", code="validation_error")
    return {"amount_minor": int(minor), "currency": code}


def _messages(exc: ValidationError | DomainError) -> list[str]:
    if isinstance(exc, DomainError):
        return [exc.detail]
    return [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
    ]


def _campaign_form_values(campaign: Campaign | None) -> dict[str, Any]:
    if campaign is None:
        return {
            "name": "",
            "destination_url": "",
            "timezone": "Europe/Paris",
            "cost": "",
            "currency": "EUR",
        }
    cost = ""
    if campaign.cost_amount_minor is not None and campaign.cost_currency:
        digits = get_currency_precision(campaign.cost_currency)
        cost = str(Decimal(campaign.cost_amount_minor).scaleb(-digits))
    return {
        "name": campaign.name,
        "destination_url": campaign.destination_url,
        "timezone": campaign.timezone,
        "cost": cost,
        "currency": campaign.cost_currency or "EUR",
    }


@router.get("/campaigns/new")
async def new_campaign_page(request: Request, current: Editor) -> Response:
    return render(request, "campaign_form.html", campaign=None, values=_campaign_form_values(None))


CampaignField = Annotated[str, Form(max_length=2000)]


def _campaign_form_refused(
    request: Request,
    exc: ValidationError | DomainError,
    *,
    campaign: Campaign | None,
    values: dict[str, str],
) -> Response:
    """The campaign form again (422) with what was posted and the errors of ``exc``; a
    404 (the campaign is gone, or another organization's) propagates to its page."""
    if isinstance(exc, DomainError) and exc.status == 404:
        raise exc
    return render(
        request,
        "campaign_form.html",
        status=422,
        campaign=campaign,
        values=values,
        errors=_messages(exc),
    )


@router.post("/campaigns")
async def create_campaign(
    request: Request,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    name: CampaignField,
    destination_url: CampaignField,
    timezone: CampaignField = "UTC",
    cost: CampaignField = "",
    currency: CampaignField = "EUR",
) -> Response:
    values = {
        "name": name,
        "destination_url": destination_url,
        "timezone": timezone,
        "cost": cost,
        "currency": currency,
    }
    try:
        data = CampaignCreate(
            name=name,
            destination_url=destination_url,
            timezone=timezone,
            cost=_cost(cost, currency),
        )
        campaign = await campaign_service.create_campaign(
            session,
            organization_id=current.user.organization_id,
            data=data,
            short_link_origin=settings.short_link_origin,
        )
    except (ValidationError, DomainError) as exc:
        return _campaign_form_refused(request, exc, campaign=None, values=values)
    return see_other(f"/app/campaigns/{campaign.id}")


@router.get("/campaigns/{campaign_id}/edit")
async def edit_campaign_page(
    campaign_id: int, request: Request, current: Editor, session: SessionDep
) -> Response:
    campaign = await campaign_service.get_campaign(
        session, organization_id=current.user.organization_id, campaign_id=campaign_id
    )
    return render(
        request, "campaign_form.html", campaign=campaign, values=_campaign_form_values(campaign)
    )


@router.post("/campaigns/{campaign_id}/edit")
async def edit_campaign(
    campaign_id: int,
    request: Request,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    name: CampaignField,
    destination_url: CampaignField,
    timezone: CampaignField = "UTC",
    cost: CampaignField = "",
    currency: CampaignField = "EUR",
) -> Response:
    organization_id = current.user.organization_id
    campaign = await campaign_service.get_campaign(
        session, organization_id=organization_id, campaign_id=campaign_id
    )
    values = {
        "name": name,
        "destination_url": destination_url,
        "timezone": timezone,
        "cost": cost,
        "currency": currency,
    }
    try:
        data = CampaignUpdate(
            name=name,
            destination_url=destination_url,
            timezone=timezone,
            cost=_cost(cost, currency),
        )
        await campaign_service.update_campaign(
            session,
            organization_id=organization_id,
            campaign_id=campaign_id,
            data=data,
            short_link_origin=settings.short_link_origin,
        )
    except (ValidationError, DomainError) as exc:
        return _campaign_form_refused(request, exc, campaign=campaign, values=values)
    return see_other(f"/app/campaigns/{campaign_id}")


@router.post("/campaigns/{campaign_id}/archive")
async def archive_campaign(
    campaign_id: int,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    archived: Annotated[bool, Form()] = True,
) -> Response:
    """Archive (or restore) a campaign: ``PATCH /v1/campaigns/{id}`` ``archived``."""
    await campaign_service.update_campaign(
        session,
        organization_id=current.user.organization_id,
        campaign_id=campaign_id,
        data=CampaignUpdate(archived=archived),
        short_link_origin=settings.short_link_origin,
    )
    return see_other(f"/app/campaigns/{campaign_id}")


def _model(value: str | None) -> Model:
    return value if value in MODELS else "last_touch"


@router.get("/campaigns/{campaign_id}")
async def campaign_page(
    campaign_id: int,
    request: Request,
    current: Viewer,
    session: SessionDep,
    period: str | None = None,
    model: str | None = None,
    interval: str | None = None,
) -> Response:
    """Headline figures, tables by tag, store and channel, the attribution switcher
    (credited tags under the chosen model), the chart, the map and the live feed."""
    organization_id = current.user.organization_id
    period, chosen = _period(period), _model(model)
    start = period_start(period)
    campaign = await campaign_service.get_campaign(
        session, organization_id=organization_id, campaign_id=campaign_id
    )
    figures = await stats.campaign_stats(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        start=start,
        model=chosen,
    )
    credited = await attribution_service.attribution_report(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        model=chosen,
        start=start,
    )
    by_store = await geo_reports.location_stats(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start
    )
    tag_names = {row.tag_id: row.label or row.code for row in figures.by_tag}
    revenue_currency = (
        figures.revenue[0].currency
        if len(figures.revenue) == 1
        else (campaign.cost_currency or "EUR")
    )
    revenue_minor = sum(r.amount_minor for r in figures.revenue if r.currency == revenue_currency)
    return render(
        request,
        "campaign.html",
        campaign=campaign,
        figures=figures,
        credited=credited,
        by_store=by_store,
        tag_names=tag_names,
        period=period,
        periods=PERIODS,
        start=start,
        model=chosen,
        models=MODELS,
        interval=interval if interval in ("hour", "day", "week") else "day",
        revenue_currency=revenue_currency,
        revenue_minor=revenue_minor,
        revenue_digits=get_currency_precision(revenue_currency),
    )


@router.get("/campaigns/{campaign_id}/series.json")
async def campaign_series(
    campaign_id: int,
    current: Viewer,
    session: SessionDep,
    period: str | None = None,
    interval: str = "day",
) -> JSONResponse:
    """The chart's points: ``{"t": [unix seconds], "scans": [...], "conversions": [...]}``
    from ``campaign_stats`` with ``interval`` (hour, day, week) in the campaign's zone."""
    chosen = interval if interval in ("hour", "day", "week") else "day"
    figures = await stats.campaign_stats(
        session,
        organization_id=current.user.organization_id,
        campaign_id=campaign_id,
        start=period_start(_period(period)),
        interval=chosen,  # type: ignore[arg-type]
    )
    points = figures.series or []
    return JSONResponse(
        {
            "t": [int(p.start.timestamp()) for p in points],
            "scans": [p.scans for p in points],
            "conversions": [p.conversions for p in points],
            "timezone": figures.timezone,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/campaigns/{campaign_id}/map.json")
async def campaign_map(
    campaign_id: int,
    current: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    period: str | None = None,
) -> JSONResponse:
    """The map's layers: ``stores`` (GeoJSON points with name, scans and ``radius_m``: a
    circular geofence in metres when set), ``geofences`` (GeoJSON polygons), ``heatmap``
    (``geo_reports.heatmap`` hexagons of :data:`HEAT_CELL_M` metres) and ``tiles`` (the
    XYZ template or null)."""
    organization_id = current.user.organization_id
    start = period_start(_period(period))
    heat = await geo_reports.heatmap(
        session,
        organization_id=organization_id,
        campaign_id=campaign_id,
        cell_m=HEAT_CELL_M,
        start=start,
    )
    per_store = await geo_reports.location_stats(
        session, organization_id=organization_id, campaign_id=campaign_id, start=start
    )
    scans_at = {row.location_id: row.scans for row in per_store.rows}
    return await _map_answer(session, organization_id, settings, heat, scans_at)


async def _map_answer(
    session: Any,
    organization_id: int,
    settings: Settings,
    heat: dict[str, Any],
    scans_at: dict[int | None, int],
) -> JSONResponse:
    stores, geofences = await _store_features(session, organization_id, scans_at)
    return JSONResponse(
        {
            "stores": {"type": "FeatureCollection", "features": stores},
            "geofences": {"type": "FeatureCollection", "features": geofences},
            "heatmap": heat,
            "tiles": settings.map_tiles_url,
        },
        headers={"Cache-Control": "no-store"},
    )


async def _all_locations(session: Any, organization_id: int) -> list[Location]:
    found: list[Location] = []
    cursor = None
    while True:
        page, cursor = await locations.list_locations(
            session, organization_id=organization_id, limit=200, cursor=cursor
        )
        found += page
        if cursor is None or len(found) >= 5000:
            return found


async def _store_features(
    session: Any, organization_id: int, scans_at: dict[int | None, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stores, geofences = [], []
    for location in await _all_locations(session, organization_id):
        shapes = locations.location_geojson(location)
        properties = {
            "id": location.id,
            "name": location.name,
            "scans": scans_at.get(location.id, 0),
            "radius_m": location.radius_m,
        }
        stores.append({"type": "Feature", "geometry": shapes["point"], "properties": properties})
        if shapes["geofence"] is not None:
            geofences.append(
                {"type": "Feature", "geometry": shapes["geofence"], "properties": properties}
            )
    return stores, geofences


@router.get("/campaigns/{campaign_id}/events")
async def campaign_events(
    campaign_id: int,
    request: Request,
    organization_id: ReleasedOrganization,
    sessions_: SessionFactory,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The campaign's live feed for the browser (``EventSource`` cannot send a bearer
    key): the same Server-Sent Events as ``GET /v1/campaigns/{id}/events`` (events
    ``scan`` and ``conversion``, JSON data, resumable with ``Last-Event-ID``), served by
    the same feed hub (:func:`api.routers.events.event_stream`)."""
    async with unit_of_work(sessions_) as session:
        await campaign_service.get_campaign(
            session, organization_id=organization_id, campaign_id=campaign_id
        )
    return event_stream(request, campaign_id, last_event_id)


# --- Tags -----------------------------------------------------------------------------


@router.get("/campaigns/{campaign_id}/tags")
async def tags_page(
    campaign_id: int,
    request: Request,
    current: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    created: int | None = None,
) -> Response:
    organization_id = current.user.organization_id
    campaign = await campaign_service.get_campaign(
        session, organization_id=organization_id, campaign_id=campaign_id
    )
    found, _ = await tags.list_tags(
        session, organization_id=organization_id, campaign_id=campaign_id, limit=LIST_LIMIT
    )
    stores = await _all_locations(session, organization_id)
    ndef_hex = {}
    for tag in found:
        if tag.kind == "nfc":  # what an NFC writer app writes to an NTAG213 sticker
            payload = await tags.tag_ndef(
                session,
                organization_id=organization_id,
                tag_id=tag.id,
                origin=settings.short_link_origin,
                chip="ntag213",
            )
            ndef_hex[tag.id] = payload.message.hex().upper()
    return render(
        request,
        "tags.html",
        campaign=campaign,
        tags=found,
        stores={s.id: s for s in stores},
        links={t.id: short_url(settings.short_link_origin, t.code) for t in found},
        qr_links={t.id: qr_url(settings.short_link_origin, t.code) for t in found},
        ndef_hex=ndef_hex,
        created=created,
    )


@router.post("/campaigns/{campaign_id}/tags")
async def create_tag(
    campaign_id: int,
    request: Request,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    label: Annotated[str, Form(max_length=2000)] = "",
    kind: Annotated[str, Form(max_length=20)] = "qr",
    location_id: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    try:
        data = TagCreate(
            kind=kind,
            label=_form_text(label),
            location_id=int(location_id) if location_id.strip().isdigit() else None,
        )
        await tags.create_tag(
            session,
            organization_id=current.user.organization_id,
            campaign_id=campaign_id,
            data=data,
            short_link_origin=settings.short_link_origin,
            secret_key=settings.keyring,
        )
    except (ValidationError, InvalidInput) as exc:
        f = formatter(request)
        return error_page(request, 422, f.t("error"), "; ".join(_messages(exc)))
    return see_other(f"/app/campaigns/{campaign_id}/tags")


@router.post("/campaigns/{campaign_id}/tags/bulk")
async def create_tags_per_store(
    campaign_id: int,
    request: Request,
    current: Editor,
    session: SessionDep,
    labels: Annotated[str, Form(max_length=2000)] = "",
    kind: Annotated[str, Form(max_length=20)] = "qr",
) -> Response:
    """One tag per store of the organization and label (``POST
    /v1/campaigns/{id}/tags/bulk`` with ``location_ids: "all"``); labels comma-separated,
    default one tag per store labelled ``1``. Idempotent like that route."""
    names = [part.strip() for part in labels.split(",") if part.strip()] or ["1"]
    try:
        result = await tags.create_tags_bulk(
            session,
            organization_id=current.user.organization_id,
            campaign_id=campaign_id,
            kind="nfc" if kind == "nfc" else "qr",
            location_ids="all",
            labels=names,
        )
    except InvalidInput as exc:
        f = formatter(request)
        return error_page(request, 422, f.t("error"), exc.detail)
    return see_other(f"/app/campaigns/{campaign_id}/tags?created={result.created}")


@router.post("/tags/{tag_id}/destination")
async def tag_destination(
    tag_id: int,
    request: Request,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    destination_url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Re-point a tag (``PATCH /v1/tags/{id}`` ``destination_url``); empty: back to the
    campaign's destination."""
    try:
        data = TagUpdate(destination_url=_form_text(destination_url))
        tag = await tags.update_tag(
            session,
            organization_id=current.user.organization_id,
            tag_id=tag_id,
            data=data,
            short_link_origin=settings.short_link_origin,
        )
    except (ValidationError, InvalidInput) as exc:
        f = formatter(request)
        return error_page(request, 422, f.t("error"), "; ".join(_messages(exc)))
    return see_other(f"/app/campaigns/{tag.campaign_id}/tags")


@router.post("/tags/{tag_id}/status")
async def tag_status(
    tag_id: int,
    current: Editor,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[str, Form(max_length=20)],
) -> Response:
    """Disable or re-enable a tag (``PATCH /v1/tags/{id}`` ``status``)."""
    tag = await tags.update_tag(
        session,
        organization_id=current.user.organization_id,
        tag_id=tag_id,
        data=TagUpdate(status="disabled" if status == "disabled" else "active"),
        short_link_origin=settings.short_link_origin,
    )
    return see_other(f"/app/campaigns/{tag.campaign_id}/tags")


@router.get("/tags/{tag_id}/qr")
async def tag_qr(
    tag_id: int,
    request: Request,
    organization_id: ReleasedOrganization,
    sessions_: SessionFactory,
    settings: SettingsDep,
    fmt: Annotated[str, Query(alias="format", pattern="^(png|svg|pdf)$")] = "png",
    size: Annotated[int, Query(ge=64, le=2048)] = 512,
    download: bool = False,
) -> Response:
    """The tag's QR artwork for ``<img>`` and downloads: the same renderer and cache as
    ``GET /v1/tags/{id}/qr`` (that route's function, with the session's organization)."""
    style = style_params(fmt=fmt, size=size if fmt == "png" else None)  # type: ignore[arg-type]
    response = await get_tag_qr(tag_id, request, organization_id, sessions_, settings, style)
    if download and "Content-Disposition" in response.headers:
        response.headers["Content-Disposition"] = response.headers["Content-Disposition"].replace(
            "inline", "attachment"
        )
    response.headers["Vary"] = "Cookie"
    return response


def _as_attachment(response: Response) -> Response:
    """``Content-Disposition: attachment`` (a download, not a page), per session."""
    disposition = response.headers.get("Content-Disposition")
    if disposition:
        response.headers["Content-Disposition"] = disposition.replace("inline", "attachment")
    response.headers["Vary"] = "Cookie"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@router.get("/campaigns/{campaign_id}/print.zip")
async def campaign_print_zip(
    campaign_id: int,
    request: Request,
    organization_id: ReleasedOrganization,
    sessions_: SessionFactory,
    settings: SettingsDep,
    fmt: Annotated[str, Query(alias="format", pattern="^(png|svg|pdf)$")] = "png",
) -> Response:
    """Every QR tag's artwork and ``manifest.csv`` as a zip, in the default style: the
    ``GET /v1/campaigns/{id}/print.zip`` route's own function with the session's
    organization (same streaming, render pool and fair queueing)."""
    style = style_params(fmt=fmt)  # type: ignore[arg-type]
    response = await get_print_zip(
        campaign_id, request, organization_id, sessions_, settings, style
    )
    return _as_attachment(response)


@router.get("/campaigns/{campaign_id}/sheets.pdf")
async def campaign_sheets(
    campaign_id: int,
    request: Request,
    organization_id: ReleasedOrganization,
    sessions_: SessionFactory,
    settings: SettingsDep,
    paper: Annotated[str, Query(pattern="^(A4|Letter)$")] = "A4",
    layout: Annotated[str, Query(max_length=5)] = "3x8",
    caption: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Label sheets of the campaign's QR tags (``GET /v1/campaigns/{id}/sheets.pdf``'s
    function): ``paper`` A4 or Letter, ``layout`` ``COLUMNSxROWS``, ``caption`` on every
    label (empty: each tag's label). A layout too dense to scan is the 422 page."""
    response = await get_sheets(
        campaign_id,
        request,
        organization_id,
        sessions_,
        settings,
        paper=paper,  # type: ignore[arg-type]
        layout=layout,
        caption=_form_text(caption),
        ecc=qr.DEFAULT_ECC,
        border=qr.DEFAULT_BORDER,
    )
    return _as_attachment(response)


# --- Stores ---------------------------------------------------------------------------


def _import_rows(content: bytes, fmt: str) -> list[list[str]]:
    """The file's records for display beside their problems (CSV only: row 1 is the
    first record after the header)."""
    if fmt != "csv":
        return []
    try:
        reader = csv.reader(io.StringIO(content.decode("utf-8-sig")))
        return [row for _, row in zip(range(1001), reader, strict=False)][1:]
    except (UnicodeDecodeError, csv.Error):
        return []


@router.get("/stores")
async def stores_page(request: Request, current: Viewer, session: SessionDep) -> Response:
    stores = await _all_locations(session, current.user.organization_id)
    return render(request, "stores.html", stores=stores, geo=locations.location_geojson)


@router.get("/stores/map.json")
async def stores_map(current: Viewer, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """The stores page's map: every store and geofence, no heatmap (same shape as a
    campaign's ``map.json``)."""
    empty = {"type": "FeatureCollection", "features": []}
    return await _map_answer(session, current.user.organization_id, settings, empty, {})


@router.post("/stores/import")
async def import_stores(
    request: Request, current: Editor, session: SessionDep, file: UploadFile
) -> Response:
    """CSV or GeoJSON import (``POST /v1/locations/import``'s service); when rows are
    invalid nothing is stored and each problem is shown beside its row."""
    content = await file.read()
    name = (file.filename or "").lower()
    fmt: locations.ImportFormat = "geojson" if name.endswith((".json", ".geojson")) else "csv"
    organization_id = current.user.organization_id
    try:
        summary = await locations.import_locations(
            session, organization_id=organization_id, content=content, fmt=fmt
        )
    except InvalidInput as exc:  # validated before any write: nothing to undo
        problems: dict[int, list[dict[str, Any]]] = {}
        for problem in exc.errors or []:
            problems.setdefault(int(problem.get("row", 0)), []).append(problem)
        stores = await _all_locations(session, organization_id)
        return render(
            request,
            "stores.html",
            status=422,
            stores=stores,
            geo=locations.location_geojson,
            import_error=exc.detail,
            problems=problems,
            rows=_import_rows(content, fmt),
        )
    stores = await _all_locations(session, organization_id)
    return render(
        request, "stores.html", stores=stores, geo=locations.location_geojson, summary=summary
    )


# --- Users and API keys (admins) -------------------------------------------------------


@router.get("/users")
async def users_page(request: Request, current: Admin, session: SessionDep) -> Response:
    found = await users.list_users(session, organization_id=current.user.organization_id)
    return render(request, "users.html", users=found, roles=users.ROLES)


async def _users_answer(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    organization_id: int,
    *,
    status: int = 200,
    invited: dict[str, str] | None = None,
    mailed: str | None = None,
    error: str | None = None,
) -> Response:
    found = await users.list_users(session, organization_id=organization_id)
    return render(
        request,
        "users.html",
        status=status,
        users=found,
        roles=users.ROLES,
        invited=invited,
        mailed=mailed,
        error=error,
        hours=settings.dashboard_link_valid_h,
    )


async def _deliver(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    link: users.SignInLink,
    *,
    current: Current,
    kind: LinkKind,
) -> Response:
    """E-mail ``link`` when ``PASSERELLE_SMTP_URL`` is set (then the page says so and
    never shows it), else show it once. The mail goes out before the request's unit of
    work commits: when the SMTP server fails, everything the request did is rolled back
    and the page says so (502)."""
    f = formatter(request)
    organization_id = current.user.organization_id
    inviter = current.user.email
    organization = await organizations.get_organization(session, organization_id=organization_id)
    email = link.user.email
    try:
        url = await users.mail_or_url(
            settings,
            link,
            kind=kind,
            language=f.language,
            organization=organization.name,
            inviter=inviter,
        )
    except MailNotSent as exc:
        await session.rollback()
        message = f.t("mail_failed", email=email, reason=exc.reason)
        return await _users_answer(
            request, session, settings, organization_id, status=502, error=message
        )
    if url is None:
        return await _users_answer(request, session, settings, organization_id, mailed=email)
    invited = {"email": email, "url": url}
    return await _users_answer(request, session, settings, organization_id, invited=invited)


@router.post("/users")
async def invite_user(
    request: Request,
    current: Admin,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)],
    role: Annotated[str, Form(max_length=20)] = "editor",
) -> Response:
    """Invite: the same service as ``passerelle users create``; the link is e-mailed
    (``PASSERELLE_SMTP_URL``), else shown once."""
    organization_id = current.user.organization_id
    try:
        link = await users.create_user(
            session,
            organization_id=organization_id,
            email=email,
            role=role,
            valid_hours=settings.dashboard_link_valid_h,
        )
    except DomainError as exc:
        return await _users_answer(
            request, session, settings, organization_id, status=422, error=exc.detail
        )
    return await _deliver(request, session, settings, link, current=current, kind="invite")


@router.post("/users/{user_id}/link")
async def new_link(
    user_id: int,
    request: Request,
    current: Admin,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """A fresh sign-in link for one of the organization's users (``passerelle users
    reset``'s service): a lost invitation or a forgotten password. Their previous link
    stops working once this one is delivered."""
    found = await users.get_user(
        session, organization_id=current.user.organization_id, user_id=user_id
    )
    link = await users.reset_link(
        session, email=found.email, valid_hours=settings.dashboard_link_valid_h
    )
    return await _deliver(request, session, settings, link, current=current, kind="reset")


@router.post("/users/{user_id}/role")
async def change_role(
    user_id: int,
    request: Request,
    current: Admin,
    session: SessionDep,
    role: Annotated[str, Form(max_length=20)],
) -> Response:
    organization_id = current.user.organization_id
    try:
        await users.set_role(session, organization_id=organization_id, user_id=user_id, role=role)
    except DomainError as exc:
        if exc.status == 404:
            raise
        found = await users.list_users(session, organization_id=organization_id)
        return render(
            request,
            "users.html",
            status=exc.status,
            users=found,
            roles=users.ROLES,
            error=exc.detail,
        )
    return see_other("/app/users")


@router.post("/users/{user_id}/remove")
async def remove_user(
    user_id: int, request: Request, current: Admin, session: SessionDep
) -> Response:
    organization_id = current.user.organization_id
    try:
        await users.remove_user(session, organization_id=organization_id, user_id=user_id)
    except DomainError as exc:
        if exc.status == 404:
            raise
        found = await users.list_users(session, organization_id=organization_id)
        return render(
            request,
            "users.html",
            status=exc.status,
            users=found,
            roles=users.ROLES,
            error=exc.detail,
        )
    return see_other("/app/users")


@router.get("/keys")
async def keys_page(request: Request, current: Admin, session: SessionDep) -> Response:
    found = await organizations.list_api_keys(session, organization_id=current.user.organization_id)
    return render(request, "keys.html", keys=found, scopes=SCOPES)


@router.post("/keys")
async def create_key(
    request: Request,
    current: Admin,
    session: SessionDep,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Issue an API key (``passerelle keys create``'s service) holding the scopes ticked
    (:data:`campaigns.scopes.SCOPES`; none ticked is the service's 422 page); the secret
    is shown once."""
    organization_id = current.user.organization_id
    issued = await organizations.issue_api_key(
        session,
        organization_id=organization_id,
        name=name.strip() or "dashboard",
        scopes=scopes or [],
    )
    found = await organizations.list_api_keys(session, organization_id=organization_id)
    return render(request, "keys.html", keys=found, secret=issued.secret, scopes=SCOPES)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: int, current: Admin, session: SessionDep) -> Response:
    await organizations.revoke_api_key(
        session, organization_id=current.user.organization_id, key_id=key_id
    )
    return see_other("/app/keys")


def script_json(value: Any) -> str:
    """JSON for a ``data-`` attribute (autoescaped by Jinja)."""
    return json.dumps(value, separators=(",", ":"))


_templates.globals["json"] = script_json
