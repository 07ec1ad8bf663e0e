"""``flask --app app operators ...``: create, list, disable, reset TOTP with four-eyes, purge dead sessions."""

from __future__ import annotations

import io
import sys

import click
import segno
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.cli import CLI_ACTOR, cli_session, fail
from security.credentials.totp import QR_ERROR_CORRECTION, Enrollment
from security.errors import FoxguardError
from security.operators.policy import Role
from security.operators.services import OperatorService
from security.operators.settings import OperatorSettings
from security.runtime import runtime

operators_cli = AppGroup("operators", help="Console operators: accounts, roles and second factors.")


def _service(session: Session) -> OperatorService:
    rt = runtime()
    return OperatorService(
        session,
        clock=rt.clock,
        entropy=rt.entropy,
        audit=AuditLog(session, clock=rt.clock),
        hasher=rt.password_hasher,
        policy=rt.password_policy,
        secret_box=rt.secret_box,
        settings=OperatorSettings.from_settings(rt.settings),
    )


def _print_enrollment(name: str, enrollment: Enrollment) -> None:
    qr = io.StringIO()
    # compact: two modules per character cell, so the code fits an 80-column terminal.
    segno.make(enrollment.otpauth_uri, error=QR_ERROR_CORRECTION, micro=False).terminal(out=qr, compact=True)
    click.echo(f"Scan this with {name}'s authenticator app (shown once):")
    click.echo(qr.getvalue())
    click.echo(f"otpauth URI: {enrollment.otpauth_uri}")
    click.echo(f"manual entry secret: {enrollment.secret}")


@operators_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts).")
def operators_create(name: str, role: str, password_stdin: bool) -> None:
    """Create operator NAME with a password (prompted twice) and enroll TOTP."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with cli_session() as session:
            created = _service(session).create(name, role, password, actor=CLI_ACTOR)
    except FoxguardError as error:
        fail(error)
        return
    click.echo(f"operator {name} created with role {role}")
    _print_enrollment(name, created.enrollment)


@operators_cli.command("disable")
@click.argument("name")
def operators_disable(name: str) -> None:
    """Disable operator NAME and end their sessions and tokens."""
    try:
        with cli_session() as session:
            _service(session).disable(name, actor=CLI_ACTOR)
    except FoxguardError as error:
        fail(error)
    click.echo(f"operator {name} disabled")


@operators_cli.command("reset-totp")
@click.argument("name")
@click.option("--by", "requester", required=True, help="The administrator asking for the reset.")
@click.option("--by-code", "requester_code", prompt="TOTP code of the requesting admin", hide_input=True)
@click.option("--approved-by", "approver", required=True, help="A second, different administrator.")
@click.option("--approver-code", "approver_code", prompt="TOTP code of the approving admin", hide_input=True)
def operators_reset_totp(name: str, requester: str, requester_code: str, approver: str, approver_code: str) -> None:
    """Give NAME a new TOTP secret. Four-eyes: two different admins (neither of them NAME) confirm by code."""
    try:
        with cli_session() as session:
            outcome = _service(session).reset_totp(
                name, requester=requester, requester_code=requester_code,
                approver=approver, approver_code=approver_code, actor=CLI_ACTOR,
            )
    except FoxguardError as error:
        fail(error)
        return
    # A refusal is committed first (failed codes count toward the admins' lockout), then reported.
    if outcome.enrollment is None:
        raise click.ClickException(f"TOTP reset refused: {outcome.refused}")
    click.echo(f"TOTP of {name} reset; their sessions were ended")
    _print_enrollment(name, outcome.enrollment)


@operators_cli.command("list")
def operators_list() -> None:
    """List operators with role and state."""
    with cli_session() as session:
        for operator in _service(session).list():
            state = "disabled" if operator.disabled_at else "active"
            click.echo(f"{operator.name}\t{operator.role}\t{state}")


@operators_cli.command("purge-sessions")
def operators_purge_sessions() -> None:
    """Delete expired, idle-timed-out and revoked console sessions and API tokens (run daily from cron).

    Sign-ins purge the signing-in operator's own dead rows as they go; this sweeps everyone's.
    """
    with cli_session() as session:
        purged = _service(session).purge_all_sessions(actor=CLI_ACTOR)
    click.echo(f"purged {purged} expired or revoked operator session(s) and token(s)")
