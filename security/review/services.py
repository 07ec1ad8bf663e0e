"""Review use cases: the queue, claims, an account's timeline, manual lock/unlock/restrict.

No Flask, never commits. Lock changes go through the locks slice's ``LockService`` (transition table,
history, audit, webhooks, optimistic concurrency): this module only adds who did it and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, aliased

from security.accounts.models import Account
from security.appeals.interfaces import AppealNotFound
from security.appeals.models import Appeal
from security.appeals.states import OPEN_STATES
from security.audit.models import AuditEntry
from security.audit.services import AuditLog
from security.clock import Clock
from security.delivery.outbox import OutboxMessage
from security.errors import AccountNotFound, Conflict, Forbidden, InvalidInput
from security.locks.models import Lock, LockHistory
from security.locks.services import LockService
from security.locks.states import LockEvent, LockKind, LockStatus, RequiredAction
from security.operators.models import Operator
from security.operators.services import actor_of
from security.review.models import CaseClaim
from security.risk.models import Assessment, RiskEvent

ItemT = TypeVar("ItemT")

MAX_PAGE_SIZE = 100
TIMELINE_LIMIT = 50
"""Most recent items per timeline section (events, assessments, audit, deliveries)."""
MAX_RESTRICTION_HOURS = 24 * 30
"""A restriction with an expiry lasts at most 30 days; a longer hold should be indefinite and reviewed."""
OPERATOR_RULE = "operator"
"""The ``rule`` of a manual lock's reason, so the lock shows who decided and why like automatic ones do."""


class AuditTag(StrEnum):
    CASE_CLAIMED = "review:case:claimed"
    CASE_RELEASED = "review:case:released"


class CaseKind(StrEnum):
    """What an operator can claim: a lock, or an appeal against one."""

    LOCK = "lock"
    APPEAL = "appeal"


class QueueOrder(StrEnum):
    RISK = "risk"  # highest score first, then oldest
    AGE = "age"  # oldest first


class ClaimFilter(StrEnum):
    ANY = "any"
    MINE = "mine"
    UNCLAIMED = "unclaimed"


class CaseAlreadyClaimed(Conflict):
    code = "case_already_claimed"
    title = "Another operator has claimed this case"


class CaseClosed(Conflict):
    code = "case_closed"
    title = "The case is no longer open"


class NotYourClaim(Forbidden):
    code = "not_your_claim"
    title = "Only the operator who claimed the case can release it"


class ExpiryOutOfRange(InvalidInput):
    """A lock's or restriction's ``expires_at`` in the past, or further ahead than allowed: relative to the
    server's clock, so no schema can state it (its own code, for clients and the fuzzer)."""

    code = "expires_at_out_of_range"
    title = "expires_at is not in the allowed range"


class NotACase(Conflict):
    code = "appeal_not_a_case"
    title = "This appeal names no locked account; there is nobody to answer"


CaseKey = tuple[CaseKind, uuid.UUID]


@dataclass(frozen=True)
class Case:
    """A claimable case, as the one claim mechanism sees it (locks and appeals alike).

    ``covered_by``: the related cases whose claim covers this one too. A lock and its open appeal are
    one piece of work: a claim on either keeps every other operator off both.
    """

    kind: CaseKind
    id: uuid.UUID
    reference: str
    account_id: str
    covered_by: tuple[CaseKey, ...] = ()

    @property
    def key(self) -> CaseKey:
        return (self.kind, self.id)

    @property
    def label(self) -> str:
        return f"Case {self.reference}" if self.kind is CaseKind.LOCK else f"The appeal of case {self.reference}"


def _claim_column(kind: CaseKind) -> Any:
    return CaseClaim.lock_id if kind is CaseKind.LOCK else CaseClaim.appeal_id


def _claim_key(claim: CaseClaim) -> CaseKey:
    if claim.lock_id is not None:
        return (CaseKind.LOCK, claim.lock_id)
    assert claim.appeal_id is not None  # noqa: S101 - the table's check constraint: exactly one of the two
    return (CaseKind.APPEAL, claim.appeal_id)


class FourEyesRequired(Conflict):
    code = "four_eyes_required"
    title = "This lock is released through an appeal approved by two reviewers"


@dataclass(frozen=True)
class QueueFilter:
    kind: LockKind | None = None
    status: LockStatus | None = None
    min_score: int | None = None
    account_id: str | None = None
    claimed: ClaimFilter = ClaimFilter.ANY
    order: QueueOrder = QueueOrder.RISK
    page: int = 1
    per_page: int = 25


@dataclass(frozen=True)
class QueueItem:
    lock: Lock
    score: int
    band: str | None
    age_seconds: int
    claimed_by: str | None
    # The claim is on this lock itself (False: its appeal's claim covers it; release that one instead).
    claimed_here: bool = False


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """One page of a list (the lock queue, the appeal queue)."""

    items: list[ItemT]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


QueuePage = Page[QueueItem]


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to the account, for the merged, newest-first view."""

    at: datetime
    source: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    account: Account
    locks: list[Lock]
    history: dict[uuid.UUID, list[LockHistory]]
    claims: dict[uuid.UUID, str]
    assessments: list[Assessment]
    events: list[RiskEvent]
    audit: list[AuditEntry]
    deliveries: list[OutboxMessage]
    appeals: list[Appeal]
    entries: list[TimelineEntry]


def lock_assessment_id() -> ColumnElement[Any]:
    """The id of the assessment that sets a lock's risk, for ``outerjoin(Assessment, Assessment.id == ...)``.

    The assessment that caused the lock (``Lock.assessment_id``: every lock the risk engine places, brute
    force included, names it) or, when the lock names none (manual and user-reported locks, locks from
    before 0007), the account's latest assessment at the time the lock was placed. Later assessments of a
    locked account never change its rank. The lock queue and the appeal queue both rank by it.
    """
    latest_before_lock = (
        select(Assessment.id)
        .where(Assessment.account_id == Lock.account_id, Assessment.created_at <= Lock.created_at)
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())
        .limit(1)
        .correlate(Lock)
        .scalar_subquery()
    )
    return func.coalesce(Lock.assessment_id, latest_before_lock)


def lock_score() -> ColumnElement[int]:
    """A lock's risk: the score of the assessment joined on :func:`lock_assessment_id` (no assessment: 0)."""
    return func.coalesce(Assessment.score, 0)


class ReviewService:
    def __init__(self, session: Session, *, clock: Clock, audit: AuditLog, locks: LockService) -> None:
        self._session = session
        self._clock = clock
        self._audit = audit
        self._locks = locks

    # --- queue ---------------------------------------------------------------------------------------

    def queue(self, criteria: QueueFilter, *, operator: Operator) -> QueuePage:
        """Open locks, riskiest (then oldest) first, filtered and paginated.

        A case's risk is :func:`lock_score` (the assessment that caused the lock, else the latest before it).
        """
        score = lock_score()
        # A lock is claimed by its own claim or by a claim on its open appeal (one open appeal per lock).
        appeal_claim = aliased(CaseClaim)
        holder = func.coalesce(CaseClaim.operator_id, appeal_claim.operator_id)
        query = (
            select(Lock, score, Assessment.band, Operator.name, CaseClaim.id)
            .outerjoin(Assessment, Assessment.id == lock_assessment_id())
            .outerjoin(CaseClaim, CaseClaim.lock_id == Lock.id)
            .outerjoin(Appeal, Appeal.open_lock_id == Lock.id)
            .outerjoin(appeal_claim, appeal_claim.appeal_id == Appeal.id)
            .outerjoin(Operator, Operator.id == holder)
            .where(Lock.status != LockStatus.RELEASED)
        )
        if criteria.kind is not None:
            query = query.where(Lock.kind == criteria.kind)
        if criteria.status is not None:
            query = query.where(Lock.status == criteria.status)
        if criteria.min_score is not None:
            query = query.where(score >= criteria.min_score)
        if criteria.account_id:
            query = query.where(Lock.account_id == criteria.account_id)
        if criteria.claimed == ClaimFilter.MINE:
            query = query.where(holder == operator.id)
        elif criteria.claimed == ClaimFilter.UNCLAIMED:
            query = query.where(holder.is_(None))
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        if criteria.order == QueueOrder.RISK:
            query = query.order_by(score.desc(), Lock.created_at, Lock.reference)
        else:
            query = query.order_by(Lock.created_at, Lock.reference)
        rows = self._session.execute(
            query.limit(criteria.per_page).offset((criteria.page - 1) * criteria.per_page)
        ).all()
        now = self._clock.now()
        items = [
            QueueItem(lock=lock, score=int(points), band=band, claimed_by=claimer, claimed_here=own is not None,
                      age_seconds=int((now - lock.created_at).total_seconds()))
            for lock, points, band, claimer, own in rows
        ]
        return QueuePage(items=items, total=total, page=criteria.page, per_page=criteria.per_page)

    # --- claims --------------------------------------------------------------------------------------
    # One mechanism for every kind of case: a ``review_claims`` row naming the lock or the appeal (each
    # column unique, so two simultaneous claims of one case give one winner and a 409).

    def _open_lock(self, lock_id: uuid.UUID) -> Lock:
        lock = self._locks.get(lock_id)
        if lock.status == LockStatus.RELEASED:
            raise CaseClosed(f"Case {lock.reference} was resolved ({lock.resolution}).")
        return lock

    def _lock_case(self, lock: Lock) -> Case:
        appeal_id = self._session.scalar(select(Appeal.id).where(Appeal.open_lock_id == lock.id))
        return Case(CaseKind.LOCK, lock.id, lock.reference, lock.account_id,
                    covered_by=((CaseKind.APPEAL, appeal_id),) if appeal_id is not None else ())

    def _appeal_case(self, appeal_id: uuid.UUID, *, must_be_open: bool) -> Case:
        appeal = self._session.get(Appeal, appeal_id)
        if appeal is None:
            raise AppealNotFound()
        if appeal.lock_id is None or appeal.account_id is None:
            raise NotACase()
        lock = self._locks.get(appeal.lock_id)
        if must_be_open and appeal.state not in OPEN_STATES:
            raise CaseClosed(f"The appeal of case {lock.reference} is {appeal.state}.")
        covered = ((CaseKind.LOCK, lock.id),) if lock.status != LockStatus.RELEASED else ()
        return Case(CaseKind.APPEAL, appeal.id, lock.reference, appeal.account_id, covered_by=covered)

    def claim(self, lock_id: uuid.UUID, *, operator: Operator) -> CaseClaim:
        """Claim an open lock case. Claiming one's own case again is a no-op; someone else's is 409."""
        return self._claim(self._lock_case(self._open_lock(lock_id)), operator=operator)

    def release_claim(self, lock_id: uuid.UUID, *, operator: Operator) -> None:
        """Give the lock case back to the queue (only its holder can)."""
        self._release(self._lock_case(self._locks.get(lock_id)), operator=operator)

    def claim_appeal(self, appeal_id: uuid.UUID, *, operator: Operator) -> CaseClaim:
        """Claim an open appeal (against a real lock), like a lock case."""
        return self._claim(self._appeal_case(appeal_id, must_be_open=True), operator=operator)

    def release_appeal_claim(self, appeal_id: uuid.UUID, *, operator: Operator) -> None:
        """Give the appeal back to the queue (only its holder can)."""
        self._release(self._appeal_case(appeal_id, must_be_open=False), operator=operator)

    def drop_appeal_claim(self, appeal_id: uuid.UUID, *, operator: Operator) -> None:
        """After a decision that closed the appeal: its claim goes with it (as a lock's does on unlock)."""
        claim = self._session.scalar(select(CaseClaim).where(CaseClaim.appeal_id == appeal_id))
        if claim is not None:
            self._drop_claim(claim, self._appeal_case(appeal_id, must_be_open=False), actor=actor_of(operator))

    def _claims_on(self, keys: Sequence[CaseKey]) -> list[CaseClaim]:
        return list(self._session.scalars(
            select(CaseClaim).where(or_(*(_claim_column(kind) == case_id for kind, case_id in keys)))
        ))

    def _claim(self, case: Case, *, operator: Operator) -> CaseClaim:
        # A lock and its appeal are one case but two claim rows: claims of either are serialised on the
        # account's row, so two operators claiming the lock and the appeal at once cannot both win.
        self._session.execute(select(Account.id).where(Account.id == case.account_id).with_for_update())
        claims = self._claims_on([case.key, *case.covered_by])
        other = next((c for c in claims if c.operator_id != operator.id), None)
        if other is not None:
            holder = self._session.get(Operator, other.operator_id)
            raise CaseAlreadyClaimed(
                f"{case.label} is claimed by {holder.name if holder else 'another operator'}.",
                claimed_by=holder.name if holder else None,
            )
        own = next((c for c in claims if _claim_key(c) == case.key), None)
        if own is not None:
            return own
        claim = CaseClaim(operator_id=operator.id, claimed_at=self._clock.now())
        if case.kind is CaseKind.LOCK:
            claim.lock_id = case.id
        else:
            claim.appeal_id = case.id
        self._session.add(claim)
        # Flush now: a simultaneous claim of the same case fails on the unique column (-> 409).
        self._session.flush()
        self._audit.record(
            AuditTag.CASE_CLAIMED, actor=actor_of(operator), subject_type="account", subject_id=case.account_id,
            data=self._audit_data(case),
        )
        return claim

    def _release(self, case: Case, *, operator: Operator) -> None:
        existing = self._session.scalar(select(CaseClaim).where(_claim_column(case.kind) == case.id))
        if existing is None:
            return
        if existing.operator_id != operator.id:
            raise NotYourClaim(f"{case.label} is claimed by another operator.")
        self._drop_claim(existing, case, actor=actor_of(operator))

    def _drop_claim(self, claim: CaseClaim, case: Case, *, actor: str) -> None:
        self._session.delete(claim)
        self._session.flush()
        self._audit.record(
            AuditTag.CASE_RELEASED, actor=actor, subject_type="account", subject_id=case.account_id,
            data=self._audit_data(case),
        )

    @staticmethod
    def _audit_data(case: Case) -> dict[str, Any]:
        return {f"{case.kind}_id": str(case.id), "reference": case.reference}

    # --- manual decisions ----------------------------------------------------------------------------

    def _account(self, account_id: str) -> Account:
        account = self._session.get(Account, account_id)
        if account is None:
            raise AccountNotFound(f"No account {account_id!r}.")
        return account

    def lock(
        self, account_id: str, *, operator: Operator, note: str, expires_at: datetime | None,
        required_actions: Sequence[RequiredAction] = (),
    ) -> Lock:
        """Lock an account by hand; temporary when ``expires_at`` is given."""
        self._check_expiry(expires_at)
        account = self._account(account_id)
        return self._locks.place(
            account, kind=LockKind.OPERATOR, reasons=[{"rule": OPERATOR_RULE, "points": 0, "detail": note}],
            actor=actor_of(operator), expires_at=expires_at, required_actions=required_actions, note=note,
        )

    def unlock(self, lock_id: uuid.UUID, *, operator: Operator, note: str, expected_version: int) -> Lock:
        """Release a lock by hand. ``expected_version`` is the version the operator saw: a change since -> 409.

        A lock the user reported ("not me") is only released through an appeal approved by two
        different reviewers, never by one operator's unlock.
        """
        lock = self._open_lock(lock_id)
        if lock.kind == LockKind.USER_REPORTED:
            raise FourEyesRequired(
                f"Case {lock.reference} was reported by the user; it is released by an appeal with two approvals."
            )
        released = self._locks.release(
            lock, LockEvent.OPERATOR_UNLOCK, actor=actor_of(operator), note=note, expected_version=expected_version
        )
        claim = self._session.scalar(select(CaseClaim).where(CaseClaim.lock_id == lock.id))
        if claim is not None:
            self._drop_claim(claim, self._lock_case(lock), actor=actor_of(operator))
        return released

    def _check_expiry(self, expires_at: datetime | None, *, at_most: timedelta | None = None) -> None:
        """Refuse (422) an expiry that is not in the future, or lies further ahead than ``at_most``."""
        if expires_at is None:
            return
        now = self._clock.now()
        problem = None
        if expires_at <= now:
            problem = "must be in the future"
        elif at_most is not None and expires_at > now + at_most:
            problem = f"must be at most {int(at_most.total_seconds() // 3600)} hours from now"
        if problem is not None:
            raise ExpiryOutOfRange(f"expires_at {problem}.", errors=[
                {"location": "body", "field": "expires_at", "message": problem}])

    def restrict(self, account_id: str, *, operator: Operator, note: str,
                 expires_at: datetime | None = None) -> Account:
        """Hold the account's outgoing transactions (login still allowed); until ``expires_at`` when given."""
        self._check_expiry(expires_at, at_most=timedelta(hours=MAX_RESTRICTION_HOURS))
        account = self._account(account_id)
        if not self._locks.restrict(
            account, reasons=[{"rule": OPERATOR_RULE, "points": 0, "detail": note}], actor=actor_of(operator),
            expires_at=expires_at,
        ):
            raise Conflict(f"Account {account_id} is {account.status}; only an active account can be restricted.")
        return account

    def lift_restriction(self, account_id: str, *, operator: Operator) -> Account:
        account = self._account(account_id)
        self._locks.lift_restriction(account, actor=actor_of(operator))
        return account

    # --- timeline ------------------------------------------------------------------------------------

    def timeline(self, account_id: str, *, limit: int = TIMELINE_LIMIT) -> Timeline:
        """Everything the service knows and did about one account, newest first."""
        account = self._account(account_id)
        locks = list(self._session.scalars(
            select(Lock).where(Lock.account_id == account_id).order_by(Lock.created_at.desc()).limit(limit)
        ))
        lock_ids = [lock.id for lock in locks]
        history: dict[uuid.UUID, list[LockHistory]] = {lock_id: [] for lock_id in lock_ids}
        for row in self._session.scalars(
            select(LockHistory).where(LockHistory.lock_id.in_(lock_ids)).order_by(LockHistory.id)
        ):
            history[row.lock_id].append(row)
        claims = {
            lock_id: name for lock_id, name in self._session.execute(
                select(CaseClaim.lock_id, Operator.name).join(Operator, Operator.id == CaseClaim.operator_id)
                .where(CaseClaim.lock_id.in_(lock_ids))
            ) if lock_id is not None
        }
        assessments = list(self._session.scalars(
            select(Assessment).where(Assessment.account_id == account_id)
            .order_by(Assessment.created_at.desc()).limit(limit)
        ))
        events = list(self._session.scalars(
            select(RiskEvent).where(RiskEvent.account_id == account_id)
            .order_by(RiskEvent.occurred_at.desc()).limit(limit)
        ))
        audit = list(self._session.scalars(
            select(AuditEntry).where(AuditEntry.subject_type == "account", AuditEntry.subject_id == account_id)
            .order_by(AuditEntry.seq.desc()).limit(limit)
        ))
        deliveries = list(self._session.scalars(
            select(OutboxMessage).where(OutboxMessage.ordering_key == account_id)
            .order_by(OutboxMessage.id.desc()).limit(limit)
        ))
        appeals = list(self._session.scalars(
            select(Appeal).where(Appeal.account_id == account_id).order_by(Appeal.created_at.desc()).limit(limit)
        ))
        entries = merge_entries(locks=locks, assessments=assessments, events=events, audit=audit,
                                deliveries=deliveries, appeals=appeals)
        return Timeline(account=account, locks=locks, history=history, claims=claims, assessments=assessments,
                        events=events, audit=audit, deliveries=deliveries, appeals=appeals, entries=entries)


def merge_entries(
    *, locks: Sequence[Lock], assessments: Sequence[Assessment], events: Sequence[RiskEvent],
    audit: Sequence[AuditEntry], deliveries: Sequence[OutboxMessage], appeals: Sequence[Appeal] = (),
) -> list[TimelineEntry]:
    """One newest-first list from every source, each entry with a one-line summary."""
    entries: list[TimelineEntry] = []
    for event in events:
        what = event.kind if event.kind != "login" else f"login ({event.outcome or 'reported'})"
        where = " ".join(part for part in (event.country, event.ip) if part)
        amount = f" {event.amount} {event.currency}" if event.amount else ""
        entries.append(TimelineEntry(event.occurred_at, "event", f"{what}{amount} {where}".strip(),
                                     {"event_id": event.event_id, "change": event.change}))
    for assessment in assessments:
        hits = [r.rule_id for r in assessment.results if r.outcome == "hit" and r.mode != "shadow"]
        entries.append(TimelineEntry(
            assessment.created_at, "assessment",
            f"{assessment.kind}: {assessment.final_decision} (score {assessment.score}, {assessment.band})"
            + (f"; rules hit: {', '.join(hits)}" if hits else ""),
            {"assessment_id": str(assessment.id)},
        ))
    for lock in locks:
        entries.append(TimelineEntry(lock.created_at, "lock", f"{lock.kind} lock {lock.reference} placed "
                                     f"by {lock.created_by}", {"lock_id": str(lock.id)}))
    for entry in audit:
        entries.append(TimelineEntry(entry.at, "audit", f"{entry.action} by {entry.actor}", {"seq": entry.seq}))
    for message in deliveries:
        entries.append(TimelineEntry(message.created_at, "delivery",
                                     f"{message.channel} {message.event_type} to {message.destination}: "
                                     f"{message.status}", {"message_id": message.message_id}))
    for appeal in appeals:
        entries.append(TimelineEntry(appeal.created_at, "appeal", f"appeal {appeal.id} ({appeal.state})",
                                     {"appeal_id": str(appeal.id)}))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries
