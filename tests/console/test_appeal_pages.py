"""Console appeal pages: list, case page, approve/reject forms (four-eyes, CSRF, roles), replies."""

from __future__ import annotations

import re
import uuid

from security.appeals.models import Appeal
from security.locks.models import Lock
from security.locks.states import LockKind
from tests.appeals.conftest import create_account, place_lock, submit
from tests.console.test_cases_pages import csrf, sign_in
from tests.review.test_appeals_review import ready_for_review


def appeal_page(client, appeal_id):
    response = client.get(f"/console/appeals/{appeal_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def post_decision(client, appeal_id, **fields):
    page = appeal_page(client, appeal_id)
    version = re.search(r'name="version" value="(\d+)"', page)
    data = {"csrf_token": csrf(client, f"/console/appeals/{appeal_id}"),
            "version": version.group(1) if version else "1", **fields}
    return client.post(f"/console/appeals/{appeal_id}/decision", data=data)


def state_of(db_session, appeal_id) -> str:
    db_session.expire_all()
    return db_session.get(Appeal, uuid.UUID(appeal_id)).state


def test_list_and_case_page_show_what_a_reviewer_needs(api, client, db_session, settings, clock, new_operator):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-page", LockKind.USER_REPORTED,
                                    statement="My laptop was stolen <b>yesterday</b>.")
    sign_in(client, new_operator("rita", "reviewer"), clock)
    listing = client.get("/console/appeals").get_data(as_text=True)
    assert 'href="/console/appeals"' in listing  # in the navigation
    assert f"/console/appeals/{appeal.appeal_id}" in listing
    assert "pending_review" in listing
    page = appeal_page(client, appeal.appeal_id)
    # The statement is escaped (no markup from users reaches the console).
    assert "My laptop was stolen &lt;b&gt;yesterday&lt;/b&gt;." in page
    assert "contact_code" in page
    assert "identity_document" in page
    assert lock.reference in page
    assert "0 of 2" in page
    assert 'id="approve"' in page
    assert 'id="reject"' in page
    assert 'id="reject-reason" name="user_reason" required' in page


def test_two_reviewers_approve_in_the_console_and_one_cannot_twice(
    api, client, app, db_session, settings, clock, new_operator,
):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-two", LockKind.USER_REPORTED)
    rita, sam = new_operator("rita", "reviewer"), new_operator("sam", "reviewer")
    sign_in(client, rita, clock)
    first = post_decision(client, appeal.appeal_id, outcome="approve", note="document ok")
    assert first.status_code == 303
    page = appeal_page(client, appeal.appeal_id)
    assert 'id="four-eyes-note"' in page
    assert 'id="approve"' not in page
    # A forged second approval by the same reviewer is refused by the service (four-eyes).
    forged = client.post(f"/console/appeals/{appeal.appeal_id}/decision", data={
        "csrf_token": csrf(client, f"/console/appeals/{appeal.appeal_id}"), "outcome": "approve",
        "version": str(db_session.get(Appeal, uuid.UUID(appeal.appeal_id)).version)})
    assert forged.status_code == 409
    assert state_of(db_session, appeal.appeal_id) == "pending_review"

    other = app.test_client()
    sign_in(other, sam, clock)
    assert post_decision(other, appeal.appeal_id, outcome="approve").status_code == 303
    assert state_of(db_session, appeal.appeal_id) == "approved"
    done = appeal_page(other, appeal.appeal_id)
    assert "reset_password, enroll_totp" in done
    assert "rita</strong> approved" in done
    assert "sam</strong> approved" in done


def test_reject_needs_the_user_reason_and_keeps_the_lock(api, client, db_session, settings, clock, new_operator):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-rej", LockKind.USER_REPORTED)
    sign_in(client, new_operator("rita", "reviewer"), clock)
    missing = post_decision(client, appeal.appeal_id, outcome="reject", note="looks fake")
    assert missing.status_code == 400
    assert state_of(db_session, appeal.appeal_id) == "pending_review"
    rejected = post_decision(client, appeal.appeal_id, outcome="reject", note="looks fake",
                             user_reason="We could not confirm your identity.")
    assert rejected.status_code == 303
    assert state_of(db_session, appeal.appeal_id) == "rejected"
    db_session.expire_all()
    assert db_session.get(Lock, lock.id).status == "active"
    assert appeal.get().get_json()["decision"]["reason"] == "We could not confirm your identity."
    assert post_decision(client, appeal.appeal_id, outcome="maybe").status_code == 422


def test_viewer_sees_no_decision_buttons_and_forged_posts_are_refused(
    api, client, db_session, settings, clock, new_operator,
):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-view", LockKind.USER_REPORTED)
    sign_in(client, new_operator("vera", "viewer"), clock)
    page = appeal_page(client, appeal.appeal_id)
    assert 'id="read-only"' in page
    assert 'id="approve"' not in page
    assert 'id="reject"' not in page
    assert 'id="reply-form"' not in page
    token = csrf(client, f"/console/appeals/{appeal.appeal_id}")
    forged = client.post(f"/console/appeals/{appeal.appeal_id}/decision",
                         data={"csrf_token": token, "outcome": "approve", "version": "1"})
    assert forged.status_code == 403
    reply = client.post(f"/console/appeals/{appeal.appeal_id}/messages", data={"csrf_token": token, "body": "x"})
    assert reply.status_code == 403
    assert state_of(db_session, appeal.appeal_id) == "pending_review"


def test_posts_without_the_csrf_token_are_refused(api, client, db_session, settings, clock, new_operator):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-csrf", LockKind.USER_REPORTED)
    sign_in(client, new_operator("rita", "reviewer"), clock)
    response = client.post(f"/console/appeals/{appeal.appeal_id}/decision",
                           data={"outcome": "approve", "version": "1"})
    assert response.status_code == 403
    assert state_of(db_session, appeal.appeal_id) == "pending_review"


def test_reply_is_shown_to_the_user(api, client, db_session, settings, clock, new_operator):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-reply", LockKind.USER_REPORTED)
    sign_in(client, new_operator("rita", "reviewer"), clock)
    token = csrf(client, f"/console/appeals/{appeal.appeal_id}")
    sent = client.post(f"/console/appeals/{appeal.appeal_id}/messages",
                       data={"csrf_token": token, "body": "We are checking your document."})
    assert sent.status_code == 303
    assert "We are checking your document." in appeal_page(client, appeal.appeal_id)
    messages = appeal.get().get_json()["messages"]
    assert messages[-1] == {"author": "operator", "body": "We are checking your document.",
                            "created_at": messages[-1]["created_at"]}
    empty = client.post(f"/console/appeals/{appeal.appeal_id}/messages", data={"csrf_token": token, "body": ""})
    assert empty.status_code == 422


def test_unlock_in_the_console_closes_the_open_appeal(api, client, db_session, settings, clock, new_operator):
    create_account(api, "acc-unlock", email="unlock@example.com", phone="+4915100000004")
    lock = place_lock(db_session, clock, "acc-unlock", LockKind.RISK)
    appeal = submit(client, "acc-unlock")
    sign_in(client, new_operator("rita", "reviewer"), clock)
    response = client.post(f"/console/locks/{lock.id}/unlock", data={
        "csrf_token": csrf(client), "note": "owner called in", "version": str(lock.version)})
    assert response.status_code == 303
    assert state_of(db_session, appeal.appeal_id) == "released"
    page = appeal_page(client, appeal.appeal_id)
    assert "lock_released: submitted → released by operator:" in page


def test_claim_and_release_an_appeal_in_the_console(api, client, db_session, settings, clock, new_operator):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-claim", LockKind.USER_REPORTED)
    sign_in(client, new_operator("rita", "reviewer"), clock)
    listing = client.get("/console/appeals").get_data(as_text=True)
    assert f'action="/console/appeals/{appeal.appeal_id}/claim"' in listing
    page = appeal_page(client, appeal.appeal_id)
    assert 'id="claim-form"' in page
    token = csrf(client, f"/console/appeals/{appeal.appeal_id}")
    claimed = client.post(f"/console/appeals/{appeal.appeal_id}/claim",
                          data={"csrf_token": token, "next": "/console/appeals?order=age"})
    assert (claimed.status_code, claimed.headers["Location"]) == (303, "/console/appeals?order=age")
    page = appeal_page(client, appeal.appeal_id)
    assert '<dd id="claimed-by">rita</dd>' in page
    assert 'id="release-form"' in page
    listing = client.get("/console/appeals").get_data(as_text=True)
    assert f'action="/console/appeals/{appeal.appeal_id}/release"' in listing

    # Another reviewer sees who holds it, gets no claim button, and a forged claim is refused.
    client.post("/console/sign-out", data={"csrf_token": token})
    sign_in(client, new_operator("omar", "reviewer"), clock)
    page = appeal_page(client, appeal.appeal_id)
    assert '<dd id="claimed-by">rita</dd>' in page
    assert 'id="claim-form"' not in page and 'id="release-form"' not in page
    other = csrf(client, f"/console/appeals/{appeal.appeal_id}")
    refused = client.post(f"/console/appeals/{appeal.appeal_id}/claim", data={"csrf_token": other})
    assert refused.status_code == 409
    assert "claimed by rita" in refused.get_data(as_text=True)
    assert client.post(f"/console/appeals/{appeal.appeal_id}/release", data={"csrf_token": other}).status_code == 403
    assert client.post(f"/console/appeals/{appeal.appeal_id}/claim", data={}).status_code == 403  # no CSRF token


def test_a_viewer_gets_no_claim_buttons(api, client, db_session, settings, clock, new_operator):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-vclaim", LockKind.USER_REPORTED)
    sign_in(client, new_operator("vera", "viewer"), clock)
    page = appeal_page(client, appeal.appeal_id)
    assert 'id="claim-form"' not in page
    assert "/claim" not in client.get("/console/appeals").get_data(as_text=True)
    token = csrf(client, f"/console/appeals/{appeal.appeal_id}")
    assert client.post(f"/console/appeals/{appeal.appeal_id}/claim", data={"csrf_token": token}).status_code == 403
