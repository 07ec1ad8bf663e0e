"""Data for the console dashboard: each chart comes from one *source* reading whatever tables exist.

``CHART_SOURCES`` is the extension point: locks and decisions per day, queue age and rule hits come from
``security.review.dashboard``; the appeals slice can add its own (decisions per day) the same way, and the
dashboard draws them all with the same SVG helper. No Flask here; read-only queries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from security.accounts.models import Account, AccountStatus
from security.audit.models import AuditEntry
from security.console.charts import Chart, per_day, window_start
from security.operators.services import AuditTag as OperatorAuditTag
from security.review import dashboard as review_charts

DAYS = 14
"""Days shown by the per-day charts (two weeks shows weekly patterns without crowding a phone screen)."""

ChartSource = Callable[[Session, datetime], Chart]


def audit_activity_per_day(session: Session, now: datetime) -> Chart:
    instants = session.scalars(select(AuditEntry.at).where(AuditEntry.at >= window_start(now, DAYS)))
    return Chart(
        key="audit-per-day", title=f"Audited state changes per day (last {DAYS} days)",
        points=per_day(instants, last_day=now.date(), days=DAYS), unit="entries",
    )


def accounts_created_per_day(session: Session, now: datetime) -> Chart:
    instants = session.scalars(select(Account.created_at).where(Account.created_at >= window_start(now, DAYS)))
    return Chart(
        key="accounts-per-day", title=f"Accounts registered per day (last {DAYS} days)",
        points=per_day(instants, last_day=now.date(), days=DAYS), unit="accounts",
    )


def failed_operator_sign_ins_per_day(session: Session, now: datetime) -> Chart:
    instants = session.scalars(
        select(AuditEntry.at).where(
            AuditEntry.at >= window_start(now, DAYS), AuditEntry.action == OperatorAuditTag.SIGN_IN_FAILED
        )
    )
    return Chart(
        key="operator-sign-in-failures", title=f"Failed operator sign-ins per day (last {DAYS} days)",
        points=per_day(instants, last_day=now.date(), days=DAYS), unit="failures",
    )


def accounts_by_status(session: Session, now: datetime) -> Chart:
    rows = session.execute(select(Account.status, func.count()).group_by(Account.status))
    counts: dict[str, int] = {status: count for status, count in rows}
    return Chart(
        key="accounts-by-status", title="Accounts by status (now)",
        points=[(status.value, float(counts.get(status.value, 0))) for status in AccountStatus], unit="accounts",
    )


CHART_SOURCES: list[ChartSource] = [
    review_charts.locks_per_day,
    review_charts.blocks_per_day,
    review_charts.reviews_per_day,
    review_charts.appeal_decisions_per_day,
    review_charts.queue_age,
    review_charts.rule_hits,
    accounts_by_status,
    audit_activity_per_day,
    failed_operator_sign_ins_per_day,
]


def build_dashboard(session: Session, *, now: datetime) -> list[Chart]:
    """Every registered chart, computed now."""
    return [source(session, now) for source in CHART_SOURCES]
