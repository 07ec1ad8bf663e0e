"""Console appeal pages: the appeal list, an appeal case, claims, the approve/reject forms and operator replies.

They use the same ``AppealCases`` reader and the same ``decide``/``reply`` helpers as
``/v1/review/appeals``, and validate forms with the same pydantic models, so the console cannot do
anything the JSON API would refuse. Permissions and CSRF: ``console_page`` (the one ``authorize``).
"""

from __future__ import annotations

import uuid

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from security.appeals.states import OPEN_STATES, AppealState
from security.console.views import NAV_ITEMS, NavItem, bp, filter_query, safe_next
from security.locks.states import LockKind
from security.operators.auth import console_page, current_operator
from security.operators.policy import Permission
from security.review.appeal_cases import MAX_APPEAL_PAGE_SIZE, AppealOrder
from security.review.appeal_schemas import AppealQuery, DecisionIn, ReplyIn
from security.review.appeals import appeal_cases, appeal_filter, claim, decide, release_claim, reply
from security.web.api import validate
from security.web.deps import deps

APPROVE = "approve"
REJECT = "reject"

# Right after the lock queue (``cases``, imported after this module, inserts "Queue" at 1 before it).
NAV_ITEMS.insert(1, NavItem("console.appeals", "Appeals", Permission.CASES_READ))


@bp.get("/appeals")
@console_page(Permission.CASES_READ)
def appeals() -> str:
    query, base = filter_query(AppealQuery)
    page = appeal_cases(deps()).queue(appeal_filter(query))
    return render_template(
        "console/appeals.html", page=page, query=query, base=base, states=list(AppealState),
        kinds=list(LockKind), orders=list(AppealOrder), max_page_size=MAX_APPEAL_PAGE_SIZE, open_states=OPEN_STATES,
    )


@bp.get("/appeals/<uuid:appeal_id>")
@console_page(Permission.CASES_READ)
def appeal(appeal_id: uuid.UUID) -> str:
    found = appeal_cases(deps()).case(appeal_id)
    me = str(current_operator().id)
    return render_template("console/appeal.html", c=found, already_reviewed=me in found.reviewed_by,
                           open_states=OPEN_STATES)


@bp.post("/appeals/<uuid:appeal_id>/decision")
@console_page(Permission.APPEALS_DECIDE)
def appeal_decision(appeal_id: uuid.UUID) -> BaseResponse:
    choice = request.form.get("outcome", "")
    form = validate(DecisionIn, {
        # Anything but the two buttons' values is refused by the model (approve must be a boolean).
        "approve": {APPROVE: True, REJECT: False}.get(choice, choice),
        "note": request.form.get("note") or None,
        "user_reason": request.form.get("user_reason") or None,
        "expected_version": request.form.get("version", "").strip(),
    }, "form")
    assert isinstance(form, DecisionIn)  # noqa: S101
    decide(deps(), appeal_id, current_operator(), form)
    return redirect(url_for("console.appeal", appeal_id=appeal_id), code=303)


@bp.post("/appeals/<uuid:appeal_id>/messages")
@console_page(Permission.APPEALS_REPLY)
def appeal_reply(appeal_id: uuid.UUID) -> BaseResponse:
    form = validate(ReplyIn, {"body": request.form.get("body", "")}, "form")
    assert isinstance(form, ReplyIn)  # noqa: S101
    reply(deps(), appeal_id, current_operator(), form)
    return redirect(url_for("console.appeal", appeal_id=appeal_id) + "#conversation", code=303)


@bp.post("/appeals/<uuid:appeal_id>/claim")
@console_page(Permission.CASES_CLAIM)
def appeal_claim(appeal_id: uuid.UUID) -> BaseResponse:
    claim(deps(), appeal_id, current_operator())
    return redirect(safe_next(request.form.get("next"), url_for("console.appeal", appeal_id=appeal_id)), code=303)


@bp.post("/appeals/<uuid:appeal_id>/release")
@console_page(Permission.CASES_CLAIM)
def appeal_release(appeal_id: uuid.UUID) -> BaseResponse:
    release_claim(deps(), appeal_id, current_operator())
    return redirect(safe_next(request.form.get("next"), url_for("console.appeal", appeal_id=appeal_id)), code=303)
