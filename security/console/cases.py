"""Console case pages: the queue, an account's timeline, and the lock decision forms.

They call the same ``ReviewService`` as ``/v1/review/...`` and validate forms with the same pydantic
models, so the console cannot do anything the JSON API would refuse (and vice versa).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from security.appeals.states import AppealState
from security.console.views import NAV_ITEMS, NavItem, bp, filter_query, safe_next
from security.errors import InvalidInput
from security.locks.states import LockKind, LockStatus, RequiredAction
from security.operators.auth import console_page, current_operator
from security.operators.policy import Permission
from security.review.appeal_cases import AppealFilter
from security.review.appeal_schemas import AppealItemOut
from security.review.appeals import APPEAL_QUEUE_LIMIT, appeal_cases, close_appeal_of, review_service
from security.review.schemas import ManualLockIn, QueueQuery, RestrictIn, UnlockIn
from security.review.services import MAX_PAGE_SIZE, MAX_RESTRICTION_HOURS, ClaimFilter, QueueOrder
from security.review.views import queue_filter
from security.web.api import validate
from security.web.deps import deps

MAX_EXPIRY_HOURS = 24 * 30
"""A manual temporary lock lasts at most 30 days; longer holds should be indefinite and reviewed."""

NAV_ITEMS.insert(1, NavItem("console.queue", "Queue", Permission.CASES_READ))


def _form(*names: str) -> dict[str, str]:
    # A person typed these: white space around a value is dropped here (the API's models take values as
    # sent; notes trim themselves).
    return {name: request.form.get(name, "").strip() for name in names}


@bp.get("/queue")
@console_page(Permission.CASES_READ)
def queue() -> str:
    query, base = filter_query(QueueQuery)
    d = deps()
    page = review_service(d).queue(queue_filter(query), operator=current_operator())
    waiting = [AppealItemOut.of(item) for item in appeal_cases(d).queue(
        AppealFilter(state=AppealState.PENDING_REVIEW, per_page=APPEAL_QUEUE_LIMIT)).items]
    return render_template(
        "console/queue.html", page=page, appeals=waiting, query=query, base=base, kinds=list(LockKind),
        statuses=[LockStatus.ACTIVE, LockStatus.AWAITING_ACTIONS], claim_filters=list(ClaimFilter),
        orders=list(QueueOrder), max_page_size=MAX_PAGE_SIZE,
    )


@bp.post("/cases/<uuid:lock_id>/claim")
@console_page(Permission.CASES_CLAIM)
def claim(lock_id: uuid.UUID) -> BaseResponse:
    review_service(deps()).claim(lock_id, operator=current_operator())
    return redirect(safe_next(request.form.get("next"), url_for("console.queue")), code=303)


@bp.post("/cases/<uuid:lock_id>/release")
@console_page(Permission.CASES_CLAIM)
def release(lock_id: uuid.UUID) -> BaseResponse:
    review_service(deps()).release_claim(lock_id, operator=current_operator())
    return redirect(safe_next(request.form.get("next"), url_for("console.queue")), code=303)


@bp.get("/accounts/<account:account_id>")
@console_page(Permission.CASES_READ)
def account(account_id: str) -> str:
    timeline = review_service(deps()).timeline(account_id)
    return render_template("console/account.html", t=timeline, required_actions=list(RequiredAction),
                           max_expiry_hours=MAX_EXPIRY_HOURS, max_restriction_hours=MAX_RESTRICTION_HOURS,
                           me=current_operator().name)


def _expiry_from_hours(body: dict[str, object], *, maximum: int) -> None:
    """The form's "expires after N hours" field as the API's ``expires_at`` (empty: no expiry)."""
    hours = request.form.get("expires_in_hours", "").strip()
    if hours:
        if not hours.isdigit() or not 1 <= int(hours) <= maximum:
            raise InvalidInput(f"Expiry must be a whole number of hours between 1 and {maximum}.")
        body["expires_at"] = (deps().clock.now() + timedelta(hours=int(hours))).isoformat()


@bp.post("/accounts/<account:account_id>/lock")
@console_page(Permission.LOCKS_WRITE)
def lock(account_id: str) -> BaseResponse:
    d = deps()
    body: dict[str, object] = {"note": request.form.get("note", ""),
                               "required_actions": request.form.getlist("required_actions")}
    _expiry_from_hours(body, maximum=MAX_EXPIRY_HOURS)
    form = validate(ManualLockIn, body, "form")
    assert isinstance(form, ManualLockIn)  # noqa: S101
    review_service(d).lock(account_id, operator=current_operator(), note=form.note, expires_at=form.expires_at,
                           required_actions=form.required_actions)
    return redirect(url_for("console.account", account_id=account_id), code=303)


@bp.post("/locks/<uuid:lock_id>/unlock")
@console_page(Permission.LOCKS_WRITE)
def unlock(lock_id: uuid.UUID) -> BaseResponse:
    form = validate(UnlockIn, _form("note", "version"), "form")
    assert isinstance(form, UnlockIn)  # noqa: S101
    released = review_service(deps()).unlock(lock_id, operator=current_operator(), note=form.note,
                                              expected_version=form.version)
    close_appeal_of(deps(), released, current_operator())
    return redirect(url_for("console.account", account_id=released.account_id), code=303)


@bp.post("/accounts/<account:account_id>/restrict")
@console_page(Permission.LOCKS_WRITE)
def restrict(account_id: str) -> BaseResponse:
    body: dict[str, object] = {"note": request.form.get("note", "")}
    _expiry_from_hours(body, maximum=MAX_RESTRICTION_HOURS)
    form = validate(RestrictIn, body, "form")
    assert isinstance(form, RestrictIn)  # noqa: S101
    review_service(deps()).restrict(account_id, operator=current_operator(), note=form.note,
                                    expires_at=form.expires_at)
    return redirect(url_for("console.account", account_id=account_id), code=303)


@bp.post("/accounts/<account:account_id>/lift-restriction")
@console_page(Permission.LOCKS_WRITE)
def lift_restriction(account_id: str) -> BaseResponse:
    review_service(deps()).lift_restriction(account_id, operator=current_operator())
    return redirect(url_for("console.account", account_id=account_id), code=303)
