"""Appeals over HTTP: every lock kind's happy path, refusals, no enumeration, four-eyes, rejections."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.appeals.interfaces import FourEyesViolation, NotReviewable, ReasonRequired
from security.appeals.models import Appeal, AppealVerification
from security.audit.models import AuditEntry
from security.audit.services import verify_audit_log
from security.clock import FrozenClock
from security.config import Settings
from security.credentials import totp
from security.errors import StaleVersion
from security.locks.models import Lock
from security.locks.states import LockKind
from security.runtime import runtime
from tests.appeals.conftest import (
    DOCUMENT,
    NEW_PASSWORD,
    AppealClient,
    Owner,
    add_transactions,
    decide,
    last_code,
    lock_service,
    messages,
    place_lock,
    submit,
    webhooks,
)


def account_status(db_session: Session, account_id: str) -> str:
    db_session.expire_all()
    account = db_session.get(Account, account_id)
    assert account is not None
    return account.status


def lock_of(db_session: Session, lock_id: uuid.UUID) -> Lock:
    db_session.expire_all()
    lock = db_session.get(Lock, lock_id)
    assert lock is not None
    return lock


def pass_contact_code(appeal: AppealClient, db_session: Session, settings: Settings, owner: Owner, *,
                      to: str | None = None) -> dict:
    response = appeal.verify(method="contact_code", code=last_code(db_session, settings, to or owner.email))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- happy paths ------------------------------------------------------------------------------------


def test_brute_force_contact_code_then_password_reset_releases(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    lock = place_lock(db_session, clock, owner.account_id, LockKind.BRUTE_FORCE)
    appeal = submit(client, owner.email)

    before = appeal.get().get_json()
    assert before["state"] == "submitted"
    assert before["case"] is None
    assert before["needed"] == {"next_step": "verify", "verifications": [["contact_code"]], "actions": [],
                                "approvals_required": None, "approvals_given": None}
    assert before["messages"][0]["body"] == "It was not me, please unlock."

    after = pass_contact_code(appeal, db_session, settings, owner)
    # No review for brute force: approved at once, the password reset is what is left.
    assert after["state"] == "approved"
    assert after["case"]["reference"] == lock.reference
    assert after["case"]["reason"] == "Too many failed sign-in attempts."
    assert after["needed"]["actions"] == ["reset_password"]
    assert after["decision"]["outcome"] == "approved"
    assert lock_of(db_session, lock.id).status == "awaiting_actions"
    assert account_status(db_session, owner.account_id) == "locked"
    decided = webhooks(db_session, "appeal.decided")
    assert [(d["decision"], d["automatic"]) for d in decided] == [("approved", True)]

    reset = appeal.post("/password", {"new_password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.get_json()
    assert reset.get_json()["state"] == "released"
    assert account_status(db_session, owner.account_id) == "active"
    assert lock_of(db_session, lock.id).status == "released"
    assert [w["account_id"] for w in webhooks(db_session, "account.unlocked")] == [owner.account_id]
    account = db_session.get(Account, owner.account_id)
    assert account is not None
    assert runtime(app).password_hasher.verify(account.password_hash, NEW_PASSWORD).ok
    count, broken = verify_audit_log(db_session)
    assert broken is None
    assert count > 10


def test_risk_contact_code_and_recent_transaction_then_one_review(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    add_transactions(db_session, owner.account_id, [
        ("250.00", clock.now() - timedelta(days=2)), ("80.00", clock.now() - timedelta(days=1)),
    ])
    lock = place_lock(db_session, clock, owner.account_id, LockKind.RISK,
                      reasons=[{"rule": "tx.new_payee_large", "detail": "Large transfer to a new payee"}])
    appeal = submit(client, owner.phone)

    # Named by phone number: the code goes by SMS.
    after_code = pass_contact_code(appeal, db_session, settings, owner, to=owner.phone)
    assert after_code["state"] == "verifying"
    assert after_code["case"]["details"] == ["Large transfer to a new payee"]
    assert after_code["needed"]["verifications"] == [["totp", "recovery_code", "recent_transaction",
                                                      "identity_document"]]
    day = (clock.now() - timedelta(days=2)).date().isoformat()
    within_one_percent = appeal.verify(method="recent_transaction", amount="252.40", date=day)
    assert within_one_percent.status_code == 200, within_one_percent.get_json()
    body = within_one_percent.get_json()
    assert body["state"] == "pending_review"
    assert body["needed"] == {"next_step": "review", "verifications": [], "actions": [],
                              "approvals_required": 1, "approvals_given": 0}
    assert [v["method"] for v in body["verifications"]] == ["contact_code", "recent_transaction"]
    assert account_status(db_session, owner.account_id) == "locked"

    decide(app, appeal.appeal_id, "op-1", True, reason="Thanks for confirming.", note="matched tx")
    final = appeal.get().get_json()
    assert final["state"] == "released"
    assert final["decision"]["reason"] == "Thanks for confirming."
    assert account_status(db_session, owner.account_id) == "active"
    assert lock_of(db_session, lock.id).resolution == "appeal_approved"
    assert [d["decision"] for d in webhooks(db_session, "appeal.decided")] == ["approved"]
    assert len(webhooks(db_session, "account.unlocked")) == 1


@pytest.mark.parametrize("kind", [LockKind.USER_REPORTED, LockKind.OPERATOR])
def test_strict_kinds_need_document_two_reviewers_and_actions(
    kind: LockKind, client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
    app: Flask,
) -> None:
    lock = place_lock(db_session, clock, owner.account_id, kind)
    appeal = submit(client, owner.account_id)
    pass_contact_code(appeal, db_session, settings, owner)
    # Recent transactions do not count for this kind.
    refused = appeal.verify(method="recent_transaction", amount="10.00", date="2026-03-01")
    assert refused.status_code == 409
    assert refused.get_json()["code"] == "verification_not_needed"
    document = appeal.verify(method="identity_document", document=DOCUMENT.lower())
    assert document.status_code == 200, document.get_json()
    assert document.get_json()["state"] == "pending_review"

    decide(app, appeal.appeal_id, "op-1", True)
    halfway = appeal.get().get_json()
    assert halfway["state"] == "pending_review"
    assert (halfway["needed"]["approvals_required"], halfway["needed"]["approvals_given"]) == (2, 1)
    with pytest.raises(FourEyesViolation):
        decide(app, appeal.appeal_id, "op-1", True)
    decide(app, appeal.appeal_id, "op-2", True, reason="Identity confirmed.")

    approved = appeal.get().get_json()
    assert approved["state"] == "approved"
    assert approved["needed"]["actions"] == ["reset_password", "enroll_totp"]
    assert account_status(db_session, owner.account_id) == "locked"

    # Release is impossible before every required action is done.
    assert appeal.post("/password", {"new_password": NEW_PASSWORD}).status_code == 200
    assert appeal.get().get_json()["needed"]["actions"] == ["enroll_totp"]
    assert account_status(db_session, owner.account_id) == "locked"
    assert lock_of(db_session, lock.id).status == "awaiting_actions"
    again = appeal.post("/password", {"new_password": NEW_PASSWORD})
    assert again.status_code == 409
    assert again.get_json()["code"] == "action_not_pending"

    started = appeal.post("/totp")
    assert started.status_code == 201, started.get_json()
    secret = started.get_json()["secret"]
    confirmed = appeal.post("/totp/confirm", {"code": totp.code_at(secret, clock.now())})
    assert confirmed.status_code == 200, confirmed.get_json()
    assert len(confirmed.get_json()["recovery_codes"]) == 10
    assert appeal.get().get_json()["state"] == "released"
    assert account_status(db_session, owner.account_id) == "active"
    assert lock_of(db_session, lock.id).resolution == "actions_completed"
    assert len(webhooks(db_session, "account.unlocked")) == 1


def test_enrolling_replaces_an_authenticator_the_attacker_may_have_set(
    client: FlaskClient, api, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
    app: Flask,
) -> None:
    started = api.post(f"/v1/accounts/{owner.account_id}/totp")
    attacker_secret = started.get_json()["secret"]
    api.post(f"/v1/accounts/{owner.account_id}/totp/confirm",
             json={"code": totp.code_at(attacker_secret, clock.now())})
    place_lock(db_session, clock, owner.account_id, LockKind.USER_REPORTED)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    appeal.verify(method="identity_document", document=DOCUMENT)
    decide(app, appeal.appeal_id, "op-1", True)
    decide(app, appeal.appeal_id, "op-2", True)
    secret = appeal.post("/totp").get_json()["secret"]
    assert secret != attacker_secret
    clock.advance(seconds=totp.PERIOD_SECONDS)
    assert appeal.post("/totp/confirm", {"code": totp.code_at(secret, clock.now())}).status_code == 200
    assert [w["reason"] for w in webhooks(db_session, "mfa.disabled")] == ["replaced_by_appeal"]


# --- refusals ---------------------------------------------------------------------------------------


def test_wrong_codes_are_counted_committed_and_limited(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    right = last_code(db_session, settings, owner.email)
    wrong = f"{(int(right) + 1) % 10 ** len(right):0{len(right)}d}"
    for left in (4, 3, 2, 1, 0):
        response = appeal.verify(method="contact_code", code=wrong)
        assert response.status_code == 400
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "verification_failed"
        assert response.get_json()["attempts_left"] == left
    # Limit reached: even the right code is refused now, and nothing was revealed about it.
    exhausted = appeal.verify(method="contact_code", code=right)
    assert exhausted.status_code == 409
    assert exhausted.get_json()["code"] == "verification_attempts_exhausted"
    db_session.expire_all()
    row = db_session.scalar(select(AppealVerification).where(AppealVerification.method == "contact_code"))
    assert row is not None
    assert (row.attempts, row.failures, row.verified_at) == (5, 5, None)
    audited = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "appeal:verification:attempted")).all()
    assert [a.data["outcome"] for a in audited] == ["rejected"] * 5 + ["exhausted"]
    assert appeal.get().get_json()["state"] == "submitted"


def test_other_methods_are_refused_before_the_contact_code(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    response = appeal.verify(method="identity_document", document=DOCUMENT)
    assert response.status_code == 409
    assert response.get_json()["code"] == "verification_not_needed"
    assert db_session.scalar(select(AppealVerification)) is None


def test_expired_code_then_a_new_code(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.BRUTE_FORCE)
    appeal = submit(client, owner.email)
    first = last_code(db_session, settings, owner.email)
    clock.advance(minutes=16)
    expired = appeal.verify(method="contact_code", code=first)
    assert expired.status_code == 400
    assert expired.get_json()["code"] == "code_expired"
    assert appeal.post("/codes").status_code == 202
    second = last_code(db_session, settings, owner.email)
    assert appeal.verify(method="contact_code", code=first).get_json()["code"] in {"verification_failed",
                                                                                    "code_expired"}
    assert appeal.verify(method="contact_code", code=second).status_code == 200


def test_resending_codes_is_limited(client: FlaskClient, db_session: Session, clock: FrozenClock,
                                    owner: Owner) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.BRUTE_FORCE)
    appeal = submit(client, owner.email)
    assert [appeal.post("/codes").status_code for _ in range(3)] == [202, 202, 409]


def test_expired_appeal(client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock,
                        owner: Owner) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    clock.advance(hours=73)
    response = appeal.verify(method="identity_document", document=DOCUMENT)
    assert response.status_code == 409
    assert response.get_json()["code"] == "appeal_expired"
    assert appeal.get().get_json()["state"] == "expired"  # the expiry was committed with the refusal
    assert account_status(db_session, owner.account_id) == "locked"
    # The lock is free for a new appeal.
    fresh = submit(client, owner.email)
    assert pass_contact_code(fresh, db_session, settings, owner)["state"] == "verifying"


def test_tokens_wrong_missing_and_of_another_appeal_get_one_answer(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner, other: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    place_lock(db_session, clock, other.account_id, LockKind.RISK)
    mine = submit(client, owner.email)
    theirs = submit(client, other.email)
    answers = [
        AppealClient(client, theirs.appeal_id, mine.token).get(),  # someone else's id with my token
        AppealClient(client, mine.appeal_id, theirs.token).get(),
        AppealClient(client, mine.appeal_id, "x" * 43).get(),  # wrong token
        AppealClient(client, str(uuid.uuid4()), mine.token).get(),  # no such appeal
        AppealClient(client, theirs.appeal_id, mine.token).verify(method="contact_code", code="123456"),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({a.get_data() for a in answers}) == 1
    assert answers[0].get_json()["code"] == "invalid_appeal_token"
    missing = client.get(f"/v1/appeals/{mine.appeal_id}")
    assert missing.status_code == 401
    # Nothing was counted on the other appeal.
    assert db_session.scalar(select(AppealVerification)) is None


def test_unknown_unlocked_and_locked_identifiers_look_the_same(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner, other: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.USER_REPORTED)
    identifiers = [owner.email, other.email, "ghost@example.com", "+4915100000000", "no-such-account"]
    created = []
    for identifier in identifiers:
        response = client.post("/v1/appeals", json={"identifier": identifier, "statement": "help"},
                               headers={"X-Request-Id": "req-fixed"})
        body = response.get_json()
        created.append(AppealClient(client, body["appeal_id"], body["appeal_token"]))
        masked = response.get_data().replace(body["appeal_id"].encode(), b"ID").replace(
            body["appeal_token"].encode(), b"TOKEN")
        assert (response.status_code, response.mimetype, len(body["appeal_token"])) == (202, "application/json", 43)
        assert masked == b'{"appeal_id":"ID","appeal_token":"TOKEN"}'
    views = {a.get().get_data().replace(a.appeal_id.encode(), b"ID") for a in created}
    assert len(views) == 1
    wrong = {a.verify(method="contact_code", code="000000").get_data() for a in created}
    assert len(wrong) == 1
    not_yet = {a.verify(method="identity_document", document=DOCUMENT).get_data() for a in created}
    assert len(not_yet) == 1
    # Only the locked account got a code.
    assert [m.destination for m in messages(db_session, event_type="contact_code")] == [owner.email]
    appeals = db_session.scalars(select(Appeal)).all()
    assert sorted(a.lock_id is not None for a in appeals) == [False, False, False, False, True]


def test_one_open_appeal_per_lock(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    lock = place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    lost = submit(client, owner.email)
    # A new appeal replaces one that proved nothing yet (the token may have been lost).
    current = submit(client, owner.email)
    assert lost.get().get_json()["state"] == "withdrawn"
    pass_contact_code(current, db_session, settings, owner)
    # Once possession is proven, a further request cannot cancel the progress: it is a decoy.
    codes_before = len(messages(db_session, event_type="contact_code"))
    extra = submit(client, owner.email)
    assert extra.get().get_json()["state"] == "submitted"
    assert len(messages(db_session, event_type="contact_code")) == codes_before
    assert current.verify(method="identity_document", document=DOCUMENT).get_json()["state"] == "pending_review"
    open_appeals = db_session.scalars(select(Appeal).where(Appeal.open_lock_id == lock.id)).all()
    assert [str(a.id) for a in open_appeals] == [current.appeal_id]


def test_rejection_keeps_the_lock_and_shows_the_reason(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    lock = place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    appeal.verify(method="identity_document", document=DOCUMENT)
    with pytest.raises(ReasonRequired):
        decide(app, appeal.appeal_id, "op-1", False)
    decide(app, appeal.appeal_id, "op-1", False, reason="The transfer pattern matches known fraud.",
           note="internal: mule account")
    body = appeal.get().get_json()
    assert body["state"] == "rejected"
    assert body["decision"]["outcome"] == "rejected"
    assert body["decision"]["reason"] == "The transfer pattern matches known fraud."
    assert "mule" not in appeal.get().get_data(as_text=True)
    assert lock_of(db_session, lock.id).status == "active"
    assert account_status(db_session, owner.account_id) == "locked"
    assert [d["decision"] for d in webhooks(db_session, "appeal.decided")] == ["rejected"]
    assert webhooks(db_session, "account.unlocked") == []
    closed = appeal.verify(method="totp", code="123456")
    assert closed.status_code == 409
    assert closed.get_json()["code"] == "appeal_closed"
    with pytest.raises(NotReviewable):
        decide(app, appeal.appeal_id, "op-2", True)


def test_stale_version_and_not_reviewable(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    with pytest.raises(NotReviewable):
        decide(app, appeal.appeal_id, "op-1", True)
    pass_contact_code(appeal, db_session, settings, owner)
    appeal.verify(method="identity_document", document=DOCUMENT)
    db_session.expire_all()
    seen = db_session.get(Appeal, uuid.UUID(appeal.appeal_id))
    assert seen is not None
    appeal.post("/messages", {"body": "Any news?"})  # changes the appeal after the operator looked
    with pytest.raises(StaleVersion):
        decide(app, appeal.appeal_id, "op-1", True, expected_version=seen.version)
    assert appeal.get().get_json()["state"] == "pending_review"


def test_actions_are_refused_before_approval(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.USER_REPORTED)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    for path, body in (("/password", {"new_password": NEW_PASSWORD}), ("/totp", None)):
        response = appeal.post(path, body)
        assert response.status_code == 409
        assert response.get_json()["code"] == "action_not_pending"
    assert account_status(db_session, owner.account_id) == "locked"


def test_conversation_is_kept_on_both_sides(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner, app: Flask,
) -> None:
    from security.appeals.views import appeal_service
    from security.web.deps import deps

    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    posted = appeal.post("/messages", {"body": "I was travelling in Lisbon."})
    assert posted.status_code == 201
    with app.test_request_context():
        d = deps()
        appeal_service(d).reply(uuid.UUID(appeal.appeal_id), "op-7", "Please verify with your ID document.")
        d.session.commit()
    thread = appeal.get().get_json()["messages"]
    assert [(m["author"], m["body"]) for m in thread] == [
        ("user", "It was not me, please unlock."),
        ("user", "I was travelling in Lisbon."),
        ("operator", "Please verify with your ID document."),
    ]
    too_long = appeal.post("/messages", {"body": "x" * 4001})
    assert too_long.status_code == 422


def test_invalid_bodies_are_422_without_writes(client: FlaskClient, db_session: Session, clock: FrozenClock,
                                                owner: Owner) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    bad = [
        {"method": "contact_code"},
        {"method": "contact_code", "code": "123456", "document": "X1234"},
        {"method": "recent_transaction", "amount": "-5", "date": "2026-03-01"},
        {"method": "recent_transaction", "amount": "1e3", "date": "2026-03-01"},
        {"method": "fingerprint", "code": "1"},
    ]
    for body in bad:
        response = appeal.verify(**body)
        assert response.status_code == 422, body
    assert client.post("/v1/appeals", json={"identifier": "", "statement": "x"}).status_code == 422
    assert db_session.scalar(select(AppealVerification)) is None


def test_lock_released_elsewhere_closes_the_appeal(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.BRUTE_FORCE, expires_at=clock.now() + timedelta(minutes=1))
    appeal = submit(client, owner.email)
    clock.advance(minutes=2)
    assert len(lock_service(db_session, clock).expire_due().locks) == 1
    db_session.commit()
    assert appeal.get().get_json()["state"] == "released"


def test_appeals_are_rate_limited_per_identifier(client: FlaskClient) -> None:
    statuses = [client.post("/v1/appeals", json={"identifier": "ghost@example.com", "statement": "x"}).status_code
                for _ in range(6)]
    assert statuses == [202] * 5 + [429]


def test_openapi_documents_the_user_flows(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["appealToken"]["scheme"] == "bearer"
    get_appeal = document["paths"]["/v1/appeals/{appeal_id}"]["get"]
    assert get_appeal["security"] == [{"appealToken": []}]
    assert {"/v1/appeals", "/v1/appeals/{appeal_id}/verifications", "/v1/freeze", "/v1/freeze/codes"} <= set(
        document["paths"])
    assert "security" not in document["paths"]["/v1/appeals"]["post"] or not document["paths"]["/v1/appeals"][
        "post"]["security"]


def test_withdraw_frees_the_lock_for_a_new_appeal(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    lock = place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    withdrawn = appeal.post("/withdraw")
    assert withdrawn.status_code == 200
    assert withdrawn.get_json()["state"] == "withdrawn"
    assert appeal.post("/withdraw").get_json()["code"] == "invalid_appeal_transition"
    assert lock_of(db_session, lock.id).status == "active"
    again = submit(client, owner.email)
    assert pass_contact_code(again, db_session, settings, owner)["state"] == "verifying"


def test_a_stale_contact_code_proof_is_redone_with_a_new_code(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    fresh = appeal.post("/codes")
    assert fresh.status_code == 409  # possession is proven; no new code needed
    clock.advance(hours=25)  # the proof is older than proof_ttl_hours (24)
    assert appeal.get().get_json()["needed"]["verifications"][0] == ["contact_code"]
    assert appeal.post("/codes").status_code == 202
    pass_contact_code(appeal, db_session, settings, owner)
    assert appeal.verify(method="identity_document", document=DOCUMENT).get_json()["state"] == "pending_review"


def test_review_queue_lists_only_appeals_waiting_for_operators(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, other: Owner,
    app: Flask,
) -> None:
    from security.appeals.views import appeal_service
    from security.web.deps import deps

    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    place_lock(db_session, clock, other.account_id, LockKind.RISK)
    waiting = submit(client, owner.email)
    pass_contact_code(waiting, db_session, settings, owner)
    waiting.verify(method="identity_document", document=DOCUMENT)
    submit(client, other.email)  # not verified: not in the queue
    submit(client, "ghost@example.com")  # decoy: never in the queue
    with app.test_request_context():
        assert [str(a.id) for a in appeal_service(deps()).review_queue()] == [waiting.appeal_id]
    decide(app, waiting.appeal_id, "op-1", False, reason="Please call us.", note="odd device")
    with app.test_request_context():
        service = appeal_service(deps())
        assert service.review_queue() == []
        appeal = service.get(uuid.UUID(waiting.appeal_id))
        assert [(r.operator_id, r.approve, r.note) for r in service.reviews(appeal)] == [
            ("op-1", False, "odd device")]
        assert [h.to_state for h in service.history(appeal)] == ["verifying", "pending_review", "rejected"]


def test_expiry_sweep_cli(client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner,
                          app: Flask) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    real = submit(client, owner.email)
    decoy = submit(client, "ghost@example.com")
    clock.advance(hours=71)
    assert app.test_cli_runner().invoke(args=["appeals", "expire"]).output.strip() == "expired 0 appeal(s)"
    clock.advance(hours=2)
    result = app.test_cli_runner().invoke(args=["appeals", "expire"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "expired 2 appeal(s)"
    assert {real.get().get_json()["state"], decoy.get().get_json()["state"]} == {"expired"}
    db_session.expire_all()
    assert db_session.scalar(select(Appeal).where(Appeal.open_lock_id.is_not(None))) is None


@pytest.mark.parametrize("method", ["totp", "recovery_code"])
def test_risk_second_factor_methods(
    method: str, client: FlaskClient, api, db_session: Session, settings: Settings, clock: FrozenClock,
    owner: Owner,
) -> None:
    started = api.post(f"/v1/accounts/{owner.account_id}/totp").get_json()
    confirmed = api.post(f"/v1/accounts/{owner.account_id}/totp/confirm",
                         json={"code": totp.code_at(started["secret"], clock.now())}).get_json()
    clock.advance(seconds=totp.PERIOD_SECONDS)
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    wrong = appeal.verify(method=method, code="000000" if method == "totp" else "AAAA-BBBB-CCCC")
    assert wrong.status_code == 400
    assert wrong.get_json()["attempts_left"] == 4
    good = totp.code_at(started["secret"], clock.now()) if method == "totp" else confirmed["recovery_codes"][0]
    response = appeal.verify(method=method, code=good)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["state"] == "pending_review"


def test_recent_transaction_outside_tolerance_or_day_is_refused(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    when = clock.now() - timedelta(days=3)
    add_transactions(db_session, owner.account_id, [("100.00", when)])
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)
    day = when.date().isoformat()
    for amount, on in (("101.01", day), ("100.00", (when - timedelta(days=1)).date().isoformat())):
        response = appeal.verify(method="recent_transaction", amount=amount, date=on)
        assert response.status_code == 400
        assert response.get_json()["code"] == "verification_failed"
    assert appeal.verify(method="recent_transaction", amount="99.00", date=day).status_code == 200


def test_brute_force_reset_needs_the_second_factor_when_totp_is_enabled(
    client: FlaskClient, api, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    secret = api.post(f"/v1/accounts/{owner.account_id}/totp").get_json()["secret"]
    api.post(f"/v1/accounts/{owner.account_id}/totp/confirm", json={"code": totp.code_at(secret, clock.now())})
    clock.advance(seconds=totp.PERIOD_SECONDS)
    place_lock(db_session, clock, owner.account_id, LockKind.BRUTE_FORCE)
    appeal = submit(client, owner.email)
    assert pass_contact_code(appeal, db_session, settings, owner)["state"] == "approved"
    missing = appeal.post("/password", {"new_password": NEW_PASSWORD})
    assert (missing.status_code, missing.get_json()["code"]) == (400, "second_factor_required")
    wrong = appeal.post("/password", {"new_password": NEW_PASSWORD, "totp_code": "000000"})
    assert (wrong.status_code, wrong.get_json()["code"]) == (400, "second_factor_rejected")
    assert account_status(db_session, owner.account_id) == "locked"
    right = appeal.post("/password", {"new_password": NEW_PASSWORD, "totp_code": totp.code_at(secret, clock.now())})
    assert right.status_code == 200, right.get_json()
    assert right.get_json()["state"] == "released"
    assert account_status(db_session, owner.account_id) == "active"


def test_attempts_are_limited_per_appeal_across_methods(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.RISK)
    appeal = submit(client, owner.email)
    pass_contact_code(appeal, db_session, settings, owner)  # attempt 1 of 15
    guesses = [{"method": "totp", "code": "000000"}] * 5 + [{"method": "recovery_code", "code": "nope"}] * 5 + [
        {"method": "recent_transaction", "amount": "1.00", "date": "2026-03-01"}] * 4
    statuses = [appeal.verify(**guess).status_code for guess in guesses]
    assert statuses == [400] * 14
    # The identity document still has its own attempts, but the appeal has none left.
    last = appeal.verify(method="identity_document", document=DOCUMENT)
    assert last.status_code == 409
    assert last.get_json()["code"] == "verification_attempts_exhausted"
    assert appeal.get().get_json()["state"] == "verifying"
