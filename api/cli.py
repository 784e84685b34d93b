"""The ``passerelle`` command line. Commands call the same services as the HTTP API."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
import uvicorn

from campaigns import migrate
from campaigns.db import make_engine, make_sessionmaker, unit_of_work
from campaigns.services.organizations import create_organization
from campaigns.settings import get_settings

app = typer.Typer(help="Passerelle: QR/NFC campaigns, scans and attribution.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
org_app = typer.Typer(help="Organizations (tenants) and their API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(org_app, name="organizations")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    create: Annotated[
        bool, typer.Option(help="Create the database and PostGIS if missing.")
    ] = True,
) -> None:
    """Apply migrations (creating the database and the PostGIS extension if needed)."""
    url = get_settings().database_url
    if create:
        migrate.ensure_database(url)
    migrate.upgrade(url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Create and migrate the database first.")
    ] = True,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies trusted for X-Forwarded-For (comma-separated, or *).")
    ] = "127.0.0.1",
) -> None:
    """Serve the API and the short links with uvicorn."""
    settings = get_settings()
    if migrate_first:
        try:
            migrate.ensure_database(settings.database_url)
            migrate.upgrade(settings.database_url)
        except Exception as exc:
            typer.echo(f"warning: database not migrated ({exc}); starting anyway", err=True)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=4096,
        server_header=False,
        log_level="warning",
    )


@org_app.command("create")
def organizations_create(
    name: Annotated[str, typer.Argument(help="The organization's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Create an organization and its first API key; the key is printed once."""

    async def run() -> tuple[int, str]:
        engine = make_engine(get_settings().database_url, pool_size=1)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                organization, issued = await create_organization(session, name=name)
                return organization.id, issued.secret
        finally:
            await engine.dispose()

    org_id, secret = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps({"id": org_id, "name": name, "api_key": secret}))
    else:
        typer.echo(f"organization {org_id} created: {name}")
        typer.echo(f"API key (shown once, keep it secret): {secret}")


if __name__ == "__main__":
    app()
