"""``flask --app app outbox ...``: run the dispatcher, list and re-queue messages."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType

import click
from flask.cli import AppGroup

from security.audit.services import AuditLog
from security.cli import CLI_ACTOR, cli_session, fail
from security.delivery.dispatcher import DispatchStats, run_loop
from security.delivery.outbox import OutboxStatus
from security.delivery.services import OutboxQueue
from security.delivery.wiring import build_dispatcher, config_of
from security.errors import FoxguardError
from security.runtime import runtime

outbox_cli = AppGroup("outbox", help="The outbox: webhook, e-mail and SMS delivery.")

LIST_LIMIT = 100


def _summary(stats: DispatchStats) -> str:
    return f"delivered {stats.delivered}, retry scheduled {stats.retried}, dead {stats.dead}" + (
        f", lease lost {stats.lost_lease}" if stats.lost_lease else ""
    )


@outbox_cli.command("run")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--poll-interval", type=float, default=None, help="Seconds between polls (default: config).")
def outbox_run(once: bool, poll_interval: float | None) -> None:
    """Deliver outbox messages until SIGTERM/SIGINT (several may run at once)."""
    rt = runtime()
    dispatcher = build_dispatcher(rt)
    if once:
        click.echo(_summary(dispatcher.run_once()))
        return
    stop, wake = threading.Event(), threading.Event()

    def _graceful(signum: int, _frame: FrameType | None) -> None:
        # Finish the message in hand (its outcome is recorded), then leave without waiting for a poll.
        click.echo(f"signal {signum}: stopping after the current message", err=True)
        stop.set()
        wake.set()

    previous = {sig: signal.signal(sig, _graceful) for sig in (signal.SIGTERM, signal.SIGINT)}
    interval = poll_interval if poll_interval is not None else config_of(rt).delivery.poll_interval_s
    click.echo(f"outbox dispatcher running (poll every {interval:g} s)")
    try:
        run_loop(dispatcher, stop=stop, wake=wake, poll_interval=interval, on_pass=lambda s: click.echo(_summary(s)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("outbox dispatcher stopped")


@outbox_cli.command("list")
@click.option("--dead", "status", flag_value=OutboxStatus.DEAD.value, help="Only dead messages.")
@click.option("--pending", "status", flag_value=OutboxStatus.PENDING.value, help="Only pending messages.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=LIST_LIMIT, show_default=True)
def outbox_list(status: str | None, limit: int) -> None:
    """List messages, newest first: id, message id, status, channel, event, destination, attempts, error."""
    with cli_session() as session:
        queue = OutboxQueue(session)
        messages = queue.list_messages(status=OutboxStatus(status) if status else None, limit=limit)
        if not messages:
            click.echo("no messages")
            return
        for m in messages:
            waiting = queue.held_behind(m) if m.status != OutboxStatus.DELIVERED else 0
            click.echo(
                "\t".join(
                    [
                        str(m.id),
                        m.message_id,
                        m.status,
                        m.channel,
                        m.event_type,
                        m.destination,
                        f"attempts={m.attempts}",
                        f"next={m.next_attempt_at:%Y-%m-%d %H:%M:%S}" if m.status == OutboxStatus.PENDING else "",
                        f"holding={waiting}" if waiting else "",
                        (m.last_error or "").replace("\n", " "),
                    ]
                ).rstrip()
            )


@outbox_cli.command("retry")
@click.argument("ref", required=False)
@click.option("--all-dead", is_flag=True, help="Re-queue every dead message.")
def outbox_retry(ref: str | None, all_dead: bool) -> None:
    """Re-queue message REF (numeric id or msg_... id), or every dead one, with a fresh attempt budget."""
    if bool(ref) == all_dead:
        raise click.UsageError("give exactly one of REF or --all-dead")
    rt = runtime()
    try:
        with cli_session() as session:
            queue = OutboxQueue(session)
            audit = AuditLog(session, clock=rt.clock)
            now = rt.clock.now()
            if all_dead:
                count = queue.retry_all_dead(now=now, audit=audit, actor=CLI_ACTOR)
                message = f"{count} dead message(s) re-queued"
            else:
                assert ref is not None  # noqa: S101 - checked above
                requeued = queue.retry(ref, now=now, audit=audit, actor=CLI_ACTOR)
                message = f"{requeued.message_id} re-queued"
    except FoxguardError as error:
        fail(error)
        return
    click.echo(message)


@outbox_cli.command("purge")
@click.option("--older-than-days", type=click.IntRange(min=1), default=30, show_default=True)
def outbox_purge(older_than_days: int) -> None:
    """Delete delivered messages older than N days (pending and dead messages are never purged)."""
    rt = runtime()
    before = rt.clock.now() - timedelta(days=older_than_days)
    with cli_session() as session:
        count = OutboxQueue(session).purge_delivered(
            before=before, audit=AuditLog(session, clock=rt.clock), actor=CLI_ACTOR
        )
    click.echo(f"{count} delivered message(s) purged")
