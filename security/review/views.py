"""HTTP: ``/v1/review/...`` case API for operators (bearer token from ``POST /v1/review/tokens``)."""

from __future__ import annotations

import uuid

from flask import Blueprint, Flask

from security.operators.auth import OperatorBearer, current_operator
from security.operators.policy import Permission
from security.review.appeals import close_appeal_of, review_service
from security.review.schemas import (
    AccountStatusOut,
    ClaimOut,
    LockOut,
    ManualLockIn,
    QueueItemOut,
    QueueOut,
    QueueQuery,
    RestrictIn,
    TimelineOut,
    UnlockIn,
)
from security.review.services import QueueFilter
from security.web.api import operation
from security.web.deps import deps

bp = Blueprint("review", __name__)
TAGS = ["review"]


def queue_filter(query: QueueQuery) -> QueueFilter:
    return QueueFilter(
        kind=query.kind, status=query.status, min_score=query.min_score, account_id=query.account_id or None,
        claimed=query.claimed, order=query.order, page=query.page, per_page=query.per_page,
    )


@operation(
    bp, "/v1/review/queue", query=QueueQuery, response=QueueOut, auth=OperatorBearer(Permission.CASES_READ),
    summary="Open locks ordered by risk and age, with filters and pagination", tags=TAGS,
)
def get_queue(query: QueueQuery) -> QueueOut:
    page = review_service(deps()).queue(queue_filter(query), operator=current_operator())
    return QueueOut(items=[QueueItemOut.of_item(i) for i in page.items], total=page.total, page=page.page,
                    per_page=page.per_page, pages=page.pages)


@operation(
    bp, "/v1/review/locks/<uuid:lock_id>/claim", method="POST", response=ClaimOut,
    auth=OperatorBearer(Permission.CASES_CLAIM), summary="Claim a case (one operator at a time)", tags=TAGS,
    errors={404: "No such lock", 409: "Claimed by someone else, or already resolved"},
)
def claim_case(lock_id: uuid.UUID) -> ClaimOut:
    operator = current_operator()
    claim = review_service(deps()).claim(lock_id, operator=operator)
    return ClaimOut(lock_id=lock_id, claimed_by=operator.name, claimed_at=claim.claimed_at)


@operation(
    bp, "/v1/review/locks/<uuid:lock_id>/claim", method="DELETE", status=204,
    auth=OperatorBearer(Permission.CASES_CLAIM), summary="Give a claimed case back to the queue", tags=TAGS,
    errors={403: "Claimed by another operator", 404: "No such lock"},
)
def release_case(lock_id: uuid.UUID) -> None:
    review_service(deps()).release_claim(lock_id, operator=current_operator())


@operation(
    bp, "/v1/review/accounts/<account:account_id>/timeline", response=TimelineOut,
    auth=OperatorBearer(Permission.CASES_READ), tags=TAGS,
    summary="An account's events, assessments (every rule's points), locks, audit and deliveries",
    errors={404: "No such account"},
)
def get_timeline(account_id: str) -> TimelineOut:
    return TimelineOut.of(review_service(deps()).timeline(account_id))


@operation(
    bp, "/v1/review/accounts/<account:account_id>/locks", method="POST", body=ManualLockIn, response=LockOut,
    status=201, auth=OperatorBearer(Permission.LOCKS_WRITE), tags=TAGS,
    summary="Lock an account by hand (temporary with expires_at)", errors={404: "No such account"},
)
def post_lock(account_id: str, body: ManualLockIn) -> LockOut:
    lock = review_service(deps()).lock(
        account_id, operator=current_operator(), note=body.note, expires_at=body.expires_at,
        required_actions=body.required_actions,
    )
    return LockOut.of(lock)


@operation(
    bp, "/v1/review/locks/<uuid:lock_id>/unlock", method="POST", body=UnlockIn, response=LockOut,
    auth=OperatorBearer(Permission.LOCKS_WRITE), tags=TAGS, summary="Release a lock by hand",
    errors={404: "No such lock", 409: "Changed since you read it (version), resolved, or needs four-eyes"},
)
def post_unlock(lock_id: uuid.UUID, body: UnlockIn) -> LockOut:
    lock = review_service(deps()).unlock(
        lock_id, operator=current_operator(), note=body.note, expected_version=body.version
    )
    close_appeal_of(deps(), lock, current_operator())
    return LockOut.of(lock)


@operation(
    bp, "/v1/review/accounts/<account:account_id>/restriction", method="POST", body=RestrictIn,
    response=AccountStatusOut, auth=OperatorBearer(Permission.LOCKS_WRITE), tags=TAGS,
    summary="Restrict an account (login allowed, outgoing transactions held); timed with expires_at",
    errors={404: "No such account", 409: "The account is not active",
            422: "expires_at not in the future, or too far ahead"},
)
def post_restriction(account_id: str, body: RestrictIn) -> AccountStatusOut:
    account = review_service(deps()).restrict(account_id, operator=current_operator(), note=body.note,
                                              expires_at=body.expires_at)
    return AccountStatusOut(account_id=account.id, status=account.status, restricted_until=account.restricted_until)


@operation(
    bp, "/v1/review/accounts/<account:account_id>/restriction", method="DELETE", response=AccountStatusOut,
    auth=OperatorBearer(Permission.LOCKS_WRITE), tags=TAGS, summary="Lift an account's restriction",
    errors={404: "No such account", 409: "The account is not restricted"},
)
def delete_restriction(account_id: str) -> AccountStatusOut:
    account = review_service(deps()).lift_restriction(account_id, operator=current_operator())
    return AccountStatusOut(account_id=account.id, status=account.status)


def init_app(app: Flask) -> None:
    from security.review import appeals

    app.register_blueprint(bp)
    app.register_blueprint(appeals.bp)
