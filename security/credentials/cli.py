"""``flask --app app keys rotate``: re-encrypt stored secrets under the newest key."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from security.audit.services import AuditLog
from security.cli import CLI_ACTOR, cli_session
from security.credentials.services import rotate_totp_secrets
from security.crypto import UndecryptableSecret
from security.runtime import runtime

keys_cli = AppGroup("keys", help="Encryption keys of secrets stored at rest.")


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every TOTP secret under the first key of FOXGUARD_ENCRYPTION_KEYS.

    Put the new key first and keep the old ones listed, run this, then drop the old keys.
    """
    rt = runtime()
    try:
        with cli_session() as session:
            count = rotate_totp_secrets(
                session, secret_box=rt.secret_box, audit=AuditLog(session, clock=rt.clock), actor=CLI_ACTOR
            )
    except UndecryptableSecret as exc:
        # All or nothing: the session was rolled back, every secret is still under its old key.
        raise click.ClickException(f"{exc}; nothing was changed (is an old key missing from the list?)") from exc
    click.echo(f"re-encrypted {count} TOTP secret(s) under the newest key")
