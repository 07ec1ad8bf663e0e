"""HTTP: ``/v1/review/appeals`` — operators list, read, decide and answer appeals.

Decisions and replies go through the appeals slice's service API (four-eyes, versions, audit with the
operator's id, webhooks); permissions are checked by ``OperatorBearer`` (the one ``authorize``).
"""

from __future__ import annotations

import uuid

from flask import Blueprint

from security.appeals.services import AppealService
from security.appeals.states import OPEN_STATES, ActorKind
from security.appeals.views import appeal_service
from security.locks.models import Lock
from security.locks.services import LockService
from security.operators.auth import OperatorBearer, current_operator
from security.operators.models import Operator
from security.operators.policy import Permission
from security.operators.services import actor_of
from security.review.appeal_cases import MAX_APPEAL_PAGE_SIZE, AppealCases, AppealFilter
from security.review.appeal_schemas import (
    AppealCaseOut,
    AppealListOut,
    AppealQuery,
    DecisionIn,
    ReplyIn,
)
from security.review.models import CaseClaim
from security.review.schemas import AppealClaimOut
from security.review.services import NotACase, ReviewService
from security.web.api import operation
from security.web.deps import Deps, deps

bp = Blueprint("review_appeals", __name__)  # registered by ``security.review.views.init_app``
TAGS = ["review"]
APPEAL_QUEUE_LIMIT = MAX_APPEAL_PAGE_SIZE
"""Appeals shown above the lock queue in the console (all waiting ones, up to a page)."""


def appeal_cases(d: Deps, service: AppealService | None = None) -> AppealCases:
    return AppealCases(d.session, clock=d.clock, appeals=service or appeal_service(d))


def appeal_filter(query: AppealQuery) -> AppealFilter:
    return AppealFilter(
        state=query.state, include_closed=query.include_closed, kind=query.kind, account_id=query.account_id or None,
        min_score=query.min_score, order=query.order, page=query.page, per_page=query.per_page,
    )


def review_service(d: Deps) -> ReviewService:
    locks = LockService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit, outbox=d.outbox)
    return ReviewService(d.session, clock=d.clock, audit=d.audit, locks=locks)


def decide(d: Deps, appeal_id: uuid.UUID, operator: Operator, body: DecisionIn) -> AppealCaseOut:
    """Record the operator's decision (shared by the API and the console) and return the case after it.

    A decision that closes the appeal ends its claim too (as a manual unlock ends the lock's).
    """
    service = appeal_service(d)
    service.decide(appeal_id, str(operator.id), body.approve, body.note or None, body.user_reason or None,
                   body.expected_version)
    if service.get(appeal_id).state not in OPEN_STATES:
        review_service(d).drop_appeal_claim(appeal_id, operator=operator)
    return AppealCaseOut.of(appeal_cases(d, service).case(appeal_id))


def claim(d: Deps, appeal_id: uuid.UUID, operator: Operator) -> CaseClaim:
    """Claim an appeal case (shared by the API and the console)."""
    return review_service(d).claim_appeal(appeal_id, operator=operator)


def release_claim(d: Deps, appeal_id: uuid.UUID, operator: Operator) -> None:
    """Give an appeal case back to the queue (shared by the API and the console)."""
    review_service(d).release_appeal_claim(appeal_id, operator=operator)


def reply(d: Deps, appeal_id: uuid.UUID, operator: Operator, body: ReplyIn) -> AppealCaseOut:
    """Post the operator's message to the user (shared by the API and the console); return the case after it."""
    service = appeal_service(d)
    if service.get(appeal_id).is_decoy:
        raise NotACase()
    service.reply(appeal_id, str(operator.id), body.body)
    return AppealCaseOut.of(appeal_cases(d, service).case(appeal_id))


def close_appeal_of(d: Deps, lock: Lock, operator: Operator) -> None:
    """After a manual unlock: close the lock's open appeal now (not when the user next looks)."""
    appeal_service(d).on_lock_released(lock.id, actor=actor_of(operator), actor_kind=ActorKind.OPERATOR)


@operation(
    bp, "/v1/review/appeals", query=AppealQuery, response=AppealListOut, auth=OperatorBearer(Permission.CASES_READ),
    summary="Appeals: waiting for review first, then by risk and age; filters and pagination", tags=TAGS,
)
def list_appeals(query: AppealQuery) -> AppealListOut:
    return AppealListOut.of(appeal_cases(deps()).queue(appeal_filter(query)))


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>", response=AppealCaseOut, auth=OperatorBearer(Permission.CASES_READ),
    summary="An appeal: statement, verifications, what is still needed, messages, reviews, the lock",
    tags=TAGS, errors={404: "No such appeal"},
)
def get_appeal(appeal_id: uuid.UUID) -> AppealCaseOut:
    return AppealCaseOut.of(appeal_cases(deps()).case(appeal_id))


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/claim", method="POST", response=AppealClaimOut,
    auth=OperatorBearer(Permission.CASES_CLAIM), tags=TAGS,
    summary="Claim an appeal case (one operator at a time; a claim on its lock covers it too)",
    errors={404: "No such appeal", 409: "Claimed by someone else (the appeal or its lock), closed, or a decoy"},
)
def claim_appeal(appeal_id: uuid.UUID) -> AppealClaimOut:
    operator = current_operator()
    taken = claim(deps(), appeal_id, operator)
    return AppealClaimOut(appeal_id=appeal_id, claimed_by=operator.name, claimed_at=taken.claimed_at)


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/claim", method="DELETE", status=204,
    auth=OperatorBearer(Permission.CASES_CLAIM), tags=TAGS, summary="Give a claimed appeal back to the queue",
    errors={403: "Claimed by another operator", 404: "No such appeal", 409: "A decoy (no locked account)"},
)
def release_appeal(appeal_id: uuid.UUID) -> None:
    release_claim(deps(), appeal_id, current_operator())


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/decision", method="POST", body=DecisionIn, response=AppealCaseOut,
    auth=OperatorBearer(Permission.APPEALS_DECIDE), tags=TAGS,
    summary="Approve or reject an appeal (four-eyes where the lock kind asks: a second, different reviewer)",
    errors={400: "Rejection without user_reason", 404: "No such appeal",
            409: "Changed since you read it (expected_version), not waiting for review, or you already reviewed it"},
)
def post_decision(appeal_id: uuid.UUID, body: DecisionIn) -> AppealCaseOut:
    return decide(deps(), appeal_id, current_operator(), body)


@operation(
    bp, "/v1/review/appeals/<uuid:appeal_id>/messages", method="POST", body=ReplyIn, response=AppealCaseOut,
    status=201, auth=OperatorBearer(Permission.APPEALS_REPLY), tags=TAGS,
    summary="Answer the user (the message is shown with the appeal); returns the case",
    errors={404: "No such appeal", 409: "Too many messages, or the appeal names no locked account"},
)
def post_message(appeal_id: uuid.UUID, body: ReplyIn) -> tuple[AppealCaseOut, int]:
    return reply(deps(), appeal_id, current_operator(), body), 201
