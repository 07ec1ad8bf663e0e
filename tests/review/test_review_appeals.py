from __future__ import annotations

import pyotp
from sqlalchemy import select

from security.accounts.models import Account
from security.audit.models import AuditEntry
from tests.review.cases import appeal_waiting_for_review


def test_appeal_queue_detail_and_four_eyes_approval(cases, client, api, app, db_session):
    rita = cases.operator("rita", "reviewer")
    omar = cases.operator("omar", "reviewer")
    rita_h, omar_h = cases.token(rita), cases.token(omar)
    case = appeal_waiting_for_review(client, api, db_session, app, rita_h, "acc-1")
    appeal_id = case["appeal_id"]
    queue = client.get("/v1/review/appeals", headers=rita_h).get_json()["items"]
    assert [a["appeal_id"] for a in queue] == [appeal_id]
    assert (queue[0]["approvals_required"], queue[0]["approvals_given"]) == (2, 0)
    assert queue[0]["lock_kind"] == "operator"
    detail = client.get(f"/v1/review/appeals/{appeal_id}", headers=rita_h).get_json()
    assert [v["method"] for v in detail["verifications"]] == ["contact_code", "identity_document"]
    url = f"/v1/review/appeals/{appeal_id}/decision"
    first = client.post(url, json={"approve": True, "version": detail["version"], "note": "document matches"},
                        headers=rita_h)
    assert first.status_code == 200, first.get_json()
    assert (first.get_json()["state"], first.get_json()["approvals_given"]) == ("pending_review", 1)
    # Four-eyes: the same reviewer cannot give the second approval.
    again = client.post(url, json={"approve": True, "version": first.get_json()["version"]}, headers=rita_h)
    assert again.status_code == 409
    assert again.get_json()["code"] == "four_eyes_violation"
    stale = client.post(url, json={"approve": True, "version": detail["version"]}, headers=omar_h)
    assert stale.status_code == 409
    second = client.post(url, json={"approve": True, "version": first.get_json()["version"],
                                    "user_reason": "Thanks, please reset your password."}, headers=omar_h)
    assert second.status_code == 200, second.get_json()
    body = second.get_json()
    assert body["state"] == "approved"
    assert body["actions_left"] == ["reset_password", "enroll_totp"]
    assert {r["operator_id"] for r in body["reviews"]} == {rita.id, omar.id}
    actors = db_session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "appeal:review:recorded")).all()
    assert sorted(actors) == sorted([f"operator:{rita.id}", f"operator:{omar.id}"])
    # The user completes the required actions with the appeal token: the account is unlocked.
    user = {"Authorization": f"Bearer {case['token']}"}
    reset = client.post(f"/v1/appeals/{appeal_id}/password", json={"new_password": "a-brand-new-passphrase-71"},
                        headers=user)
    assert reset.status_code == 200, reset.get_json()
    secret = client.post(f"/v1/appeals/{appeal_id}/totp", headers=user).get_json()["secret"]
    confirmed = client.post(f"/v1/appeals/{appeal_id}/totp/confirm",
                            json={"code": pyotp.TOTP(secret).at(cases.clock.now())}, headers=user)
    assert confirmed.status_code == 200, confirmed.get_json()
    db_session.expire_all()
    assert db_session.get(Account, "acc-1").status == "active"
    assert client.get("/v1/review/appeals", headers=rita_h).get_json()["items"] == []


def test_rejection_needs_a_reason_and_viewers_cannot_decide(cases, client, api, app, db_session):
    rita = cases.operator("rita", "reviewer")
    vera = cases.operator("vera", "viewer")
    rita_h, vera_h = cases.token(rita), cases.token(vera)
    case = appeal_waiting_for_review(client, api, db_session, app, rita_h, "acc-1")
    url = f"/v1/review/appeals/{case['appeal_id']}/decision"
    version = client.get(f"/v1/review/appeals/{case['appeal_id']}", headers=vera_h).get_json()["version"]
    assert client.post(url, json={"approve": True, "version": version}, headers=vera_h).status_code == 403
    no_reason = client.post(url, json={"approve": False, "version": version}, headers=rita_h)
    assert no_reason.status_code == 400
    assert no_reason.get_json()["code"] == "user_reason_required"
    rejected = client.post(url, json={"approve": False, "version": version, "user_reason": "Documents differ."},
                           headers=rita_h)
    assert rejected.status_code == 200
    assert rejected.get_json()["state"] == "rejected"
    assert db_session.get(Account, "acc-1").status == "locked"
    replied = client.post(f"/v1/review/appeals/{case['appeal_id']}/messages", json={"body": "Call us."},
                          headers=rita_h)
    assert replied.status_code == 201
    assert replied.get_json()["messages"][-1]["body"] == "Call us."


def test_dashboard_counts_appeal_decisions(cases, client, api, app, db_session):
    from security.review.dashboard import appeal_decisions_per_day

    rita = cases.operator("rita", "reviewer")
    rita_h = cases.token(rita)
    case = appeal_waiting_for_review(client, api, db_session, app, rita_h, "acc-1")
    version = client.get(f"/v1/review/appeals/{case['appeal_id']}", headers=rita_h).get_json()["version"]
    client.post(f"/v1/review/appeals/{case['appeal_id']}/decision", json={"approve": True, "version": version},
                headers=rita_h)
    chart = appeal_decisions_per_day(db_session, cases.clock.now())
    assert chart.points[-1] == (cases.clock.now().date().isoformat(), 1.0)
    assert chart.total == 1
