"""Appeals as operator cases: the appeal queue and everything one case page shows.

No Flask, never commits. Decisions, replies and state changes go through the appeals slice's
``AppealService`` (transition table, four-eyes, audit, webhooks); this module only reads and assembles.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, aliased

from security.appeals.models import Appeal, AppealHistory, AppealMessage, AppealReview, AppealVerification
from security.appeals.services import AppealService, Needed
from security.appeals.states import OPEN_STATES, AppealState
from security.clock import Clock
from security.locks.models import Lock
from security.operators.models import Operator
from security.review.models import CaseClaim
from security.review.services import Page, lock_assessment_id, lock_score
from security.risk.models import Assessment

MAX_APPEAL_PAGE_SIZE = 100
STATEMENT_AUTHOR = "user"
"""The statement is the user's first message (``AppealService.submit`` stores it that way)."""


class AppealOrder(StrEnum):
    RISK = "risk"  # pending_review first, then the highest score, then the oldest
    AGE = "age"  # pending_review first, then the oldest


@dataclass(frozen=True)
class AppealFilter:
    state: AppealState | None = None
    include_closed: bool = False
    kind: str | None = None
    account_id: str | None = None
    min_score: int | None = None
    order: AppealOrder = AppealOrder.RISK
    page: int = 1
    per_page: int = 25


@dataclass(frozen=True)
class AppealItem:
    appeal: Appeal
    lock: Lock | None
    score: int
    band: str | None
    age_seconds: int
    approvals: int
    approvals_required: int | None
    claimed_by: str | None
    # The claim is on this appeal itself (False: its lock's claim covers it; release that one instead).
    claimed_here: bool = False


AppealPage = Page[AppealItem]


@dataclass(frozen=True)
class ReviewView:
    """One operator's decision, with the operator's name for the page."""

    operator_id: str
    operator_name: str
    approve: bool
    note: str | None
    user_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class AppealCase:
    appeal: Appeal
    lock: Lock | None
    statement: str | None
    verifications: list[AppealVerification]
    needed: Needed
    messages: list[AppealMessage]
    reviews: list[ReviewView]
    history: list[AppealHistory]
    approvals: int
    approvals_required: int | None
    actions_left: tuple[str, ...]
    reviewed_by: frozenset[str]
    claimed_by: str | None = None
    # The claim is on this appeal itself (False: its lock's claim covers it).
    claimed_here: bool = False

    @property
    def decidable(self) -> bool:
        """Waiting for a review: the decision forms are shown."""
        return self.appeal.state == AppealState.PENDING_REVIEW


class AppealCases:
    def __init__(self, session: Session, *, clock: Clock, appeals: AppealService) -> None:
        self._session = session
        self._clock = clock
        self._appeals = appeals

    def queue(self, criteria: AppealFilter) -> AppealPage:
        """Appeals against real locks (decoys are no cases), waiting-for-review first, by risk and age.

        An appeal's risk is its lock's (:func:`~security.review.services.lock_score`, as in the lock queue).
        ``claimed_by``: the appeal's own claim, else (while it is open) its lock's, which covers it too.
        """
        score = lock_score()
        approvals = (
            select(func.count()).select_from(AppealReview)
            .where(AppealReview.appeal_id == Appeal.id, AppealReview.approve.is_(True))
            .correlate(Appeal).scalar_subquery()
        )
        # The appeal's own claim or, while the appeal is open, its lock's claim (which covers it too).
        lock_claim = aliased(CaseClaim)
        query = (
            select(Appeal, Lock, score, Assessment.band, approvals, Operator.name, CaseClaim.id)
            .join(Lock, Lock.id == Appeal.lock_id)
            .outerjoin(Assessment, Assessment.id == lock_assessment_id())
            .outerjoin(CaseClaim, CaseClaim.appeal_id == Appeal.id)
            .outerjoin(lock_claim, lock_claim.lock_id == Appeal.open_lock_id)
            .outerjoin(Operator, Operator.id == func.coalesce(CaseClaim.operator_id, lock_claim.operator_id))
        )
        if criteria.state is not None:
            query = query.where(Appeal.state == criteria.state)
        elif not criteria.include_closed:
            query = query.where(Appeal.state.in_([str(s) for s in OPEN_STATES]))
        if criteria.kind:
            query = query.where(Appeal.lock_kind == criteria.kind)
        if criteria.account_id:
            query = query.where(Appeal.account_id == criteria.account_id)
        if criteria.min_score is not None:
            query = query.where(score >= criteria.min_score)
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        waiting_first = case((Appeal.state == AppealState.PENDING_REVIEW, 0), else_=1)
        if criteria.order == AppealOrder.RISK:
            query = query.order_by(waiting_first, score.desc(), Appeal.created_at, Appeal.id)
        else:
            query = query.order_by(waiting_first, Appeal.created_at, Appeal.id)
        rows = self._session.execute(
            query.limit(criteria.per_page).offset((criteria.page - 1) * criteria.per_page)
        ).all()
        now = self._clock.now()
        items = [
            AppealItem(appeal=appeal, lock=lock, score=int(points), band=band, approvals=int(given or 0),
                       approvals_required=self._reviewers(appeal), claimed_by=claimer,
                       claimed_here=own is not None, age_seconds=int((now - appeal.created_at).total_seconds()))
            for appeal, lock, points, band, given, claimer, own in rows
        ]
        return AppealPage(items=items, total=total, page=criteria.page, per_page=criteria.per_page)

    def _reviewers(self, appeal: Appeal) -> int | None:
        policy = self._appeals.kind_policy(appeal)
        return policy.reviewers if policy is not None else None

    def case(self, appeal_id: uuid.UUID) -> AppealCase:
        """Everything an operator needs to decide one appeal (404 ``AppealNotFound`` when there is none)."""
        service = self._appeals
        appeal = service.get(appeal_id)
        lock = self._session.get(Lock, appeal.lock_id) if appeal.lock_id else None
        messages = service.messages(appeal)
        statement = next((m.body for m in messages if m.author_kind == STATEMENT_AUTHOR), None)
        verifications = list(self._session.scalars(
            select(AppealVerification).where(AppealVerification.appeal_id == appeal.id)
            .order_by(AppealVerification.id)
        ))
        reviews = service.reviews(appeal)
        snapshot = service.snapshot(appeal)
        claimed_by, claimed_here = self._holder(appeal)
        return AppealCase(
            appeal=appeal, lock=lock, statement=statement, verifications=verifications,
            needed=snapshot.needed, messages=messages, reviews=self._named(reviews),
            history=service.history(appeal), approvals=service.approvals(appeal),
            approvals_required=self._reviewers(appeal),
            actions_left=service.actions_left(appeal) if appeal.state == AppealState.APPROVED else (),
            reviewed_by=frozenset(r.operator_id for r in reviews), claimed_by=claimed_by, claimed_here=claimed_here,
        )

    def _holder(self, appeal: Appeal) -> tuple[str | None, bool]:
        """Who holds the appeal's claim, or (while it is open) its lock's; and whether it is the appeal's own."""
        claims = [CaseClaim.appeal_id == appeal.id]
        if appeal.open_lock_id is not None:
            claims.append(CaseClaim.lock_id == appeal.open_lock_id)
        rows = self._session.execute(
            select(Operator.name, CaseClaim.appeal_id).join(Operator, Operator.id == CaseClaim.operator_id)
            .where(or_(*claims)).order_by(CaseClaim.appeal_id.is_(None))
        ).all()
        if not rows:
            return None, False
        name, appeal_id = rows[0]
        return name, appeal_id is not None

    def _named(self, reviews: list[AppealReview]) -> list[ReviewView]:
        ids: set[uuid.UUID] = set()
        for review in reviews:
            try:
                ids.add(uuid.UUID(review.operator_id))
            except ValueError:  # reviews recorded through the service API by a non-operator caller
                continue
        names = {str(op_id): name for op_id, name in self._session.execute(
            select(Operator.id, Operator.name).where(Operator.id.in_(ids)))} if ids else {}
        return [ReviewView(operator_id=r.operator_id, operator_name=names.get(r.operator_id, r.operator_id),
                           approve=r.approve, note=r.note, user_reason=r.user_reason, created_at=r.created_at)
                for r in reviews]
