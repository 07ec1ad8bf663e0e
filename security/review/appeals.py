"""``/v1/review/appeals...``: the operators' side of appeals (queue, detail, decisions with four-eyes, replies).

The appeals slice owns the rules (``AppealService.decide``: versioned, one decision per operator, so the
same person can never give both approvals of a four-eyes kind); this module authenticates the operator,
checks ``review:appeals:decide`` in the one place (``OperatorBearer``) and shapes the answers.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from security.appeals.models import Appeal
from security.appeals.services import AppealService
from security.appeals.views import appeal_service
from security.locks.models import Lock
from security.operators.auth import OperatorBearer, current_operator
from security.operators.policy import Permission
from security.web.api import operation
from security.web.deps import deps

bp = Blueprint("review_appeals", __name__)
TAGS = ["review"]
APPEAL_QUEUE_LIMIT = 100
NOTE_MAX = 2000


class AppealSummaryOut(BaseModel):
    appeal_id: uuid.UUID
    account_id: str | None
    lock_id: uuid.UUID | None
    lock_reference: str | None
    lock_kind: str | None
    state: str
    created_at: datetime
    updated_at: datetime
    approvals_required: int | None
    approvals_given: int | None
    version: int = Field(description="Send it back with a decision: a change since then gives 409")


class ReviewOut(BaseModel):
    operator_id: str
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


class AppealMessageOut(BaseModel):
    author: str
    body: str
    created_at: datetime


class AppealDetailOut(AppealSummaryOut):
    verifications: list[str]
    actions_left: list[str]
    decision_reason: str | None
    reviews: list[ReviewOut]
    history: list[AppealHistoryOut]
    messages: list[AppealMessageOut]


class AppealQueueOut(BaseModel):
    items: list[AppealSummaryOut]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    approve: bool
    version: int = Field(ge=1, description="The appeal version you reviewed")
    note: str | None = Field(default=None, max_length=NOTE_MAX, description="Internal, for operators only")
    user_reason: str | None = Field(default=None, max_length=NOTE_MAX,
                                    description="Shown to the user; required to reject")


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    body: str = Field(min_length=1, max_length=NOTE_MAX)


def summary(service: AppealService, appeal: Appeal) -> AppealSummaryOut:
    lock = service_lock(appeal)
    needed = service.snapshot(appeal).needed
    return AppealSummaryOut(
        appeal_id=appeal.id, account_id=appeal.account_id, lock_id=appeal.lock_id,
        lock_reference=lock.reference if lock else None, lock_kind=appeal.lock_kind, state=appeal.state,
        created_at=appeal.created_at, updated_at=appeal.updated_at, approvals_required=needed.approvals_required,
        approvals_given=needed.approvals_given, version=appeal.version,
    )


def service_lock(appeal: Appeal) -> Lock | None:
    return deps().session.get(Lock, appeal.lock_id) if appeal.lock_id else None


def detail(service: AppealService, appeal: Appeal) -> AppealDetailOut:
    snapshot = service.snapshot(appeal)
    return AppealDetailOut(
        **summary(service, appeal).model_dump(),
        verifications=[method for method, _ in snapshot.verifications],
        actions_left=list(service.actions_left(appeal)),
        decision_reason=appeal.decision_reason,
        reviews=[ReviewOut(operator_id=r.operator_id, approve=r.approve, note=r.note, user_reason=r.user_reason,
                           created_at=r.created_at) for r in service.reviews(appeal)],
        history=[AppealHistoryOut(at=h.at, actor=h.actor, event=h.event, from_state=h.from_state,
                                  to_state=h.to_state, note=h.note) for h in service.history(appeal)],
        messages=[AppealMessageOut(author=m.author, body=m.body, created_at=m.created_at)
                  for m in snapshot.messages],
    )


@operation(
    bp, "/v1/review/appeals", response=AppealQueueOut, auth=OperatorBearer(Permission.CASES_READ), tags=TAGS,
    summary="Appeals waiting for an operator's review, oldest first",
)
def appeal_queue() -> AppealQueueOut:
    service = appeal_service(deps())
    return AppealQueueOut(items=[summary(service, a) for a in service.review_queue(limit=APPEAL_QUEUE_LIMIT)])


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>", response=AppealDetailOut, auth=OperatorBearer(Permission.CASES_READ),
    tags=TAGS, summary="One appeal: verifications, reviews, history and the conversation",
    errors={404: "No such appeal"},
)
def appeal_detail(appeal_id: uuid.UUID) -> AppealDetailOut:
    service = appeal_service(deps())
    return detail(service, service.get(appeal_id))


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/decision", method="POST", body=DecisionIn, response=AppealDetailOut,
    auth=OperatorBearer(Permission.APPEALS_DECIDE), tags=TAGS,
    summary="Approve or reject an appeal (four-eyes kinds need two different operators)",
    errors={404: "No such appeal", 409: "Changed since you read it, not waiting for review, or you already decided",
            400: "A rejection needs a user_reason"},
)
def decide_appeal(appeal_id: uuid.UUID, body: DecisionIn) -> AppealDetailOut:
    service = appeal_service(deps())
    appeal = service.decide(appeal_id, str(current_operator().id), body.approve, body.note, body.user_reason,
                            body.version)
    return detail(service, appeal)


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/messages", method="POST", body=ReplyIn, response=AppealDetailOut,
    status=201, auth=OperatorBearer(Permission.APPEALS_DECIDE), tags=TAGS,
    summary="Write to the user in the appeal's conversation (kept on the record)", errors={404: "No such appeal"},
)
def reply_appeal(appeal_id: uuid.UUID, body: ReplyIn) -> AppealDetailOut:
    service = appeal_service(deps())
    service.reply(appeal_id, str(current_operator().id), body.body)
    return detail(service, service.get(appeal_id))
