"""The ``passerelle`` command line. Commands call the same services as the HTTP API."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import psycopg
import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from uvicorn.supervisors import Multiprocess

from api.server import GuardedHttpToolsProtocol
from campaigns import migrate
from campaigns.db import make_engine, make_sessionmaker, unit_of_work
from campaigns.errors import DomainError
from campaigns.mail import MailLanguage, MailNotSent
from campaigns.scanning.links import largest_qr_url
from campaigns.schemas import TagBulkCreate
from campaigns.services.locations import ImportFormat, ImportSummary, import_locations
from campaigns.services.organizations import (
    create_organization,
    issue_api_key,
    list_api_keys,
    revoke_api_key,
)
from campaigns.services.tags import BulkTags, create_tags_bulk
from campaigns.settings import Settings, get_settings

app = typer.Typer(help="Passerelle: QR/NFC campaigns, scans and attribution.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an organization.", no_args_is_help=True)
locations_app = typer.Typer(help="Locations (stores, venues).", no_args_is_help=True)
tags_app = typer.Typer(help="Tags (QR codes, NFC stickers).", no_args_is_help=True)
users_app = typer.Typer(help="People who sign into the web dashboard (/app).", no_args_is_help=True)
rollups_app = typer.Typer(
    help="Report rollups (figures per campaign and hour).", no_args_is_help=True
)
secrets_app = typer.Typer(help="Secrets sealed at rest.", no_args_is_help=True)
credits_app = typer.Typer(
    help="Stored attribution credits (default parameters).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(locations_app, name="locations")
app.add_typer(tags_app, name="tags")
app.add_typer(org_app, name="organizations")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(rollups_app, name="rollups")
app.add_typer(secrets_app, name="secrets")
app.add_typer(credits_app, name="credits")

T = TypeVar("T")

#: Exit status when the settings are invalid (a message names the variable, never its value).
EXIT_BAD_SETTINGS = 2
#: Exit status when ``serve`` cannot listen on the address asked for.
EXIT_CANNOT_LISTEN = 1
#: Exit status when the app fails to start (uvicorn's own code for a startup failure).
EXIT_STARTUP_FAILED = 3


def _settings() -> Settings:
    """The settings, or exit :data:`EXIT_BAD_SETTINGS` with one line per problem on
    stderr. pydantic's own message would echo the input values, secrets included, so it
    is rebuilt from the errors without their ``input``."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                where = "PASSERELLE_" + str(error["loc"][0]).upper()
                message = message if message.startswith(where) else f"{where}: {message}"
            problems.append(message)
        for problem in problems:
            typer.echo(f"error: invalid settings: {problem}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` and listening. Raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restart bind while old connections sit in TIME_WAIT; on Linux it never
        # lets two servers listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    create: Annotated[
        bool, typer.Option(help="Create the database and PostGIS if missing.")
    ] = True,
) -> None:
    """Apply migrations (creating the database and the PostGIS extension if needed)."""
    url = _settings().database_url
    if create:
        migrate.ensure_database(url)
    migrate.upgrade(url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (1 to 65535).")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Create and migrate the database first.")
    ] = True,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies trusted for X-Forwarded-For: CIDR ranges, comma-separated "
            "(default: PASSERELLE_FORWARDED_ALLOW_IPS, loopback only)."
        ),
    ] = None,
) -> None:
    """Serve the API and the short links with uvicorn.

    Binds the port first: the line saying where it listens is printed once connections
    are accepted (queued until the app has started); a port in use is one line on stderr
    and exit status 1, invalid settings exit 2, an app that fails to start exits 3.

    ``--forwarded-allow-ips`` is written to ``PASSERELLE_FORWARDED_ALLOW_IPS`` for the
    app (and its worker processes): the app reads proxy headers itself
    (:class:`api.middleware.ForwardedFor`), so uvicorn's own ``proxy_headers`` is off
    and one list of ranges decides everywhere."""
    if forwarded_allow_ips is not None:
        os.environ["PASSERELLE_FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
        get_settings.cache_clear()
    settings = _settings()
    if migrate_first:
        try:
            migrate.ensure_database(settings.database_url)
            migrate.upgrade(settings.database_url)
        except Exception as exc:
            typer.echo(f"warning: database not migrated ({exc}); starting anyway", err=True)
    try:
        sock = _listen(host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = (
            "; stop the other server or pick another --port"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        typer.echo(f"error: cannot listen on {host}:{port}: {reason}{hint}", err=True)
        raise typer.Exit(EXIT_CANNOT_LISTEN) from None
    config = uvicorn.Config(
        "api.app:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # X-Forwarded-For is read by the app (api.middleware.ForwardedFor), with
        # PASSERELLE_FORWARDED_ALLOW_IPS: uvicorn must not rewrite the peer first.
        proxy_headers=False,
        timeout_keep_alive=5,
        http=GuardedHttpToolsProtocol,
        timeout_graceful_shutdown=10,
        limit_concurrency=4096,
        server_header=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    typer.echo(
        f"Passerelle serving on http://{host}:{port} ({workers} worker(s)); "
        f"short links as {settings.short_link_origin}/s/CODE; API docs at /docs"
    )
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if workers == 1 and not server.started:
        raise typer.Exit(EXIT_STARTUP_FAILED)


def _in_session(
    work: Callable[[AsyncSession], Awaitable[T]], *, audit: tuple[int, str] | None = None
) -> T:
    """Run ``work`` in one committed unit of work; domain errors exit with status 1, an
    unreachable database with status 2 (``error: database unavailable (...)``).
    ``audit`` (organization id, action) stores the writes in the audit trail, by
    ``cli``, in the same transaction."""
    settings = _settings()

    async def run() -> T:
        from campaigns.services.audit import Actor, record_changes

        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                result = await work(session)
                if audit is not None:
                    actor = Actor(organization_id=audit[0], type="cli")
                    await record_changes(session, actor=actor, action=audit[1])
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        for problem in exc.errors or []:
            where = f"row {problem.get('row')}" if "row" in problem else problem.get("loc")
            field = f" {problem['field']}" if problem.get("field") else ""
            typer.echo(
                f"  {where}{field}: {problem.get('code')}: {problem.get('detail')}", err=True
            )
        raise typer.Exit(1) from exc
    except (OSError, psycopg.Error, SQLAlchemyError) as exc:
        # libpq's messages span lines ("Is the server running...?"): one line on stderr.
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        typer.echo(
            f"error: database unavailable ({reason}); check PASSERELLE_DATABASE_URL and "
            "run `passerelle db upgrade`",
            err=True,
        )
        raise typer.Exit(2) from exc


@org_app.command("create")
def organizations_create(
    name: Annotated[str, typer.Argument(help="The organization's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Create an organization and its first API key; the key is printed once."""

    async def work(session: AsyncSession) -> tuple[int, str]:
        organization, issued = await create_organization(session, name=name)
        return organization.id, issued.secret

    org_id, secret = _in_session(work)
    if as_json:
        typer.echo(json.dumps({"id": org_id, "name": name, "api_key": secret}))
    else:
        typer.echo(f"organization {org_id} created: {name}")
        typer.echo(f"API key (shown once, keep it secret): {secret}")


@keys_app.command("create")
def keys_create(
    organization_id: Annotated[int, typer.Argument(help="The organization's id.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "api",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="A scope the key holds, repeatable: campaigns:read, campaigns:write, "
            "conversions:write, reports:read, admin (implies all). Default: admin."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Issue another API key for an organization (rotation: create, deploy, revoke old).
    Without ``--scope`` the key is an ``admin`` key, as every key was before scopes."""
    scopes = scope or ["admin"]

    async def work(session: AsyncSession) -> tuple[int, str]:
        issued = await issue_api_key(
            session, organization_id=organization_id, name=name, scopes=scopes
        )
        return issued.api_key.id, issued.secret

    key_id, secret = _in_session(work, audit=(organization_id, "keys_create"))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": key_id,
                    "organization_id": organization_id,
                    "scopes": sorted(set(scopes)),
                    "api_key": secret,
                }
            )
        )
    else:
        typer.echo(f"API key {key_id} (shown once, keep it secret): {secret}")


@keys_app.command("list")
def keys_list(
    organization_id: Annotated[int, typer.Argument(help="The organization's id.")],
) -> None:
    """List an organization's keys: id, prefix, name, scopes, created, last used, revoked."""

    async def work(session: AsyncSession) -> list[tuple[object, ...]]:
        keys = await list_api_keys(session, organization_id=organization_id)
        return [
            (k.id, k.prefix, k.name, ",".join(k.scopes), k.created_at, k.last_used_at, k.revoked_at)
            for k in keys
        ]

    for row in _in_session(work):
        typer.echo("\t".join("-" if value is None else str(value) for value in row))


@keys_app.command("revoke")
def keys_revoke(
    organization_id: Annotated[int, typer.Argument(help="The organization's id.")],
    key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).")],
) -> None:
    """Revoke a key: requests with it get 401 ``invalid_api_key`` from then on."""

    async def work(session: AsyncSession) -> None:
        await revoke_api_key(session, organization_id=organization_id, key_id=key_id)

    _in_session(work, audit=(organization_id, "keys_revoke"))
    typer.echo(f"API key {key_id} revoked")


@locations_app.command("import")
def locations_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A .csv, .geojson or .json file.")
    ],
    organization: Annotated[int, typer.Option(help="The organization's id.")],
) -> None:
    """Create or update (on external_id) locations from a CSV or a GeoJSON
    FeatureCollection, as ``POST /v1/locations/import`` does: all rows or none."""
    from rich.progress import Progress

    suffix = file.suffix.lower()
    if suffix not in (".csv", ".geojson", ".json"):
        raise typer.BadParameter("the file must end in .csv, .geojson or .json")
    fmt: ImportFormat = "csv" if suffix == ".csv" else "geojson"
    content = file.read_bytes()

    async def work(session: AsyncSession) -> ImportSummary:
        with Progress(transient=True) as bar:
            task = bar.add_task(f"importing {file.name}", total=None)
            return await import_locations(
                session,
                organization_id=organization,
                content=content,
                fmt=fmt,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    summary = _in_session(work, audit=(organization, "locations_import"))
    typer.echo(f"{summary.created} location(s) created, {summary.updated} updated")


@rollups_app.command("rebuild")
def rollups_rebuild(
    campaign: Annotated[
        int | None, typer.Option(help="Only this campaign's rollups (default: all).")
    ] = None,
) -> None:
    """Recompute the report rollups from the raw scans and conversions, after a bulk load
    (rows written with old times are out of the rollup worker's sight). Waits for a
    running rollup pass; safe while the service runs."""
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncEngine

    from campaigns.services.rollups import rebuild

    margin = dt.timedelta(seconds=_settings().rollup_margin_s)

    async def work(session: AsyncSession) -> int:
        engine = session.bind
        assert isinstance(engine, AsyncEngine)
        return await rebuild(engine, campaign_id=campaign, margin=margin)

    days = _in_session(work)
    scope = "every campaign" if campaign is None else f"campaign {campaign}"
    typer.echo(f"rollups rebuilt for {scope}: {days} campaign-day(s)")


@credits_app.command("refresh")
def credits_refresh() -> None:
    """Store the attribution credits of every conversion without them: the backfill after
    the migration that added them, and stale or newly settled conversions (the service's
    refresh worker does the same every ``PASSERELLE_CREDITS_REFRESH_INTERVAL_S``). Safe
    while the service runs; reports credit the others live meanwhile. Prints its progress
    on stderr, then how many conversions were looked at and how many are still credited
    live (clicked within the settle margin, or left to a refresh running elsewhere)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncEngine

    from campaigns.services.credits import SETTLE_MARGIN, refresh

    async def work(session: AsyncSession) -> tuple[int, int]:
        engine = session.bind
        assert isinstance(engine, AsyncEngine)
        done = await refresh(
            engine, progress=lambda n: typer.echo(f"{n} conversion(s) looked at", err=True)
        )
        left = await session.scalar(
            text("SELECT count(*) FROM conversions WHERE credits_n IS NULL")
        )
        return done, int(left or 0)

    done, left = _in_session(work)
    typer.echo(
        f"stored credits refreshed: {done} conversion(s) looked at; {left} still credited "
        f"live (clicked less than {SETTLE_MARGIN.total_seconds() / 60:g} minutes ago, "
        "or being refreshed by another process)"
    )


@tags_app.command("generate")
def tags_generate(
    campaign: Annotated[int, typer.Option(help="The campaign's id.")],
    per_location: Annotated[int, typer.Option(help="Tags per location (1 to 100).")],
    organization: Annotated[int, typer.Option(help="The organization's id.")],
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Directory for the artwork and manifest.csv.")
    ],
    labels: Annotated[
        str | None, typer.Option(help="Comma-separated labels (as many as --per-location).")
    ] = None,
    kind: Annotated[str, typer.Option(help="qr or nfc.")] = "qr",
    locations: Annotated[str, typer.Option(help="all, or comma-separated location ids.")] = "all",
    fmt: Annotated[str, typer.Option("--format", help="Artwork format: svg, png or pdf.")] = "png",
) -> None:
    """Create tags for many locations at once, as ``POST /v1/campaigns/{id}/tags/bulk``
    does (idempotent on campaign, location and label), then write each QR tag's artwork
    (``{store}_{label}_{code}.{ext}``, as in ``print.zip``) and ``manifest.csv`` to
    ``--out``."""
    from rich.progress import Progress

    # Rendering libraries load only for this command.
    from campaigns.payloads import artwork
    from campaigns.payloads.exports import MANIFEST_NAME, write_print_files
    from campaigns.payloads.rendering import RenderPool
    from campaigns.services.printing import PrintItem, load_print_items

    if fmt not in ("svg", "png", "pdf"):
        raise typer.BadParameter("svg, png or pdf", param_hint="--format")
    try:
        request = TagBulkCreate.model_validate(
            {
                "kind": kind,
                "per_location": per_location,
                "labels": None if labels is None else labels.split(","),
                "location_ids": "all"
                if locations.strip() == "all"
                else [int(i) for i in locations.split(",")],
            }
        )
    except (ValidationError, ValueError) as exc:
        problems = (
            [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            if isinstance(exc, ValidationError)
            else ["--locations: all, or comma-separated location ids"]
        )
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None
    origin = _settings().short_link_origin
    try:
        style = artwork.check_style(largest_qr_url(origin), artwork.Style(fmt=fmt))  # type: ignore[arg-type]
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None

    async def work(session: AsyncSession) -> tuple[BulkTags, list[PrintItem]]:
        with Progress(transient=True) as bar:
            task = bar.add_task("creating tags", total=None)
            result = await create_tags_bulk(
                session,
                organization_id=organization,
                campaign_id=campaign,
                kind=request.kind,
                location_ids=request.location_ids,
                per_location=request.per_location,
                labels=request.labels,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        items = await load_print_items(
            session,
            organization_id=organization,
            campaign_id=campaign,
            tag_ids=[tag.id for tag in result.tags],
        )
        return result, items

    result, items = _in_session(work, audit=(organization, "tags_create_bulk"))

    async def render() -> int:
        pool = RenderPool(cache_bytes=0)
        try:
            with Progress() as bar:
                task = bar.add_task(f"writing {out}", total=len(items))
                return await write_print_files(
                    pool,
                    owner=organization,
                    items=items,
                    origin=origin,
                    style=style,
                    logo=None,
                    directory=out,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        finally:
            pool.shutdown()

    written = asyncio.run(render())
    existing = len(result.tags) - result.created
    typer.echo(
        f"{result.created} tag(s) created, {existing} already existed; "
        f"{written} artwork file(s) and {MANIFEST_NAME} in {out}"
    )


RoleOption = Annotated[
    str, typer.Option("--role", help="admin (users and keys too), editor or viewer (reads only).")
]
LanguageOption = Annotated[
    str,
    typer.Option(
        "--language", help="Language of the e-mail when PASSERELLE_SMTP_URL is set: en or fr."
    ),
]
#: Exit status when a sign-in link could not be e-mailed (nothing was changed).
EXIT_MAIL_NOT_SENT = 4


def _language(value: str) -> MailLanguage:
    if value not in ("en", "fr"):
        typer.echo("error: --language must be en or fr", err=True)
        raise typer.Exit(1)
    return value  # type: ignore[return-value]


def _link_out(settings: Settings, email: str, delivered: str | None) -> None:
    """Say where the link went: e-mailed (the link itself is never printed then), or the
    link on stdout."""
    hours = settings.dashboard_link_valid_h
    if delivered is None:
        typer.echo(f"sign-in link (single use, valid {hours} h) e-mailed to {email}")
    else:
        typer.echo(f"sign-in link (single use, valid {hours} h): {delivered}")


def _mail_failed(exc: MailNotSent) -> typer.Exit:
    typer.echo(
        f"error: the sign-in link was not e-mailed ({exc.reason}); nothing was changed, "
        "run the command again once the SMTP server (PASSERELLE_SMTP_URL) works",
        err=True,
    )
    return typer.Exit(EXIT_MAIL_NOT_SENT)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The person's e-mail (unique across the service).")],
    organization_id: Annotated[int, typer.Option("--organization", help="The organization's id.")],
    role: RoleOption = "editor",
    language: LanguageOption = "en",
) -> None:
    """Create a dashboard user and give them a one-time sign-in link (24 h, single use),
    whose page asks them to choose a password: printed, or e-mailed when
    PASSERELLE_SMTP_URL is set (then the user exists only if the e-mail was accepted)."""
    from campaigns.services.organizations import get_organization
    from campaigns.services.users import create_user, mail_or_url

    settings = _settings()
    chosen = _language(language)

    async def work(session: AsyncSession) -> str | None:
        organization = await get_organization(session, organization_id=organization_id)
        link = await create_user(
            session,
            organization_id=organization_id,
            email=email,
            role=role,
            valid_hours=settings.dashboard_link_valid_h,
        )
        # Sent before the commit: if the server refuses, the user is rolled back.
        return await mail_or_url(
            settings, link, kind="invite", language=chosen, organization=organization.name
        )

    try:
        delivered = _in_session(work, audit=(organization_id, "users_create"))
    except MailNotSent as exc:
        raise _mail_failed(exc) from None
    _link_out(settings, email.strip().lower(), delivered)


@users_app.command("reset")
def users_reset(
    email: Annotated[str, typer.Argument(help="The user's e-mail.")],
    language: LanguageOption = "en",
) -> None:
    """Give a dashboard user a fresh sign-in link (forgotten password): printed, or
    e-mailed when PASSERELLE_SMTP_URL is set. The previous link stops working (unless
    the e-mail could not be sent: then nothing changes)."""
    from campaigns.services.users import mail_or_url, reset_link

    settings = _settings()
    chosen = _language(language)

    async def work(session: AsyncSession) -> str | None:
        link = await reset_link(session, email=email, valid_hours=settings.dashboard_link_valid_h)
        return await mail_or_url(settings, link, kind="reset", language=chosen)

    try:
        delivered = _in_session(work)
    except MailNotSent as exc:
        raise _mail_failed(exc) from None
    _link_out(settings, email.strip().lower(), delivered)


def _with_engine(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` with an engine on the configured database; an unreachable database
    exits with status 2 like :func:`_in_session`."""
    settings = _settings()

    async def run() -> T:
        engine = make_engine(settings.database_url, pool_size=2)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (OSError, psycopg.Error, SQLAlchemyError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        typer.echo(f"error: database unavailable ({reason})", err=True)
        raise typer.Exit(2) from exc


@app.command("purge")
def purge(
    organization: Annotated[
        int | None, typer.Option("--organization", help="Only this organization.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per transaction.")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete scans past their organization's `scan_retention_days` and reduce consented
    GPS positions past `precise_location_retention_days` to the matched store and city,
    in small batches; prints rows removed per table and the rollup days sealed (their
    figures recomputed, then kept, before their scans went). Safe while the service
    runs."""
    from rich.console import Console
    from rich.progress import Progress

    from campaigns.services import retention

    async def work(engine: AsyncEngine) -> retention.PurgeReport:
        # The bar on stderr: stdout is the report only.
        with Progress(console=Console(stderr=True), transient=True, disable=as_json) as bar:
            task = bar.add_task("purging", total=None)

            def advance(table: str, rows: int) -> None:
                bar.update(task, advance=rows, description=f"purging {table}")

            report = await retention.purge(
                engine, organization_id=organization, batch_size=batch_size, progress=advance
            )
        await retention.audit_purge(engine, report)
        return report

    report = _with_engine(work).as_dict()
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
        return
    for table, rows in report["counts"].items():
        typer.echo(f"{table}: {rows} row(s) purged")
    typer.echo(
        f"{report['organizations']} organization(s); "
        f"{report['sealed_days']} rollup day(s) sealed; "
        f"{report['skipped_batches']} batch(es) skipped (locked, retried next run)"
    )


@secrets_app.command("reencrypt")
def secrets_reencrypt(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-seal every secret stored under a previous key (PASSERELLE_SECRET_KEY_PREVIOUS)
    under PASSERELLE_SECRET_KEY; idempotent. Afterwards the previous keys can be removed.
    Prints, per column, values checked, re-sealed and unreadable (open under no key)."""
    from rich.console import Console
    from rich.progress import Progress

    from campaigns.services import secrets

    keys = _settings().keyring

    async def work(engine: AsyncEngine) -> secrets.ReencryptReport:
        totals = await secrets.count_sealed(engine)
        with Progress(console=Console(stderr=True), disable=as_json) as bar:
            tasks = {name: bar.add_task(name, total=total) for name, total in totals.items()}
            return await secrets.reencrypt(
                engine, keys, progress=lambda name, rows: bar.update(tasks[name], advance=rows)
            )

    report = _with_engine(work).as_dict()
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
    else:
        for name, counts in report.items():
            typer.echo(
                f"{name}: {counts['checked']} checked, {counts['resealed']} re-sealed, "
                f"{counts['unreadable']} unreadable"
            )
    if any(counts["unreadable"] for counts in report.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
