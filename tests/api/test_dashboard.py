"""The dashboard's sign-in, sessions, CSRF, roles and headers over HTTP (in process).

Browser tests of the pages themselves are in ``tests/e2e/test_dashboard.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campaigns.db import unit_of_work
from campaigns.models import DashboardSession, DashboardUser, utcnow
from campaigns.services import sessions as session_service
from campaigns.services import users as user_service
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.artwork import decode_artwork
from tests.fixtures.cli import passerelle
from tests.fixtures.dashboard import PASSWORD, csrf_of, make_user, sign_in
from tests.fixtures.smtp import SmtpServer, free_port, smtp_server


@pytest.fixture
def fresh_limits(app: FastAPI) -> AsyncIterator[None]:
    """Sign-in budgets start full and are forgotten after the test (they live in the
    session-wide app)."""
    if hasattr(app.state, "sign_in_limiters"):
        del app.state.sign_in_limiters
    yield None
    if hasattr(app.state, "sign_in_limiters"):
        del app.state.sign_in_limiters


async def test_sign_in_cookie_is_httponly_lax_and_secure_on_https(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "Ann@Acme.example", "admin")
    response = await sign_in(client, "ann@acme.example")
    assert response.status_code == 303
    assert response.headers["location"] == "/app/campaigns"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("passerelle_session=")
    )
    token = cookie.split(";")[0].split("=", 1)[1]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert attributes == {"httponly", "path=/app", "samesite=lax", "secure"}
    async with engine.connect() as conn:
        stored = (
            await conn.execute(select(DashboardUser.email, DashboardUser.password_hash))
        ).one()
        hashes = (await conn.execute(select(DashboardSession.token_hash))).scalars().all()
    assert stored.email == "ann@acme.example"
    assert stored.password_hash.startswith("$argon2id$v=19$")
    assert hashes == [hashlib.sha256(token.encode()).digest()]  # never the token itself
    page = await client.get("/app/campaigns")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert re.fullmatch(
        r"default-src 'none'; script-src 'self' 'nonce-[\w-]{22}'; style-src 'self'; "
        r"img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
        r"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        csp,
    )
    assert "<script>" not in page.text  # every script is a file (with the nonce)


async def test_sign_in_is_rate_limited_per_account_with_a_clear_message(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "bob@acme.example", "editor")
    for _ in range(5):
        wrong = await sign_in(client, "bob@acme.example", "not the password")
        assert wrong.status_code == 401
        assert "Wrong e-mail or password." in wrong.text
    refused = await sign_in(client, "bob@acme.example")  # even the right password
    assert refused.status_code == 429
    seconds = int(refused.headers["retry-after"])
    assert 1 <= seconds <= 60
    assert f"Too many sign-in attempts. Try again in {seconds} seconds." in refused.text
    assert "passerelle_session" not in refused.headers.get("set-cookie", "")
    french = await client.post(
        "/app/sign-in",
        data={
            "email": "bob@acme.example",
            "password": PASSWORD,
            "csrf": csrf_of((await client.get("/app/sign-in")).text),
        },
        headers={"accept-language": "fr-FR,fr;q=0.9"},
    )
    assert french.status_code == 429
    assert "Trop de tentatives de connexion." in french.text


async def test_sign_in_is_rate_limited_per_address(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_limits: None,
) -> None:
    for n in range(20):
        assert (await sign_in(client, f"nobody{n}@acme.example", "x" * 12)).status_code == 401
    assert (await sign_in(client, "nobody-else@acme.example", "x" * 12)).status_code == 429


async def test_csrf_is_required_on_every_change(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "carol@acme.example", "editor")
    await sign_in(client, "carol@acme.example")
    form = {"name": "Forged", "destination_url": "https://shop.example.com/"}
    before = await table_snapshot(engine, "campaigns")
    for data in (form, {**form, "csrf": "wrong"}):
        refused = await client.post("/app/campaigns", data=data)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "text/html; charset=utf-8"
        assert "This form has expired." in refused.text
    assert await table_snapshot(engine, "campaigns") == before
    # The anonymous sign-in form has its own (double-submit) token.
    other = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with other:
        forged = await other.post(
            "/app/sign-in", data={"email": "carol@acme.example", "password": PASSWORD}
        )
    assert forged.status_code == 403
    accepted = await client.post(
        "/app/campaigns",
        data={**form, "csrf": csrf_of((await client.get("/app/campaigns/new")).text)},
    )
    assert accepted.status_code == 303


async def test_roles(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "viewer@acme.example", "viewer")
    await sign_in(client, "viewer@acme.example")
    csrf = csrf_of((await client.get("/app/account")).text)
    before = await table_snapshot(engine, "campaigns", "api_keys", "dashboard_users")
    for path, data in (
        ("/app/campaigns", {"name": "No", "destination_url": "https://shop.example.com/"}),
        ("/app/keys", {"name": "no"}),
        ("/app/users", {"email": "x@acme.example", "role": "admin"}),
    ):
        refused = await client.post(path, data={**data, "csrf": csrf})
        assert refused.status_code == 403, path
        assert "Your role does not allow this change." in refused.text
    assert await table_snapshot(engine, "campaigns", "api_keys", "dashboard_users") == before
    assert (await client.get("/app/campaigns")).status_code == 200

    client.cookies.clear()
    await make_user(sessionmaker, org, "editor@acme.example", "editor")
    await sign_in(client, "editor@acme.example")
    assert (await client.get("/app/campaigns/new")).status_code == 200
    assert (await client.get("/app/users")).status_code == 403
    assert (await client.get("/app/keys")).status_code == 403


async def test_another_organizations_resources_are_404_pages(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_limits: None,
) -> None:
    theirs = await make_campaign(client, other_org)
    tag = await make_tag(client, other_org, theirs["id"])
    await make_user(sessionmaker, org, "dan@acme.example", "admin")
    await sign_in(client, "dan@acme.example")
    for path in (
        f"/app/campaigns/{theirs['id']}",
        f"/app/campaigns/{theirs['id']}/tags",
        f"/app/campaigns/{theirs['id']}/series.json",
        f"/app/campaigns/{theirs['id']}/map.json",
        f"/app/campaigns/{theirs['id']}/events",
        f"/app/tags/{tag['id']}/qr",
        f"/app/campaigns/{theirs['id']}/print.zip",
        f"/app/campaigns/{theirs['id']}/sheets.pdf",
        "/app/no-such-page",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "text/html; charset=utf-8", path
    # /v1 keeps answering problem+json.
    api = await client.get(f"/v1/campaigns/{theirs['id']}", headers=org.headers)
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"
    assert api.json()["code"] == "campaign_not_found"


async def test_session_ends_after_inactivity(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "eve@acme.example", "viewer")
    await sign_in(client, "eve@acme.example")
    assert (await client.get("/app/campaigns")).status_code == 200
    async with engine.begin() as conn:
        await conn.execute(
            update(DashboardSession).values(last_seen_at=utcnow() - dt.timedelta(hours=8))
        )
    expired = await client.get("/app/campaigns")
    assert expired.status_code == 303
    assert expired.headers["location"] == "/app/sign-in?next=%2Fapp%2Fcampaigns&expired=true"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM dashboard_sessions"))).scalar() == 0


async def test_current_session_moves_last_seen_at_forward(
    client: httpx.AsyncClient, org: Org, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await make_user(sessionmaker, org, "fay@acme.example", "viewer")
    async with unit_of_work(sessionmaker) as session:
        user = await session.scalar(select(DashboardUser))
        assert user is not None
        opened = await session_service.open_session(session, user_id=user.id)
    later = utcnow() + dt.timedelta(hours=7)
    async with unit_of_work(sessionmaker) as session:
        found = await session_service.current_session(
            session, token=opened.token, idle_s=8 * 3600, now=later
        )
        assert found is not None and found.session.last_seen_at == later
    async with unit_of_work(sessionmaker) as session:
        assert (
            await session_service.current_session(
                session, token=opened.token, idle_s=8 * 3600, now=later + dt.timedelta(hours=7)
            )
            is not None
        )
        assert (
            await session_service.current_session(session, token="not-a-token", idle_s=8 * 3600)
            is None
        )


async def test_a_sign_in_link_works_once_and_expires(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    async with unit_of_work(sessionmaker) as session:
        link = await user_service.create_user(
            session, organization_id=org.id, email="gus@acme.example", role="viewer"
        )
    async with engine.connect() as conn:
        row = (await conn.execute(select(DashboardUser))).one()
    assert row.link_token_hash == hashlib.sha256(link.token.encode()).digest()
    assert row.link_expires_at == link.expires_at
    assert link.url("https://app.example.com") == (
        f"https://app.example.com/app/sign-in/{link.token}"
    )
    page = await client.get(f"/app/sign-in/{link.token}")
    assert page.status_code == 200
    short = await client.post(
        f"/app/sign-in/{link.token}", data={"password": "short", "csrf": csrf_of(page.text)}
    )
    assert short.status_code == 422
    done = await client.post(
        f"/app/sign-in/{link.token}", data={"password": PASSWORD, "csrf": csrf_of(page.text)}
    )
    assert done.status_code == 303
    again = await client.get(f"/app/sign-in/{link.token}")
    assert again.status_code == 404
    # An expired link is refused too.
    async with unit_of_work(sessionmaker) as session:
        fresh = await user_service.reset_link(session, email="gus@acme.example")
    async with engine.begin() as conn:
        await conn.execute(
            update(DashboardUser).values(link_expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    assert (await client.get(f"/app/sign-in/{fresh.token}")).status_code == 404


async def test_the_last_admin_stays(
    client: httpx.AsyncClient, org: Org, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    from campaigns.errors import Conflict

    await make_user(sessionmaker, org, "hal@acme.example", "admin")
    async with unit_of_work(sessionmaker) as session:
        user = await session.scalar(select(DashboardUser))
        assert user is not None
        with pytest.raises(Conflict) as caught:
            await user_service.set_role(
                session, organization_id=org.id, user_id=user.id, role="viewer"
            )
        assert caught.value.code == "last_admin"
        with pytest.raises(Conflict):
            await user_service.remove_user(session, organization_id=org.id, user_id=user.id)


async def test_users_commands_print_single_use_links(
    client: httpx.AsyncClient, org: Org, database_url: str, engine: AsyncEngine
) -> None:
    created = await passerelle(
        database_url,
        "users",
        "create",
        "Ida@Acme.example",
        "--organization",
        str(org.id),
        "--role",
        "admin",
        PASSERELLE_APP_URL="https://app.example.com",
    )
    assert created.returncode == 0, created.stderr
    match = re.fullmatch(
        r"sign-in link \(single use, valid 24 h\): https://app\.example\.com/app/sign-in/"
        r"([\w-]{43})\n",
        created.stdout,
    )
    assert match, created.stdout
    async with engine.connect() as conn:
        row = (await conn.execute(select(DashboardUser))).one()
    assert (row.email, row.role, row.organization_id) == ("ida@acme.example", "admin", org.id)
    assert row.link_token_hash == hashlib.sha256(match.group(1).encode()).digest()
    # Without PASSERELLE_APP_URL the link is on the base URL.
    reset = await passerelle(
        database_url,
        "users",
        "reset",
        "ida@acme.example",
        PASSERELLE_BASE_URL="https://go.example.com",
    )
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith(
        "sign-in link (single use, valid 24 h): https://go.example.com/app/sign-in/"
    )
    assert (await client.get(f"/app/sign-in/{match.group(1)}")).status_code == 404  # replaced
    before = await table_snapshot(engine, "dashboard_users")
    for args, message in (
        (("create", "ida@acme.example", "--organization", str(org.id)), "already has an account"),
        (
            ("create", "jo@acme.example", "--organization", str(org.id), "--role", "boss"),
            "role must be one of admin, editor, viewer",
        ),
        (("create", "not-an-email", "--organization", str(org.id)), "is not an e-mail address"),
        (("create", "jo@acme.example", "--organization", "999999"), "Organization 999999"),
        (("reset", "nobody@acme.example"), "No dashboard user"),
    ):
        failed = await passerelle(database_url, "users", *args)
        assert failed.returncode == 1, args
        assert message in failed.stderr, failed.stderr
    assert await table_snapshot(engine, "dashboard_users") == before


async def test_change_password_ends_the_other_sessions(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "kim@acme.example", "viewer")
    other = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with other:
        await sign_in(other, "kim@acme.example")
        await sign_in(client, "kim@acme.example")
        csrf = csrf_of((await client.get("/app/account")).text)
        wrong = await client.post(
            "/app/account/password",
            data={"csrf": csrf, "current_password": "nope", "new_password": "x" * 12},
        )
        assert wrong.status_code == 422
        assert "Wrong e-mail or password." in wrong.text
        changed = await client.post(
            "/app/account/password",
            data={"csrf": csrf, "current_password": PASSWORD, "new_password": "y" * 12},
        )
        assert changed.status_code == 303
        assert changed.headers["location"] == "/app/account?done=true"
        assert (await client.get("/app/campaigns")).status_code == 200  # this one stays
        assert (await other.get("/app/campaigns")).status_code == 303  # the other ended
    client.cookies.clear()
    assert (await sign_in(client, "kim@acme.example", "y" * 12)).status_code == 303


async def test_admin_invites_changes_roles_and_removes_users(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "lea@acme.example", "admin")
    await sign_in(client, "lea@acme.example")
    csrf = csrf_of((await client.get("/app/users")).text)
    invited = await client.post(
        "/app/users", data={"csrf": csrf, "email": "Max@Acme.example", "role": "viewer"}
    )
    assert invited.status_code == 200
    link = re.search(r'id="invite-url" class="secret">([^<]+)<', invited.text)
    assert link and link.group(1).startswith("https://go.example.com/app/sign-in/")
    taken = await client.post(
        "/app/users", data={"csrf": csrf, "email": "max@acme.example", "role": "viewer"}
    )
    assert taken.status_code == 422
    assert "max@acme.example already has an account" in taken.text
    async with engine.connect() as conn:
        ids = dict((await conn.execute(select(DashboardUser.email, DashboardUser.id))).all())
    promoted = await client.post(
        f"/app/users/{ids['max@acme.example']}/role", data={"csrf": csrf, "role": "editor"}
    )
    assert promoted.status_code == 303
    demoted = await client.post(
        f"/app/users/{ids['lea@acme.example']}/role", data={"csrf": csrf, "role": "viewer"}
    )
    assert demoted.status_code == 409
    assert "The organization needs at least one admin" in demoted.text
    removed = await client.post(f"/app/users/{ids['max@acme.example']}/remove", data={"csrf": csrf})
    assert removed.status_code == 303
    async with engine.connect() as conn:
        rows = (await conn.execute(select(DashboardUser.email, DashboardUser.role))).all()
    assert [tuple(r) for r in rows] == [("lea@acme.example", "admin")]


async def test_dashboard_writes_are_audited_as_their_user(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await make_user(sessionmaker, org, "editor@example.com", "editor")
    signed = await sign_in(client, "editor@example.com")
    assert signed.status_code == 303, signed.text
    form = await client.get("/app/campaigns/new")
    created = await client.post(
        "/app/campaigns",
        data={
            "csrf": csrf_of(form.text),
            "name": "Windows",
            "destination_url": "https://shop.example.com/w",
            "timezone": "Europe/Paris",
            "cost": "",
            "currency": "EUR",
        },
    )
    assert created.status_code == 303, created.text
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                text(
                    "SELECT actor_type, actor_label FROM audit_events"
                    " WHERE resource_type = 'campaigns'"
                )
            )
        ).all()
    assert [tuple(e) for e in events] == [("user", "editor@example.com")]


async def test_a_refused_campaign_form_comes_back_with_its_errors_and_stores_nothing(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await make_user(sessionmaker, org, "form@example.com", "editor")
    assert (await sign_in(client, "form@example.com")).status_code == 303
    before = await table_snapshot(engine, "campaigns")
    form = await client.get("/app/campaigns/new")
    posted = {
        "csrf": csrf_of(form.text),
        "name": "Bad",
        "destination_url": "javascript:alert(1)",
        "timezone": "Europe/Paris",
        "cost": "",
        "currency": "EUR",
    }
    refused = await client.post("/app/campaigns", data=posted)
    assert refused.status_code == 422
    assert 'value="javascript:alert(1)"' in refused.text  # what was posted, escaped
    assert "<script" not in refused.text.split("</head>")[1]
    assert await table_snapshot(engine, "campaigns") == before
    # A campaign that does not exist is its 404 page, not the form.
    missing = await client.post("/app/campaigns/999999/edit", data=posted)
    assert missing.status_code == 404


# --- E-mailed sign-in links (PASSERELLE_SMTP_URL) ---------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1."""
    with smtp_server() as server:
        yield server


@pytest.fixture
def mailing_app(app: FastAPI, smtp: SmtpServer) -> Iterator[FastAPI]:
    """The app with ``PASSERELLE_SMTP_URL`` pointing at :func:`smtp`, for one test."""
    before = app.state.settings
    app.state.settings = before.model_copy(
        update={"smtp_url": smtp.url, "smtp_from": "Passerelle <noreply@go.example.com>"}
    )
    yield app
    app.state.settings = before


async def choose_password(client: httpx.AsyncClient, link: str) -> httpx.Response:
    """Follow ``link`` (any origin: its path on the test app) and choose :data:`PASSWORD`."""
    path = urlsplit(link).path
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return await client.post(path, data={"password": PASSWORD, "csrf": csrf_of(page.text)})


async def test_users_commands_e_mail_the_link_when_smtp_is_set(
    client: httpx.AsyncClient,
    org: Org,
    database_url: str,
    engine: AsyncEngine,
    smtp: SmtpServer,
    fresh_limits: None,
) -> None:
    in_org = ("--organization", str(org.id))
    mail_env = {
        "PASSERELLE_SMTP_URL": smtp.url,
        "PASSERELLE_SMTP_FROM": "Passerelle <noreply@acme.example>",
        "PASSERELLE_APP_URL": "https://app.example.com",
    }
    created = await passerelle(
        database_url, "users", "create", "Ida@Acme.example", *in_org, **mail_env
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout == (
        "sign-in link (single use, valid 24 h) e-mailed to ida@acme.example\n"
    )  # the link itself is never printed
    [invitation] = smtp.received
    assert invitation.rcpt_tos == ["ida@acme.example"]
    assert invitation.message["From"] == "Passerelle <noreply@acme.example>"
    assert invitation.message["Subject"] == "Your invitation to the Passerelle dashboard"
    assert "the Passerelle dashboard of Acme" in invitation.part("plain")
    link = invitation.link()
    assert link.startswith("https://app.example.com/app/sign-in/")
    assert link.rsplit("/", 1)[1] not in created.stdout + created.stderr
    # The e-mailed link works: a password is chosen, then the password signs in.
    assert (await choose_password(client, link)).status_code == 303
    client.cookies.clear()
    assert (await sign_in(client, "ida@acme.example")).status_code == 303

    # A reset in French.
    reset = await passerelle(
        database_url, "users", "reset", "ida@acme.example", "--language", "fr", **mail_env
    )
    assert reset.returncode == 0, reset.stderr
    assert smtp.received[1].message["Subject"] == "Votre nouveau lien de connexion Passerelle"
    fresh = smtp.received[1].link()

    # The SMTP server refuses: exit 4, a clear message, nothing changed (no user; the
    # pending link still works).
    smtp.sink.refuse = "554 5.7.1 Relay denied"
    before = await table_snapshot(engine, "dashboard_users")
    failed = await passerelle(
        database_url, "users", "create", "jo@acme.example", *in_org, **mail_env
    )
    assert failed.returncode == 4
    assert failed.stdout == ""
    assert failed.stderr.startswith(
        "error: the sign-in link was not e-mailed (the SMTP server "
        f"127.0.0.1:{smtp.port} answered 554 5.7.1 Relay denied); nothing was changed"
    ), failed.stderr
    again = await passerelle(database_url, "users", "reset", "ida@acme.example", **mail_env)
    assert again.returncode == 4, again.stderr
    assert await table_snapshot(engine, "dashboard_users") == before
    assert len(smtp.received) == 2
    client.cookies.clear()
    assert (await choose_password(client, fresh)).status_code == 303
    # An unreachable server is the same clear failure.
    unreachable = {**mail_env, "PASSERELLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    gone = await passerelle(
        database_url, "users", "create", "jo@acme.example", *in_org, **unreachable
    )
    assert gone.returncode == 4
    assert "cannot send through the SMTP server 127.0.0.1" in gone.stderr
    async with engine.connect() as conn:
        emails = (await conn.execute(select(DashboardUser.email))).scalars().all()
    assert emails == ["ida@acme.example"]


async def test_a_dashboard_invitation_is_e_mailed_when_smtp_is_set(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    mailing_app: FastAPI,
    smtp: SmtpServer,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "lea@acme.example", "admin")
    await sign_in(client, "lea@acme.example")
    csrf = csrf_of((await client.get("/app/users")).text)
    invited = await client.post(
        "/app/users",
        data={"csrf": csrf, "email": "Max@Acme.example", "role": "viewer"},
        headers={"accept-language": "fr-FR,fr;q=0.9"},
    )
    assert invited.status_code == 200, invited.text
    assert 'id="invite-url"' not in invited.text  # mailed, never shown
    assert (
        "Un lien de connexion a été envoyé à max@acme.example (usage unique, valable 24 h)."
    ) in invited.text
    [mail] = smtp.received
    assert mail.rcpt_tos == ["max@acme.example"]
    # In the inviter's language, naming the inviter.
    assert mail.message["Subject"] == "Votre invitation au tableau de bord Passerelle"
    assert "lea@acme.example vous invite au tableau de bord Passerelle" in mail.part("plain")
    link = mail.link()
    assert link.startswith("https://go.example.com/app/sign-in/")
    assert link not in invited.text

    # A new link for Max (a lost invitation): the first stops working, the new one works.
    async with engine.connect() as conn:
        max_id = (
            await conn.execute(
                select(DashboardUser.id).where(DashboardUser.email == "max@acme.example")
            )
        ).scalar_one()
    resent = await client.post(f"/app/users/{max_id}/link", data={"csrf": csrf})
    assert resent.status_code == 200
    assert "A sign-in link was e-mailed to max@acme.example" in resent.text
    second = smtp.received[1]
    assert second.message["Subject"] == "Your new Passerelle sign-in link"
    assert (await client.get(urlsplit(link).path)).status_code == 404

    # The SMTP server fails: a 502 page saying so, nothing stored, the pending link works.
    smtp.sink.refuse = "451 4.3.0 Try again later"
    before = await table_snapshot(engine, "dashboard_users")
    refused = await client.post(
        "/app/users", data={"csrf": csrf, "email": "zoe@acme.example", "role": "editor"}
    )
    assert refused.status_code == 502
    assert "The sign-in link could not be e-mailed to zoe@acme.example" in refused.text
    assert "451 4.3.0 Try again later" in refused.text
    failed = await client.post(f"/app/users/{max_id}/link", data={"csrf": csrf})
    assert failed.status_code == 502
    assert await table_snapshot(engine, "dashboard_users") == before
    other = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with other:
        assert (await choose_password(other, second.link())).status_code == 303
    # Another organization's user is a 404 page.
    assert (await client.post("/app/users/999999/link", data={"csrf": csrf})).status_code == 404


async def test_without_smtp_a_new_link_is_shown_once(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    fresh_limits: None,
) -> None:
    await make_user(sessionmaker, org, "lea@acme.example", "admin")
    await make_user(sessionmaker, org, "kim@acme.example", "viewer")
    await sign_in(client, "lea@acme.example")
    csrf = csrf_of((await client.get("/app/users")).text)
    async with engine.connect() as conn:
        kim = (
            await conn.execute(
                select(DashboardUser.id).where(DashboardUser.email == "kim@acme.example")
            )
        ).scalar_one()
    shown = await client.post(f"/app/users/{kim}/link", data={"csrf": csrf})
    assert shown.status_code == 200
    link = re.search(r'id="invite-url" class="secret">([^<]+)<', shown.text)
    assert link and link.group(1).startswith("https://go.example.com/app/sign-in/")
    assert (await client.get("/app/users")).text.count("/app/sign-in/") == 0


async def test_print_downloads_need_a_session_and_any_role(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_limits: None,
) -> None:
    """The tags page's ZIP and label sheets: the ``/v1`` routes' functions behind the
    session (a viewer may download; without a session, the sign-in page)."""
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"])
    zip_path = f"/app/campaigns/{campaign['id']}/print.zip?format=svg"
    sheets_path = f"/app/campaigns/{campaign['id']}/sheets.pdf?paper=A4&layout=3x8"
    for path in (zip_path, sheets_path):
        anonymous = await client.get(path)
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/app/sign-in?next=")
    await make_user(sessionmaker, org, "vic@acme.example", "viewer")
    await sign_in(client, "vic@acme.example")
    archive = await client.get(zip_path)
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    assert archive.headers["content-disposition"] == (
        f'attachment; filename="campaign-{campaign["id"]}-svg.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
        assert sorted(unpacked.namelist()) == [
            "manifest.csv",
            f"nostore_window-1_{tag['code']}.svg",
        ]
        svg = unpacked.read(f"nostore_window-1_{tag['code']}.svg")
    assert decode_artwork("svg", svg).text == tag["qr_content"]
    sheets = await client.get(sheets_path)
    assert sheets.status_code == 200
    assert sheets.headers["content-type"] == "application/pdf"
    assert sheets.content.startswith(b"%PDF-")
    assert decode_artwork("pdf", sheets.content).text == tag["qr_content"]
    refused = await client.get(f"/app/campaigns/{campaign['id']}/sheets.pdf?layout=99")
    assert refused.status_code == 422
    assert "layout" in refused.text
