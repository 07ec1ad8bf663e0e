"""``/v1/review/appeals``: the appeal queue, a case, decisions (four-eyes, versions, roles), replies."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from security.appeals.models import Appeal
from security.audit.models import AuditEntry
from security.audit.services import verify_audit_log
from security.credentials import totp
from security.locks.models import Lock
from security.locks.states import LockKind
from security.operators.models import Operator
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.appeals.conftest import (
    DOCUMENT,
    NEW_PASSWORD,
    PASSWORD,
    AppealClient,
    create_account,
    last_code,
    place_lock,
    submit,
)
from tests.conftest import ApiClient, issue_key
from tests.operators.factories import make_operator
from tests.review.test_races import STEP, race

REVIEW = "/v1/review/appeals"


def operator_id(db_session, name: str) -> str:
    return str(db_session.scalar(select(Operator.id).where(Operator.name == name)))


def ready_for_review(api, client, db_session, settings, clock, account_id: str, kind: LockKind,
                     statement: str = "Someone else logged in, not me.") -> tuple[AppealClient, Lock]:
    """A locked account whose owner appealed and proved contact code + identity document."""
    owner = create_account(api, account_id, email=f"{account_id}@example.com", phone="+4915112345678")
    lock = place_lock(db_session, clock, account_id, kind)
    appeal = submit(client, account_id, statement)
    code = appeal.verify(method="contact_code", code=last_code(db_session, settings, owner.email))
    assert code.status_code == 200, code.get_json()
    document = appeal.verify(method="identity_document", document=DOCUMENT)
    assert document.status_code == 200, document.get_json()
    assert document.get_json()["state"] == "pending_review"
    return appeal, lock


def case(client, headers, appeal_id):
    response = client.get(f"{REVIEW}/{appeal_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def decide(client, headers, appeal_id, **body):
    return client.post(f"{REVIEW}/{appeal_id}/decision", json=body, headers=headers)


def test_four_eyes_one_reviewer_twice_is_409_two_reviewers_approve(
    api, client, db_session, settings, clock, ops,
):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-4eyes", LockKind.USER_REPORTED)
    seen = case(client, ops["alice"], appeal.appeal_id)
    assert (seen["approvals_given"], seen["approvals_required"]) == (0, 2)

    first = decide(client, ops["alice"], appeal.appeal_id, approve=True, note="document matches",
                   expected_version=seen["version"])
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["state"] == "pending_review"
    assert first.get_json()["approvals_given"] == 1

    again = decide(client, ops["alice"], appeal.appeal_id, approve=True, expected_version=first.get_json()["version"])
    assert again.status_code == 409
    assert again.get_json()["code"] == "four_eyes_violation"

    second = decide(client, ops["bruno"], appeal.appeal_id, approve=True, user_reason="Identity confirmed.",
                    expected_version=first.get_json()["version"])
    assert second.status_code == 200, second.get_json()
    body = second.get_json()
    assert body["state"] == "approved"
    assert [r["operator_name"] for r in body["reviews"]] == ["alice", "bruno"]
    assert body["actions_left"] == ["reset_password", "enroll_totp"]
    assert body["lock"]["status"] == "awaiting_actions"

    # Both decisions are audited under the deciding operator's id.
    actors = db_session.scalars(select(AuditEntry.actor).where(
        AuditEntry.action == "appeal:review:recorded", AuditEntry.subject_id == appeal.appeal_id)).all()
    assert actors == [f"operator:{operator_id(db_session, 'alice')}", f"operator:{operator_id(db_session, 'bruno')}"]
    assert verify_audit_log(db_session)[1] is None

    # The user finishes the required actions with the appeal token; the lock is released.
    assert appeal.post("/password", {"new_password": NEW_PASSWORD}).status_code == 200
    secret = appeal.post("/totp").get_json()["secret"]
    assert appeal.post("/totp/confirm", {"code": totp.code_at(secret, clock.now())}).status_code == 200
    done = case(client, ops["vera"], appeal.appeal_id)
    assert done["state"] == "released"
    assert done["lock"]["status"] == "released"


def test_stale_version_is_409_and_nothing_is_recorded(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-stale", LockKind.USER_REPORTED)
    seen = case(client, ops["alice"], appeal.appeal_id)
    assert appeal.post("/messages", {"body": "One more thing: I lost my phone."}).status_code == 201
    stale = decide(client, ops["alice"], appeal.appeal_id, approve=True, expected_version=seen["version"])
    assert stale.status_code == 409
    assert stale.get_json()["code"] == "stale_version"
    after = case(client, ops["alice"], appeal.appeal_id)
    assert after["reviews"] == []
    assert after["messages"][-1]["body"] == "One more thing: I lost my phone."


def test_viewer_reads_but_cannot_decide_or_reply(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-viewer", LockKind.USER_REPORTED)
    seen = case(client, ops["vera"], appeal.appeal_id)
    refused = decide(client, ops["vera"], appeal.appeal_id, approve=True, expected_version=seen["version"])
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "permission_denied"
    reply = client.post(f"{REVIEW}/{appeal.appeal_id}/messages", json={"body": "hi"}, headers=ops["vera"])
    assert reply.status_code == 403
    assert case(client, ops["alice"], appeal.appeal_id)["version"] == seen["version"]
    assert client.get(REVIEW).status_code == 401


def test_reject_needs_a_user_reason_keeps_the_lock_and_the_user_sees_the_reason(
    api, client, db_session, settings, clock, ops,
):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-reject", LockKind.USER_REPORTED)
    version = case(client, ops["alice"], appeal.appeal_id)["version"]
    missing = decide(client, ops["alice"], appeal.appeal_id, approve=False, note="fake", expected_version=version)
    assert missing.status_code == 400
    assert missing.get_json()["code"] == "user_reason_required"
    rejected = decide(client, ops["alice"], appeal.appeal_id, approve=False, note="internal: mule pattern",
                      user_reason="The document does not match our records.", expected_version=version)
    assert rejected.status_code == 200, rejected.get_json()
    assert rejected.get_json()["state"] == "rejected"
    assert rejected.get_json()["lock"]["status"] == "active"

    seen_by_user = appeal.get()
    assert seen_by_user.status_code == 200
    body = seen_by_user.get_json()
    assert body["decision"] == {"outcome": "rejected", "reason": "The document does not match our records.",
                                "decided_at": body["decision"]["decided_at"]}
    assert "mule" not in seen_by_user.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(Lock, lock.id).status == "active"
    late = decide(client, ops["bruno"], appeal.appeal_id, approve=True,
                  expected_version=rejected.get_json()["version"])
    assert late.status_code == 409
    assert late.get_json()["code"] == "appeal_not_reviewable"


def test_case_shows_statement_verifications_needs_lock_reasons_and_conversation(
    api, client, db_session, settings, clock, ops,
):
    owner = create_account(api, "acc-case", email="case@example.com", phone="+4915100000001")
    place_lock(db_session, clock, owner.account_id, LockKind.USER_REPORTED,
               reasons=[{"rule": "user.reported", "detail": "Owner says the phone was stolen"}])
    appeal = submit(client, owner.account_id, "My phone was stolen on Monday.")
    assert appeal.verify(method="contact_code", code="000000").status_code == 400  # a counted failure
    assert appeal.verify(method="contact_code",
                         code=last_code(db_session, settings, owner.email)).status_code == 200
    body = case(client, ops["vera"], appeal.appeal_id)
    assert body["statement"] == "My phone was stolen on Monday."
    assert body["state"] == "verifying"
    [code] = body["verifications"]
    assert (code["method"], code["attempts"], code["failures"]) == ("contact_code", 2, 1)
    assert code["verified_at"] is not None
    assert body["needed"]["next_step"] == "verify"
    assert body["needed"]["verifications"] == [["identity_document"]]
    assert body["lock"]["kind"] == "user_reported"
    assert body["lock"]["reasons"][0]["detail"] == "Owner says the phone was stolen"
    assert [h["to_state"] for h in body["history"]] == ["verifying"]

    sent = client.post(f"{REVIEW}/{appeal.appeal_id}/messages", json={"body": "Please upload your ID number."},
                       headers=ops["alice"])
    assert sent.status_code == 201, sent.get_json()
    assert sent.get_json()["messages"][-1]["author"] == "operator"
    assert sent.get_json()["messages"][-1]["author_id"] == operator_id(db_session, "alice")
    user_view = appeal.get().get_json()
    assert [(m["author"], m["body"]) for m in user_view["messages"]] == [
        ("user", "My phone was stolen on Monday."), ("operator", "Please upload your ID number.")]
    audited = db_session.scalars(select(AuditEntry.actor).where(
        AuditEntry.action == "appeal:message:posted", AuditEntry.subject_id == appeal.appeal_id)).all()
    assert f"operator:{operator_id(db_session, 'alice')}" in audited


def test_queue_puts_review_first_then_risk_then_age_with_filters_and_pages(
    api, cases, client, db_session, settings, clock, ops,
):
    # Oldest: an operator lock whose appeal is only submitted (score 0).
    create_account(api, "acc-old", email="old@example.com", phone="+4915100000002")
    place_lock(db_session, clock, "acc-old", LockKind.OPERATOR)
    old = submit(client, "acc-old")
    clock.advance(minutes=5)
    # A risk-engine lock (critical score) appealed but not verified.
    cases.risk_lock("acc-risky")
    risky = submit(client, "acc-risky")
    clock.advance(minutes=5)
    # Newest, lowest risk, but waiting for a review: first.
    waiting, _ = ready_for_review(api, client, db_session, settings, clock, "acc-wait", LockKind.USER_REPORTED)
    # A decoy (no such account) is never a case.
    submit(client, "nobody@example.com")

    listed = client.get(REVIEW, headers=ops["vera"]).get_json()
    assert [i["appeal_id"] for i in listed["items"]] == [waiting.appeal_id, risky.appeal_id, old.appeal_id]
    assert listed["total"] == 3
    assert listed["items"][1]["score"] == 100
    assert (listed["items"][0]["approvals_given"], listed["items"][0]["approvals_required"]) == (0, 2)
    assert listed["items"][0]["state"] == "pending_review"
    by_age = client.get(f"{REVIEW}?order=age", headers=ops["vera"]).get_json()
    assert [i["appeal_id"] for i in by_age["items"]] == [waiting.appeal_id, old.appeal_id, risky.appeal_id]

    def ids(query: str) -> list[str]:
        response = client.get(f"{REVIEW}?{query}", headers=ops["vera"])
        assert response.status_code == 200, response.get_json()
        return [i["appeal_id"] for i in response.get_json()["items"]]

    assert ids("state=pending_review") == [waiting.appeal_id]
    assert ids("kind=risk") == [risky.appeal_id]
    assert ids("account_id=acc-old") == [old.appeal_id]
    assert ids("min_score=50") == [risky.appeal_id]
    page2 = client.get(f"{REVIEW}?per_page=2&page=2", headers=ops["vera"]).get_json()
    assert ([i["appeal_id"] for i in page2["items"]], page2["pages"]) == ([old.appeal_id], 2)
    bad = client.get(f"{REVIEW}?state=bogus", headers=ops["vera"])
    assert bad.status_code == 422

    # Closed appeals leave the default list and stay reachable with include_closed.
    assert old.post("/withdraw").status_code in (200, 204)
    assert old.appeal_id not in ids("")
    assert old.appeal_id in ids("include_closed=true")


def test_manual_unlock_closes_the_open_appeal_at_once(api, client, db_session, settings, clock, ops):
    owner = create_account(api, "acc-unlock", email="unlock@example.com", phone="+4915100000003")
    lock = place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.account_id)
    unlocked = client.post(f"/v1/review/locks/{lock.id}/unlock",
                           json={"note": "false positive", "version": lock.version}, headers=ops["alice"])
    assert unlocked.status_code == 200, unlocked.get_json()
    db_session.expire_all()
    row = db_session.get(Appeal, uuid.UUID(appeal.appeal_id))
    assert row.state == "released"
    assert row.open_lock_id is None
    body = case(client, ops["vera"], appeal.appeal_id)
    assert body["history"][-1]["actor"] == f"operator:{operator_id(db_session, 'alice')}"
    assert body["history"][-1]["event"] == "lock_released"


def test_unknown_appeal_is_404_and_bad_bodies_422(client, ops):
    missing = client.get(f"{REVIEW}/{uuid.uuid4()}", headers=ops["vera"])
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "appeal_not_found"
    no_version = decide(client, ops["alice"], uuid.uuid4(), approve=True)
    assert no_version.status_code == 422
    extra = decide(client, ops["alice"], uuid.uuid4(), approve=True, expected_version=1, sneaky=True)
    assert extra.status_code == 422
    assert decide(client, ops["alice"], uuid.uuid4(), approve=True, expected_version=1).status_code == 404


def test_openapi_lists_the_review_appeal_operations(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"get"} <= set(paths["/v1/review/appeals"])
    assert "post" in paths["/v1/review/appeals/{appeal_id}/decision"]
    assert "post" in paths["/v1/review/appeals/{appeal_id}/messages"]


def test_simultaneous_decisions_have_one_winner(live_app, clock):
    """Two reviewers approve the same version at the same moment: one approval counts, the other is 409."""
    session = runtime(live_app).session_factory()
    try:
        key = issue_key(session, clock, "backend", ALL_SCOPES)
        ops = [make_operator(live_app, session, clock, name, "reviewer") for name in ("rita", "omar")]
    finally:
        session.close()
    user = live_app.test_client()
    create_account(ApiClient(live_app.test_client(), key), "acc-race", email="race@example.com", phone="+4915100000009")
    assert user.post("/v1/freeze", json={"identifier": "acc-race", "password": PASSWORD}).status_code in (200, 202)
    appeal = submit(user, "acc-race")
    session = runtime(live_app).session_factory()
    try:
        code = last_code(session, runtime(live_app).settings, "race@example.com")
    finally:
        session.close()
    assert appeal.verify(method="contact_code", code=code).status_code == 200
    assert appeal.verify(method="identity_document", document=DOCUMENT).get_json()["state"] == "pending_review"
    headers = []
    for op in ops:
        clock.advance(STEP)
        token = user.post("/v1/review/tokens", json={
            "name": op.name, "password": op.password, "totp_code": op.code(clock.now())}).get_json()["token"]
        headers.append({"Authorization": f"Bearer {token}"})
    version = case(user, headers[0], appeal.appeal_id)["version"]
    url = f"{REVIEW}/{appeal.appeal_id}/decision"
    body = {"approve": True, "expected_version": version}
    assert race(live_app, [("post", url, {"json": body, "headers": h}) for h in headers]) == [200, 409]
    after = case(user, headers[0], appeal.appeal_id)
    assert (after["state"], after["approvals_given"], len(after["reviews"])) == ("pending_review", 1, 1)


def test_a_claim_on_the_lock_shows_on_its_appeal(api, client, db_session, settings, clock, ops):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-claim", LockKind.USER_REPORTED)
    assert client.post(f"/v1/review/locks/{lock.id}/claim", headers=ops["alice"]).status_code == 200
    [item] = client.get(REVIEW, headers=ops["vera"]).get_json()["items"]
    assert (item["appeal_id"], item["claimed_by"]) == (appeal.appeal_id, "alice")


def test_decoy_appeals_are_no_cases(client, ops):
    decoy = submit(client, "nobody@example.com")
    assert client.get(REVIEW, headers=ops["vera"]).get_json()["total"] == 0
    body = case(client, ops["vera"], decoy.appeal_id)
    assert (body["account_id"], body["lock"]) == (None, None)
    answer = client.post(f"{REVIEW}/{decoy.appeal_id}/messages", json={"body": "hello?"}, headers=ops["alice"])
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "appeal_not_a_case"
    refused = decide(client, ops["alice"], decoy.appeal_id, approve=True, expected_version=body["version"])
    assert refused.status_code == 409
    assert refused.get_json()["code"] == "appeal_not_reviewable"


def test_decision_version_may_be_sent_as_version_and_is_required(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-alias", LockKind.USER_REPORTED)
    seen = case(client, ops["alice"], appeal.appeal_id)
    missing = decide(client, ops["alice"], appeal.appeal_id, approve=True)
    assert missing.status_code == 422
    accepted = decide(client, ops["alice"], appeal.appeal_id, approve=True, version=seen["version"])
    assert accepted.status_code == 200, accepted.get_json()
    assert accepted.get_json()["approvals_given"] == 1
    schema = client.get("/openapi.json").get_json()["components"]["schemas"]["DecisionIn"]
    assert "expected_version" in schema["required"]


def test_nul_characters_are_refused_before_anything_is_written(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-nul", LockKind.USER_REPORTED)
    version = case(client, ops["alice"], appeal.appeal_id)["version"]
    for body in ({"approve": False, "user_reason": "no\x00", "expected_version": version},
                 {"approve": True, "note": "\x00", "expected_version": version}):
        assert decide(client, ops["alice"], appeal.appeal_id, **body).status_code == 422
    reply = client.post(f"{REVIEW}/{appeal.appeal_id}/messages", json={"body": "hi\x00"}, headers=ops["alice"])
    assert reply.status_code == 422
    assert client.get(f"{REVIEW}?account_id=a%00b", headers=ops["vera"]).status_code == 422
    after = case(client, ops["alice"], appeal.appeal_id)
    assert (after["version"], after["reviews"], len(after["messages"])) == (version, [], 2)
