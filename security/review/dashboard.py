"""Dashboard chart sources fed from locks and assessments (see ``security.console.dashboard``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from security.appeals.models import AppealReview
from security.console.charts import Chart, age_histogram, per_day, top_counts, window_start
from security.db import is_sqlite
from security.locks.models import Lock
from security.locks.states import LockStatus
from security.risk.models import Assessment

DAYS = 14
TOP_RULES = 10
"""Rules shown in the hit-count chart (the rest are rarely the story)."""


def _since(now: datetime) -> datetime:
    return window_start(now, DAYS)


def locks_per_day(session: Session, now: datetime) -> Chart:
    instants = session.scalars(select(Lock.created_at).where(Lock.created_at >= _since(now)))
    return Chart(key="locks-per-day", title=f"Locks placed per day (last {DAYS} days)",
                 points=per_day(instants, last_day=now.date(), days=DAYS), unit="locks")


def _decisions_per_day(session: Session, now: datetime, decision: str) -> list[tuple[str, float]]:
    instants = session.scalars(select(Assessment.created_at).where(
        Assessment.created_at >= _since(now), Assessment.final_decision == decision))
    return per_day(instants, last_day=now.date(), days=DAYS)


def blocks_per_day(session: Session, now: datetime) -> Chart:
    return Chart(key="blocks-per-day", title=f"Decisions per day: block or deny (last {DAYS} days)",
                 points=[(day, a + b) for (day, a), (_, b) in zip(
                     _decisions_per_day(session, now, "block"), _decisions_per_day(session, now, "deny"),
                     strict=True)],
                 unit="decisions")


def reviews_per_day(session: Session, now: datetime) -> Chart:
    return Chart(key="reviews-per-day", title=f"Decisions per day: review or step-up (last {DAYS} days)",
                 points=[(day, a + b) for (day, a), (_, b) in zip(
                     _decisions_per_day(session, now, "review"), _decisions_per_day(session, now, "mfa_required"),
                     strict=True)],
                 unit="decisions")


def queue_age(session: Session, now: datetime) -> Chart:
    created = session.scalars(select(Lock.created_at).where(Lock.status != LockStatus.RELEASED))
    return Chart(key="queue-age", title="Open cases by age (now)",
                 points=age_histogram(now - at for at in created), unit="cases")


def rule_hits(session: Session, now: datetime) -> Chart:
    # Every assessment's rule records, one row each (JSON array elements; each backend has its function).
    rule: ColumnElement[Any]
    outcome: ColumnElement[Any]
    if is_sqlite(session):
        item = func.json_each(Assessment.rules).table_valued("value").alias("r")
        rule, outcome = (func.json_extract(item.c.value, f"$.{key}") for key in ("rule_id", "outcome"))
    else:
        item = func.jsonb_array_elements(Assessment.rules).table_valued("value").alias("r")
        rule, outcome = (item.c.value.op("->>")(key) for key in ("rule_id", "outcome"))
    rows = session.execute(
        select(rule, func.count()).select_from(Assessment).join(item, true())
        .where(Assessment.created_at >= _since(now), outcome == "hit")
        .group_by(rule)
    )
    counts = [(str(rule), int(count)) for rule, count in rows]
    return Chart(key="rule-hits", title=f"Rule hits (last {DAYS} days, top {TOP_RULES})",
                 points=top_counts(counts, limit=TOP_RULES), unit="hits",
                 note="Shadow-mode hits are included: they show what a rule would do before it counts.")


def appeal_decisions_per_day(session: Session, now: datetime) -> Chart:
    instants = session.scalars(select(AppealReview.created_at).where(AppealReview.created_at >= _since(now)))
    return Chart(key="appeal-decisions-per-day", title=f"Operator decisions on appeals per day (last {DAYS} days)",
                 points=per_day(instants, last_day=now.date(), days=DAYS), unit="decisions",
                 note="Each reviewer's approval or rejection counts: a four-eyes appeal gives two.")
