"""Command-line tools: ``flask --app app <group> <command>``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from security.audit.services import AuditLog, verify_audit_log
from security.clients.services import ClientService
from security.db import session_scope
from security.errors import FoxguardError
from security.migrate import current_revisions, downgrade, head_revisions, upgrade
from security.permissions import ALL_SCOPES
from security.runtime import runtime

CLI_ACTOR = "cli"


@contextmanager
def cli_session() -> Iterator[Session]:
    """A session committed when the command succeeds, rolled back otherwise."""
    with session_scope(runtime().session_factory) as session:
        yield session


def fail(error: FoxguardError) -> None:
    raise click.ClickException(error.detail)


db_cli = AppGroup("db", help="Database schema migrations.")


@db_cli.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    upgrade(runtime().engine, revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (e.g. 'base')."""
    downgrade(runtime().engine, revision)
    click.echo(f"database at {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one."""
    with runtime().engine.connect() as connection:
        click.echo(f"database: {', '.join(sorted(current_revisions(connection))) or '(empty)'}")
    click.echo(f"head:     {', '.join(sorted(head_revisions()))}")


clients_cli = AppGroup("clients", help="Service clients and their API keys.")


def _client_service(session: Session) -> ClientService:
    rt = runtime()
    return ClientService(session, clock=rt.clock, entropy=rt.entropy, audit=AuditLog(session, clock=rt.clock))


@clients_cli.command("create")
@click.argument("name")
@click.option("--scopes", default=",".join(ALL_SCOPES), show_default=True,
              help="Comma-separated scopes: " + ", ".join(ALL_SCOPES))
def clients_create(name: str, scopes: str) -> None:
    """Create client NAME and print its API key (shown once, stored only hashed)."""
    try:
        with cli_session() as session:
            issued = _client_service(session).create(
                name, [s.strip() for s in scopes.split(",") if s.strip()], actor=CLI_ACTOR
            )
            scope_list = ", ".join(issued.client.scopes)
    except FoxguardError as error:
        fail(error)
        return
    click.echo(f"client {name} created with scopes: {scope_list}")
    click.echo("API key (store it now; it cannot be shown again):")
    click.echo(issued.api_key)


@clients_cli.command("revoke")
@click.argument("name")
def clients_revoke(name: str) -> None:
    """Revoke client NAME's key at once."""
    try:
        with cli_session() as session:
            _client_service(session).revoke(name, actor=CLI_ACTOR)
    except FoxguardError as error:
        fail(error)
    click.echo(f"client {name} revoked")


@clients_cli.command("list")
def clients_list() -> None:
    """List clients, their scopes and whether they are revoked."""
    with cli_session() as session:
        for client in _client_service(session).list():
            state = f"revoked {client.revoked_at:%Y-%m-%d %H:%M}" if client.revoked_at else "active"
            click.echo(f"{client.name}\t{client.key_prefix}\t{state}\t{','.join(client.scopes)}")


audit_cli = AppGroup("audit", help="The hash-chained audit log.")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; report the first broken link (exit status 1 if any)."""
    with cli_session() as session:
        checked, broken = verify_audit_log(session)
    if broken is not None:
        raise click.ClickException(f"audit chain broken at entry {broken.seq}: {broken.problem} "
                                   f"({checked} entries verified before it)")
    click.echo(f"audit chain intact: {checked} entries verified")


def init_app(app: Flask) -> None:
    for group in (db_cli, clients_cli, audit_cli):
        app.cli.add_command(group)
