"""Appeal cases are claimed and released like lock cases (one claim mechanism for both)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from security.audit.models import AuditEntry
from security.audit.services import verify_audit_log
from security.locks.states import LockKind
from security.review.models import CaseClaim
from tests.appeals.conftest import submit
from tests.review.test_appeals_review import REVIEW, case, decide, operator_id, ready_for_review


def claim_url(appeal_id: str) -> str:
    return f"{REVIEW}/{appeal_id}/claim"


def listed(client, headers) -> dict[str, dict]:
    return {i["appeal_id"]: i for i in client.get(REVIEW, headers=headers).get_json()["items"]}


def test_an_appeal_is_claimed_by_one_operator_at_a_time(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-ac1", LockKind.USER_REPORTED)
    url = claim_url(appeal.appeal_id)
    first = client.post(url, headers=ops["alice"])
    assert first.status_code == 200, first.get_json()
    assert (first.get_json()["appeal_id"], first.get_json()["claimed_by"]) == (appeal.appeal_id, "alice")

    taken = client.post(url, headers=ops["bruno"])
    assert taken.status_code == 409
    assert taken.headers["Content-Type"].startswith("application/problem+json")
    assert (taken.get_json()["code"], taken.get_json()["claimed_by"]) == ("case_already_claimed", "alice")
    assert client.post(url, headers=ops["alice"]).status_code == 200  # idempotent for the holder

    # The queue and the case show who holds it.
    item = listed(client, ops["vera"])[appeal.appeal_id]
    assert (item["claimed_by"], item["claimed_here"]) == ("alice", True)
    assert (case(client, ops["vera"], appeal.appeal_id)["claimed_by"]) == "alice"

    assert client.delete(url, headers=ops["bruno"]).status_code == 403
    assert client.delete(url, headers=ops["alice"]).status_code == 204
    assert listed(client, ops["vera"])[appeal.appeal_id]["claimed_by"] is None
    assert client.post(url, headers=ops["bruno"]).status_code == 200
    assert client.delete(claim_url(appeal.appeal_id), headers=ops["bruno"]).status_code == 204
    assert client.delete(claim_url(appeal.appeal_id), headers=ops["bruno"]).status_code == 204  # nothing to give back

    # Every claim and release is audited under the operator's id, with the appeal named.
    entries = db_session.scalars(select(AuditEntry).where(AuditEntry.action.like("review:case:%"))
                                 .order_by(AuditEntry.seq)).all()
    alice, bruno = (f"operator:{operator_id(db_session, n)}" for n in ("alice", "bruno"))
    assert [(e.action, e.actor) for e in entries] == [
        ("review:case:claimed", alice), ("review:case:released", alice),
        ("review:case:claimed", bruno), ("review:case:released", bruno),
    ]
    assert all(e.data["appeal_id"] == appeal.appeal_id and e.subject_id == "acc-ac1" for e in entries)
    assert verify_audit_log(db_session)[1] is None


def test_a_viewer_cannot_claim_and_unknown_or_decoy_appeals_are_refused(client, ops):
    assert client.post(claim_url(str(uuid.uuid4())), headers=ops["alice"]).status_code == 404
    decoy = submit(client, "nobody@example.com")
    refused = client.post(claim_url(decoy.appeal_id), headers=ops["alice"])
    assert refused.status_code == 409
    assert refused.get_json()["code"] == "appeal_not_a_case"
    viewer = client.post(claim_url(decoy.appeal_id), headers=ops["vera"])
    assert viewer.status_code == 403
    assert viewer.get_json()["code"] == "permission_denied"
    assert client.post(claim_url(decoy.appeal_id)).status_code == 401


def test_a_claim_on_the_lock_or_on_its_appeal_covers_both(api, client, db_session, settings, clock, ops):
    appeal, lock = ready_for_review(api, client, db_session, settings, clock, "acc-ac2", LockKind.USER_REPORTED)
    lock_url = f"/v1/review/locks/{lock.id}/claim"
    assert client.post(lock_url, headers=ops["alice"]).status_code == 200
    refused = client.post(claim_url(appeal.appeal_id), headers=ops["bruno"])
    assert (refused.status_code, refused.get_json()["claimed_by"]) == (409, "alice")
    item = listed(client, ops["vera"])[appeal.appeal_id]
    assert (item["claimed_by"], item["claimed_here"]) == ("alice", False)
    # The holder of the lock may claim its appeal too; then both are theirs.
    assert client.post(claim_url(appeal.appeal_id), headers=ops["alice"]).status_code == 200
    assert client.delete(lock_url, headers=ops["alice"]).status_code == 204

    # Now only the appeal is claimed: the lock queue shows its holder and refuses another claimer.
    [queued] = client.get("/v1/review/queue", headers=ops["vera"]).get_json()["items"]
    assert (queued["claimed_by"], queued["claimed_here"]) == ("alice", False)
    taken = client.post(lock_url, headers=ops["bruno"])
    assert (taken.status_code, taken.get_json()["code"]) == (409, "case_already_claimed")
    mine = client.get("/v1/review/queue?claimed=mine", headers=ops["alice"]).get_json()
    unclaimed = client.get("/v1/review/queue?claimed=unclaimed", headers=ops["alice"]).get_json()
    assert (mine["total"], unclaimed["total"]) == (1, 0)


def test_a_decision_that_closes_the_appeal_ends_its_claim(api, client, db_session, settings, clock, ops):
    appeal, _ = ready_for_review(api, client, db_session, settings, clock, "acc-ac3", LockKind.RISK)
    assert client.post(claim_url(appeal.appeal_id), headers=ops["alice"]).status_code == 200
    seen = case(client, ops["alice"], appeal.appeal_id)
    rejected = decide(client, ops["alice"], appeal.appeal_id, approve=False, user_reason="We could not confirm it.",
                      expected_version=seen["version"])
    assert rejected.status_code == 200, rejected.get_json()
    assert rejected.get_json()["state"] == "rejected"
    assert rejected.get_json()["claimed_by"] is None
    db_session.expire_all()
    assert db_session.scalars(select(CaseClaim)).all() == []
    closed = client.post(claim_url(appeal.appeal_id), headers=ops["bruno"])
    assert (closed.status_code, closed.get_json()["code"]) == (409, "case_closed")
