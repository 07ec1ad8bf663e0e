from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from security.accounts.models import Account
from security.locks.models import Lock

STEP = timedelta(seconds=30)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client, op, clock):
    clock.advance(STEP)
    client.get("/console/sign-in")
    response = client.post("/console/sign-in", data={
        "name": op.name, "password": op.password, "totp_code": op.code(clock.now()),
        "csrf_token": client.get_cookie("__Host-fg_signin").value,
    })
    assert response.status_code == 303


def csrf(client, path="/console/"):
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def test_queue_page_lists_cases_riskiest_first_and_filters(cases, client, clock, new_operator):
    cases.account("calm")
    cases.risk_lock("risky")
    op = new_operator("rita", "reviewer")
    sign_in(client, op, clock)
    # A manual lock through the console (score 0) and the engine's lock (score 100).
    client.post("/console/accounts/calm/lock", data={"note": "called in", "csrf_token": csrf(client)})
    page = client.get("/console/queue").get_data(as_text=True)
    assert page.index(">risky<") < page.index(">calm<")
    assert "tx.destination_deny_listed" in page
    filtered = client.get("/console/queue?kind=operator&status=&min_score=").get_data(as_text=True)
    assert ">calm<" in filtered
    assert ">risky<" not in filtered
    bad = client.get("/console/queue?per_page=1000")
    assert bad.status_code == 422


def test_claim_and_release_from_the_queue(cases, client, clock, new_operator):
    cases.risk_lock("risky")
    op = new_operator("rita", "reviewer")
    sign_in(client, op, clock)
    lock_id = re.search(r'/console/cases/([0-9a-f-]{36})/claim', client.get("/console/queue").get_data(as_text=True))
    token = csrf(client, "/console/queue")
    response = client.post(f"/console/cases/{lock_id.group(1)}/claim",
                           data={"csrf_token": token, "next": "/console/queue?kind=risk"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/queue?kind=risk"
    page = client.get("/console/queue?claimed=mine").get_data(as_text=True)
    assert ">risky<" in page
    assert "Release" in page
    client.post(f"/console/cases/{lock_id.group(1)}/release", data={"csrf_token": token})
    assert ">risky<" not in client.get("/console/queue?claimed=mine").get_data(as_text=True)


def test_case_page_shows_reasons_and_unlocks(cases, client, clock, new_operator, db_session):
    cases.risk_lock("acc-1")
    op = new_operator("rita", "reviewer")
    sign_in(client, op, clock)
    page = client.get("/console/accounts/acc-1").get_data(as_text=True)
    assert 'id="account-status">locked<' in page
    assert "tx.destination_deny_listed" in page
    assert "Unlock FG-" in page
    lock = db_session.scalars(select(Lock).where(Lock.account_id == "acc-1")).one()
    token = CSRF.search(page).group(1)
    stale = client.post(f"/console/locks/{lock.id}/unlock", data={
        "note": "owner called", "version": str(lock.version + 1), "csrf_token": token})
    assert stale.status_code == 409
    assert "changed by someone else" in stale.get_data(as_text=True)
    done = client.post(f"/console/locks/{lock.id}/unlock", data={
        "note": "owner called", "version": str(lock.version), "csrf_token": token})
    assert done.status_code == 303
    assert done.headers["Location"] == "/console/accounts/acc-1"
    assert db_session.get(Account, "acc-1").status == "active"
    assert 'id="account-status">active<' in client.get("/console/accounts/acc-1").get_data(as_text=True)


def test_viewer_sees_no_decision_forms_and_forged_posts_fail(cases, client, clock, new_operator, db_session):
    cases.risk_lock("acc-1")
    op = new_operator("vera", "viewer")
    sign_in(client, op, clock)
    page = client.get("/console/accounts/acc-1").get_data(as_text=True)
    for control in ("Unlock FG-", "Lock account", "Restrict account", "Claim FG-"):
        assert control not in page
    assert "tx.destination_deny_listed" in page  # but the viewer can read the case
    lock = db_session.scalars(select(Lock).where(Lock.account_id == "acc-1")).one()
    token = CSRF.search(page).group(1)
    forged = client.post(f"/console/locks/{lock.id}/unlock", data={
        "note": "let me in", "version": str(lock.version), "csrf_token": token})
    assert forged.status_code == 403
    assert client.post(f"/console/cases/{lock.id}/claim", data={"csrf_token": token}).status_code == 403
    assert db_session.get(Account, "acc-1").status == "locked"


def test_lock_with_expiry_restrict_and_lift_from_the_case_page(cases, client, clock, new_operator, db_session):
    cases.account("a1")
    op = new_operator("rita", "reviewer")
    sign_in(client, op, clock)
    token = csrf(client, "/console/accounts/a1")
    restricted = client.post("/console/accounts/a1/restrict", data={"note": "hold payouts", "csrf_token": token})
    assert restricted.status_code == 303
    assert db_session.get(Account, "a1").status == "restricted"
    client.post("/console/accounts/a1/lift-restriction", data={"csrf_token": token})
    assert db_session.get(Account, "a1").status == "active"
    bad = client.post("/console/accounts/a1/lock", data={"note": "x", "expires_in_hours": "0", "csrf_token": token})
    assert bad.status_code == 422
    response = client.post("/console/accounts/a1/lock", data={
        "note": "fraud call", "expires_in_hours": "6", "required_actions": "reset_password", "csrf_token": token})
    assert response.status_code == 303
    lock = db_session.scalars(select(Lock).where(Lock.account_id == "a1")).one()
    assert lock.expires_at == clock.now() + timedelta(hours=6)
    assert lock.required_actions == ["reset_password"]
    assert lock.created_by == f"operator:{op.id}"


def test_case_pages_need_csrf(cases, client, clock, new_operator, db_session):
    cases.account("a1")
    sign_in(client, new_operator("rita", "reviewer"), clock)
    response = client.post("/console/accounts/a1/lock", data={"note": "no token here"})
    assert response.status_code == 403
    assert db_session.scalars(select(Lock)).all() == []


def test_unknown_account_page_is_404(client, clock, new_operator):
    sign_in(client, new_operator("rita", "reviewer"), clock)
    assert client.get("/console/accounts/nobody").status_code == 404


def test_deny_list_is_read_by_all_and_managed_by_admins(client, clock, new_operator, db_session, app):
    from security.audit.models import AuditEntry
    from security.risk.models import DenyListEntry

    admin = new_operator("adam", "admin")
    sign_in(client, admin, clock)
    token = csrf(client, "/console/deny-list")
    added = client.post("/console/deny-list", data={
        "kind": "ip", "value": " 203.0.113.7 ", "reason": "botnet", "expires_in_days": "30", "csrf_token": token})
    assert added.status_code == 303
    entry = db_session.scalars(select(DenyListEntry)).one()
    assert (entry.value, entry.expires_at) == ("203.0.113.7", clock.now() + timedelta(days=30))
    audit = db_session.scalars(select(AuditEntry).where(AuditEntry.subject_type == "deny_list")).one()
    assert audit.actor == f"operator:{admin.id}"
    bad = client.post("/console/deny-list", data={"kind": "ip", "value": "not-an-ip", "reason": "x",
                                                  "csrf_token": token})
    assert bad.status_code == 422
    viewer_client = app.test_client()
    sign_in(viewer_client, new_operator("vera", "viewer"), clock)
    page = viewer_client.get("/console/deny-list").get_data(as_text=True)
    assert "203.0.113.7" in page
    assert "Add to deny list" not in page
    assert "Remove 203.0.113.7" not in page
    forged = viewer_client.post("/console/deny-list/remove", data={
        "kind": "ip", "value": "203.0.113.7", "csrf_token": CSRF.search(page).group(1)})
    assert forged.status_code == 403
    removed = client.post("/console/deny-list/remove", data={"kind": "ip", "value": "203.0.113.7",
                                                             "csrf_token": token})
    assert removed.status_code == 303
    assert db_session.scalars(select(DenyListEntry)).all() == []


def test_appeal_page_decisions_and_replies(cases, client, api, app, clock, new_operator, db_session):
    from tests.review.cases import appeal_waiting_for_review

    rita = new_operator("rita", "reviewer")
    case = appeal_waiting_for_review(client, api, db_session, app, cases.token(rita), "acc-1")
    sign_in(client, rita, clock)
    url = f"/console/appeals/{case['appeal_id']}"
    page = client.get(url).get_data(as_text=True)
    assert "Record decision" in page
    token = CSRF.search(page).group(1)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    no_reason = client.post(f"{url}/decision", data={"outcome": "reject", "version": version, "csrf_token": token})
    assert no_reason.status_code == 400
    assert "reason the user can read" in no_reason.get_data(as_text=True)
    no_outcome = client.post(f"{url}/decision", data={"version": version, "csrf_token": token})
    assert no_outcome.status_code == 422
    replied = client.post(f"{url}/messages", data={"body": "Please call us.", "csrf_token": token})
    assert replied.status_code == 303
    rejected = client.post(f"{url}/decision", data={
        "outcome": "reject", "version": str(int(version) + 1), "user_reason": "The document differs.",
        "csrf_token": token})
    assert rejected.status_code == 303, rejected.get_data(as_text=True)
    final = client.get(url).get_data(as_text=True)
    assert 'id="appeal-state">rejected<' in final
    assert "Please call us." in final
    assert "Record decision" not in final


def test_a_timed_restriction_from_the_case_page(cases, client, clock, new_operator, db_session):
    cases.account("a1")
    op = new_operator("rita", "reviewer")
    sign_in(client, op, clock)
    page = client.get("/console/accounts/a1").get_data(as_text=True)
    assert 'id="restrict-hours" name="expires_in_hours" type="number" min="1" max="720"' in page
    token = csrf(client, "/console/accounts/a1")
    for hours in ("0", "721", "1.5", "soon"):
        bad = client.post("/console/accounts/a1/restrict",
                          data={"note": "hold payouts", "expires_in_hours": hours, "csrf_token": token})
        assert bad.status_code == 422, hours
        assert "between 1 and 720" in bad.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.get(Account, "a1").status == "active"
    done = client.post("/console/accounts/a1/restrict",
                       data={"note": "hold payouts", "expires_in_hours": "12", "csrf_token": token})
    assert done.status_code == 303
    db_session.expire_all()
    account = db_session.get(Account, "a1")
    assert (account.status, account.restricted_until) == ("restricted", clock.now() + timedelta(hours=12))
    page = client.get("/console/accounts/a1").get_data(as_text=True)
    assert 'id="restricted-until">2026-03-02 21:' in page
