"""CLI: ``flask --app app rules check|backtest``, ``denylist add|remove|list``, ``locks expire``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from security.audit.services import AuditLog
from security.cli import cli_session
from security.clock import utc
from security.delivery.outbox import Outbox
from security.errors import FoxguardError
from security.locks.services import LockService
from security.risk.denylist import DenyListService
from security.risk.models import Assessment, DenyListKind
from security.risk.rules import RuleFileError, RuleMode, load_ruleset
from security.risk.services import replay_decisions
from security.runtime import runtime
from security.web.deps import webhook_endpoint_names

CLI_ACTOR = "cli"
BACKTEST_BATCH = 2000

rules_cli = AppGroup("rules", help="Validate and backtest rule files.")
denylist_cli = AppGroup("denylist", help="Manage deny-listed IPs and destination addresses.")
locks_cli = AppGroup("locks", help="Lock maintenance.")


@rules_cli.command("check")
@click.option("--rules", "rules_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Rule file to validate.")
def rules_check(rules_file: Path) -> None:
    """Validate a rule file: unknown features, operators, band order and overlap, duplicate ids."""
    try:
        ruleset = load_ruleset(rules_file)
    except RuleFileError as exc:
        click.echo(f"{rules_file}: INVALID", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(1) from None
    shadow = sum(1 for r in ruleset.rules if r.mode is RuleMode.SHADOW)
    click.echo(f"{rules_file}: OK, version {ruleset.version}, {len(ruleset.rules)} rules "
               f"({shadow} shadow), bands {', '.join(b.name for b in ruleset.bands)}")


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter("use an ISO date or datetime, e.g. 2026-03-01") from None


@rules_cli.command("backtest")
@click.option("--rules", "rules_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Candidate rule file.")
@click.option("--since", default=None, help="Only events that occurred at or after this ISO date/time.")
@click.option("--limit", default=50, show_default=True, help="Changed decisions to list.")
def rules_backtest(rules_file: Path, since: str | None, limit: int) -> None:
    """Replay stored assessments through a candidate rule file and show decisions that would change.

    Each stored assessment keeps the features it was scored with, so the replay is exact and fast.
    """
    try:
        candidate = load_ruleset(rules_file)
    except RuleFileError as exc:
        raise click.ClickException("; ".join(exc.problems)) from None
    start = _parse_since(since)
    total = 0
    changes: Counter[tuple[str, str, str]] = Counter()
    shown: list[str] = []
    with cli_session() as session:
        query = select(Assessment).order_by(Assessment.occurred_at, Assessment.id)
        if start is not None:
            query = query.where(Assessment.occurred_at >= start)
        for partition in session.scalars(query.execution_options(yield_per=BACKTEST_BATCH)).partitions():
            total += len(partition)
            for row, result in replay_decisions(partition, candidate):
                changes[(row.kind, row.decision, str(result.decision))] += 1
                if len(shown) < limit:
                    top = result.reasons[0].rule if result.reasons else "-"
                    shown.append(f"{row.occurred_at:%Y-%m-%d %H:%M}  {row.account_id:<20} {row.kind:<15} "
                                 f"{row.decision:>12} -> {result.decision:<12} {row.score:>3} -> "
                                 f"{result.score:>3}  {top}")
        session.rollback()  # read only
    click.echo(f"candidate {candidate.version}: {total} assessments replayed, "
               f"{sum(changes.values())} decisions would change")
    if changes:
        click.echo("\nkind            current      -> candidate     count")
        for (kind, old, new), count in sorted(changes.items()):
            click.echo(f"{kind:<15} {old:<12} -> {new:<13} {count:>5}")
        click.echo("\nwhen              account              kind                 current -> candidate   "
                   "score        top reason")
        for line in shown:
            click.echo(line)


@denylist_cli.command("add")
@click.argument("kind", type=click.Choice([k.value for k in DenyListKind]))
@click.argument("value")
@click.option("--reason", required=True)
def denylist_add(kind: str, value: str, reason: str) -> None:
    """Deny-list an IP address or a destination address."""
    rt = runtime()
    try:
        with cli_session() as session:
            service = DenyListService(session, clock=rt.clock, audit=AuditLog(session, clock=rt.clock))
            entry, created = service.put(DenyListKind(kind), value, reason=reason, actor=CLI_ACTOR)
            click.echo(f"{'added' if created else 'updated'} {entry.kind} {entry.value}")
    except FoxguardError as exc:
        raise click.ClickException(exc.detail) from None


@denylist_cli.command("remove")
@click.argument("kind", type=click.Choice([k.value for k in DenyListKind]))
@click.argument("value")
def denylist_remove(kind: str, value: str) -> None:
    """Remove a deny-list entry."""
    rt = runtime()
    try:
        with cli_session() as session:
            DenyListService(session, clock=rt.clock, audit=AuditLog(session, clock=rt.clock)).remove(
                DenyListKind(kind), value, actor=CLI_ACTOR)
            click.echo(f"removed {kind} {value}")
    except FoxguardError as exc:
        raise click.ClickException(exc.detail) from None


@denylist_cli.command("list")
def denylist_list() -> None:
    """List deny-list entries."""
    rt = runtime()
    with cli_session() as session:
        for entry in DenyListService(session, clock=rt.clock, audit=AuditLog(session, clock=rt.clock)).list():
            expires = f" until {entry.expires_at:%Y-%m-%d %H:%M}" if entry.expires_at else ""
            click.echo(f"{entry.kind:<8} {entry.value:<45} {entry.reason}{expires}")


@locks_cli.command("expire")
def locks_expire() -> None:
    """Release temporary locks and lift restrictions whose time is up (run every minute from cron or a timer)."""
    rt = runtime()
    with cli_session() as session:
        locks = LockService(session, clock=rt.clock, entropy=rt.entropy,
                            audit=AuditLog(session, clock=rt.clock),
                            outbox=Outbox(session, clock=rt.clock, entropy=rt.entropy, secret_box=rt.secret_box,
                                          webhook_endpoints=webhook_endpoint_names(rt)))
        expired = locks.expire_due()
        released, lifted = len(expired.locks), len(expired.restrictions)
    click.echo(f"released {released} expired lock(s); lifted {lifted} expired restriction(s)")


@click.command("demo")
@with_appcontext
@click.option("--seed", default=7, show_default=True, help="Same seed, same week.")
@click.option("--force", is_flag=True, help="Run even if the database already has accounts or events.")
def demo(seed: int, force: bool) -> None:
    """Fill a fresh database with a synthetic week incl. brute force, credential stuffing and a takeover."""
    from datetime import timedelta

    from security.risk.demo import DAYS, Demo, database_is_empty
    from security.risk.views import current_ruleset

    rt = runtime()
    if rt.settings.app.env == "production":
        raise click.ClickException("The demo fills the database with synthetic data; not in production.")
    with cli_session() as session:
        empty = database_is_empty(session)
    if not empty and not force:
        raise click.ClickException("The database already has accounts or events; use --force to add the demo.")
    now = rt.clock.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    click.echo(f"Playing {DAYS} days from {start:%Y-%m-%d} (seed {seed}) ...")
    report = Demo(rt, current_ruleset(), start=start, seed=seed, session_factory=rt.session_factory).run()
    click.echo(f"{report.accounts} accounts; decisions:")
    for key, count in sorted(report.decisions.items()):
        click.echo(f"  {key:<32} {count:>6}")
    click.echo(f"  login attempts throttled (429)  {report.throttled:>6}")
    if report.restricted:
        click.echo(f"\nRestricted after an unusual payment: {report.restricted}")
    click.echo("\nLocks (case reference, account, kind, status, main reason):")
    for line in report.locks:
        click.echo(f"  {line}")
    click.echo(f"\nDemo API key (all scopes, shown once): {report.api_key}")


def init_app(app: Flask) -> None:
    app.cli.add_command(demo)
    app.cli.add_command(rules_cli)
    app.cli.add_command(denylist_cli)
    app.cli.add_command(locks_cli)
