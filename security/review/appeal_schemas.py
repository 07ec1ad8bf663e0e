"""Request and response bodies of the ``/v1/review/appeals`` API (also validate the console's forms)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AliasChoices, BaseModel, Field

from security.appeals.schemas import MAX_TEXT
from security.appeals.states import AppealState
from security.locks.states import LockKind
from security.review.appeal_cases import MAX_APPEAL_PAGE_SIZE, AppealCase, AppealItem, AppealOrder, AppealPage
from security.review.schemas import NOTE_MAX, LockOut, Strict
from security.types import ACCOUNT_ID_PATTERN
from security.web.api import JsonInt
from security.web.openapi import Trimmed


class AppealQuery(Strict):
    state: AppealState | None = Field(default=None, description="Only this state (default: every open state)")
    include_closed: bool = Field(default=False, description="Also rejected, released, expired and withdrawn")
    kind: LockKind | None = None
    account_id: str | None = Field(default=None, pattern=ACCOUNT_ID_PATTERN)
    min_score: int | None = Field(default=None, ge=0, le=100)
    order: AppealOrder = AppealOrder.RISK
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=25, ge=1, le=MAX_APPEAL_PAGE_SIZE)


class DecisionIn(Strict):
    approve: bool
    note: Annotated[str, Trimmed(NOTE_MAX)] | None = Field(default=None, description="Internal: operators only")
    user_reason: Annotated[str, Trimmed(NOTE_MAX)] | None = Field(
        default=None, description="Shown to the user; required to reject")
    # ``version`` is accepted too: the name the lock unlock body (UnlockIn) uses for the same idea.
    expected_version: JsonInt = Field(ge=1, validation_alias=AliasChoices("expected_version", "version"),
                                  description="The appeal version you reviewed: a change since gives 409")


class ReplyIn(Strict):
    body: Annotated[str, Trimmed(MAX_TEXT, min_length=1)] = Field(description="Shown to the user with the appeal")


class AppealItemOut(BaseModel):
    appeal_id: uuid.UUID
    state: str
    account_id: str | None
    lock_id: uuid.UUID | None
    lock_reference: str | None
    lock_kind: str | None
    score: int
    band: str | None
    age_seconds: int
    approvals_given: int
    approvals_required: int | None
    claimed_by: str | None = Field(description="Operator holding the claim on the appeal, or on its lock "
                                               "(a claim on either covers both)")
    claimed_here: bool = Field(description="The claim is on this appeal itself (release it here); false when "
                                           "the lock's claim covers it")
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, item: AppealItem) -> AppealItemOut:
        a = item.appeal
        return cls(appeal_id=a.id, state=a.state, account_id=a.account_id, lock_id=a.lock_id,
                   lock_reference=item.lock.reference if item.lock else None, lock_kind=a.lock_kind,
                   score=item.score, band=item.band, age_seconds=item.age_seconds, approvals_given=item.approvals,
                   approvals_required=item.approvals_required, claimed_by=item.claimed_by,
                   claimed_here=item.claimed_here,
                   created_at=a.created_at, updated_at=a.updated_at, version=a.version)


class AppealListOut(BaseModel):
    items: list[AppealItemOut]
    total: int
    page: int
    per_page: int
    pages: int

    @classmethod
    def of(cls, page: AppealPage) -> AppealListOut:
        return cls(items=[AppealItemOut.of(i) for i in page.items], total=page.total, page=page.page,
                   per_page=page.per_page, pages=page.pages)


class VerificationOut(BaseModel):
    method: str
    attempts: int
    failures: int
    verified_at: datetime | None
    last_attempt_at: datetime


class NeededOut(BaseModel):
    next_step: str = Field(description="verify | review | actions | none")
    verifications: list[list[str]] = Field(description="Each group: one of these methods")
    approvals_required: int | None
    approvals_given: int | None
    actions: list[str]


class MessageOut(BaseModel):
    author: str
    author_id: str | None
    body: str
    created_at: datetime


class ReviewOut(BaseModel):
    operator_id: str
    operator_name: str
    approve: bool
    note: str | None
    user_reason: str | None
    created_at: datetime


class AppealHistoryOut(BaseModel):
    at: datetime
    actor: str
    event: str
    from_state: str
    to_state: str
    note: str | None


class AppealCaseOut(BaseModel):
    appeal_id: uuid.UUID
    state: str
    account_id: str | None
    version: int = Field(description="Send it back as expected_version with a decision")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decision_reason: str | None = Field(description="The reason the user sees")
    statement: str | None
    verifications: list[VerificationOut] = Field(description="Every method tried, with attempts and success")
    needed: NeededOut
    approvals_given: int
    approvals_required: int | None
    actions_left: list[str]
    lock: LockOut | None = Field(description="The lock appealed against, with its reasons")
    claimed_by: str | None = Field(description="Operator holding the claim on the appeal, or on its lock")
    claimed_here: bool = Field(description="The claim is on this appeal itself")
    messages: list[MessageOut]
    reviews: list[ReviewOut]
    history: list[AppealHistoryOut]

    @classmethod
    def of(cls, c: AppealCase) -> AppealCaseOut:
        a = c.appeal
        n = c.needed
        return cls(
            appeal_id=a.id, state=a.state, account_id=a.account_id, version=a.version, created_at=a.created_at,
            updated_at=a.updated_at, expires_at=a.expires_at, decided_at=a.decided_at,
            decision_reason=a.decision_reason, statement=c.statement,
            verifications=[VerificationOut(method=v.method, attempts=v.attempts, failures=v.failures,
                                           verified_at=v.verified_at, last_attempt_at=v.last_attempt_at)
                           for v in c.verifications],
            needed=NeededOut(next_step=n.next_step, verifications=[list(g) for g in n.verifications],
                             approvals_required=n.approvals_required, approvals_given=n.approvals_given,
                             actions=list(n.actions)),
            approvals_given=c.approvals, approvals_required=c.approvals_required, actions_left=list(c.actions_left),
            lock=LockOut.of(c.lock) if c.lock else None, claimed_by=c.claimed_by, claimed_here=c.claimed_here,
            messages=[MessageOut(author=m.author_kind, author_id=m.author_id, body=m.body, created_at=m.created_at)
                      for m in c.messages],
            reviews=[ReviewOut(operator_id=r.operator_id, operator_name=r.operator_name, approve=r.approve,
                               note=r.note, user_reason=r.user_reason, created_at=r.created_at) for r in c.reviews],
            history=[AppealHistoryOut(at=h.at, actor=h.actor, event=h.event, from_state=h.from_state,
                                      to_state=h.to_state, note=h.note) for h in c.history],
        )
