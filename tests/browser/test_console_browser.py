from __future__ import annotations

import re
from datetime import timedelta

from security.console.dashboard import CHART_SOURCES
from tests.operators.factories import PASSWORD

STEP = timedelta(seconds=30)


def sign_in(page, op, clock, *, code=None):
    clock.advance(STEP)  # every sign-in needs a TOTP code from a step not used before
    page.goto("/console/sign-in")
    page.get_by_label("Operator name").fill(op.name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Authenticator code").fill(code or op.code(clock.now()))
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def test_sign_in_with_password_and_totp_shows_the_dashboard(new_page, live_server, clock, screenshot):
    live_server.seed_accounts(clock, [2, 0, 3, 5, 1, 4, 6, 2, 0, 3, 7, 4, 2])
    today = clock.now()
    # Engine locks on a few days the audit assertions leave alone.
    for n, days_ago in enumerate((10, 8, 8, 7, 6, 6, 6)):
        clock.set(today - timedelta(days=days_ago, hours=1, minutes=n))
        live_server.risk_lock(clock, f"locked-{n}")
    clock.set(today)
    op = live_server.operator("alice", "admin", clock)
    page = new_page()
    page.goto("/console/")
    assert page.url.endswith("/console/sign-in?next=/console/")
    screenshot(page, "sign-in")
    sign_in(page, op, clock)
    assert re.search(r"/console/$", page.url)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.locator("svg.chart").count() == len(CHART_SOURCES)
    # 13 days of registrations (one audit entry each) ending today: the bars' tooltips carry the counts.
    audit_chart = page.locator("#chart-audit-per-day rect.bar title")
    assert audit_chart.count() == 14
    assert audit_chart.nth(0).text_content() == "2026-02-17: 0 entries"
    assert audit_chart.nth(11).text_content() == "2026-02-28: 7 entries"
    assert audit_chart.nth(12).text_content() == "2026-03-01: 4 entries"
    locks_chart = page.locator("#chart-locks-per-day rect.bar title")
    assert locks_chart.nth(7).text_content() == "2026-02-24: 3 locks"
    assert "tx.destination_deny_listed" in page.locator("#chart-rule-hits").inner_html()
    assert page.get_by_text("alice", exact=True).is_visible()
    screenshot(page, "dashboard")


def test_wrong_totp_is_refused_with_the_generic_message(new_page, live_server, clock):
    op = live_server.operator("alice", "reviewer", clock)
    page = new_page()
    good = op.code(clock.now() + STEP)
    sign_in(page, op, clock, code=f"{(int(good) + 1) % 1_000_000:06d}")
    alert = page.get_by_role("alert")
    assert "name, password or code is not correct" in alert.inner_text()
    assert "/console/sign-in" in page.url
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-fg_session"]


def test_session_cookie_flags(new_page, live_server, clock):
    op = live_server.operator("alice", "viewer", clock)
    page = new_page()
    sign_in(page, op, clock)
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-fg_session")
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    # HttpOnly: page scripts cannot read it (evaluated by the test harness, not by the page itself).
    assert "fg_session" not in page.evaluate("document.cookie")


def test_viewer_sees_no_admin_controls_and_a_forged_post_is_refused(new_page, live_server, clock):
    op = live_server.operator("vera", "viewer", clock)
    page = new_page()
    sign_in(page, op, clock)
    assert page.get_by_role("link", name="Service clients").count() == 0
    assert page.locator("button.danger, button.primary").count() == 0
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = page.request.post("/console/clients", form={"name": "evil", "scopes": "accounts:read",
                                                         "csrf_token": csrf})
    assert forged.status == 403
    assert page.goto("/console/clients").status == 403


def test_post_without_csrf_token_is_refused(new_page, live_server, clock):
    op = live_server.operator("adam", "admin", clock)
    page = new_page()
    sign_in(page, op, clock)
    response = page.request.post("/console/clients", form={"name": "evil", "scopes": "accounts:read"})
    assert response.status == 403
    page.goto("/console/clients")
    assert page.locator("#clients").get_by_role("cell", name="evil", exact=True).count() == 0


def test_admin_creates_a_client_and_sees_the_key_once(new_page, live_server, clock, screenshot):
    op = live_server.operator("adam", "admin", clock)
    page = new_page()
    sign_in(page, op, clock)
    with page.expect_navigation():
        page.get_by_role("link", name="Service clients").click()
    page.get_by_label("Name").fill("wallet-backend")
    page.get_by_label("accounts:read").check()
    page.get_by_label("logins:check").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Create client").click()
    key = page.locator("#api-key").inner_text()
    assert key.startswith("fg_")
    with page.expect_navigation():
        page.get_by_role("link", name="Back to service clients").click()
    assert page.locator("#clients").get_by_role("cell", name="wallet-backend", exact=True).is_visible()
    assert key not in page.content()
    screenshot(page, "clients")


def test_sign_out(new_page, live_server, clock):
    op = live_server.operator("alice", "viewer", clock)
    page = new_page()
    sign_in(page, op, clock)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert "/console/sign-in" in page.url
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-fg_session"]
    page.goto("/console/")
    assert "/console/sign-in" in page.url


def test_keyboard_only_sign_in_and_phone_layout(new_page, live_server, clock, screenshot):
    op = live_server.operator("alice", "admin", clock)
    page = new_page(width=390, height=844)
    page.goto("/console/sign-in")
    # The skip link is the first stop; the name field has focus on load.
    assert page.evaluate("document.activeElement.id") == "name"
    page.keyboard.type(op.name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    clock.advance(STEP)
    page.keyboard.type(op.code(clock.now()))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    # Nothing wider than the phone's screen: no horizontal scrolling of the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "dashboard-phone")


def test_reviewer_works_a_case_from_the_queue_to_unlock(new_page, live_server, clock, screenshot):
    live_server.risk_lock(clock, "acc-risky")
    clock.advance(minutes=20)
    live_server.risk_lock(clock, "acc-second")
    clock.advance(hours=2)
    op = live_server.operator("rita", "reviewer", clock)
    page = new_page()
    sign_in(page, op, clock)
    with page.expect_navigation():
        page.get_by_role("link", name="Queue").click()
    rows = page.locator("#queue tbody tr")
    assert rows.count() == 2
    # Equal scores: the older case first.
    assert rows.nth(0).get_by_role("link", name="acc-risky").is_visible()
    assert "2 h 20 min" in rows.nth(0).inner_text()
    screenshot(page, "queue")
    with page.expect_navigation():
        rows.nth(0).get_by_role("button", name=re.compile("Claim")).click()
    assert "rita" in page.locator("#queue tbody tr").nth(0).inner_text()
    with page.expect_navigation():
        page.get_by_role("link", name="acc-risky").click()
    assert page.locator("#account-status").inner_text() == "locked"
    # The case's reasons: the rule that fired and its points.
    reasons = page.locator("table.reasons").first
    assert "tx.destination_deny_listed" in reasons.inner_text()
    assert "100" in reasons.inner_text()
    assert page.locator("table.rules tr.outcome-hit").count() >= 1
    screenshot(page, "case")
    page.get_by_label(re.compile("^Unlock FG-.*note")).fill("Owner confirmed by phone; payee is a known exchange")
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Unlock FG-")).click()
    assert page.locator("#account-status").inner_text() == "active"
    assert "operator_unlock by operator:" in page.locator("ol.history").first.inner_text()
    with page.expect_navigation():
        page.get_by_role("link", name="Queue").click()
    assert page.locator("#queue tbody tr").count() == 1


def test_viewer_reads_a_case_without_decision_buttons(new_page, live_server, clock):
    live_server.risk_lock(clock, "acc-risky")
    op = live_server.operator("vera", "viewer", clock)
    page = new_page()
    sign_in(page, op, clock)
    page.goto("/console/accounts/acc-risky")
    assert "tx.destination_deny_listed" in page.locator("table.reasons").first.inner_text()
    assert page.get_by_role("button", name=re.compile("Unlock|Lock account|Restrict|Claim")).count() == 0
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    lock_version = "1"
    lock_id = live_server.open_lock_id("acc-risky")
    forged = page.request.post(f"/console/locks/{lock_id}/unlock",
                               form={"note": "let me in", "version": lock_version, "csrf_token": csrf})
    assert forged.status == 403
    page.reload()
    assert page.locator("#account-status").inner_text() == "locked"


def api_token(client, op, clock):
    clock.advance(STEP)
    response = client.post("/v1/review/tokens", json={
        "name": op.name, "password": op.password, "totp_code": op.code(clock.now())})
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def test_two_reviewers_approve_an_appeal_and_the_account_is_unlocked(new_page, live_server, clock, screenshot):
    import pyotp

    from security.runtime import runtime
    from tests.review.cases import appeal_waiting_for_review

    rita = live_server.operator("rita", "reviewer", clock)
    omar = live_server.operator("omar", "reviewer", clock)
    client = live_server.app.test_client()
    session = runtime(live_server.app).session_factory()
    try:
        case = appeal_waiting_for_review(client, live_server.backend(clock), session, live_server.app,
                                         api_token(client, rita, clock), "acc-ana")
    finally:
        session.close()
    first = new_page()
    sign_in(first, rita, clock)
    with first.expect_navigation():
        first.get_by_role("link", name="Queue").click()
    with first.expect_navigation():
        first.locator("#appeal-queue").get_by_role("link", name=re.compile("^Appeal")).click()
    assert first.locator("#approvals").inner_text() == "0 of 2"
    screenshot(first, "appeal")
    first.get_by_label("Approval note (operators only)").fill("Document matches the file")
    with first.expect_navigation():
        first.get_by_role("button", name="Approve").click()
    assert first.locator("#approvals").inner_text() == "1 of 2"
    assert first.locator("#appeal-state").inner_text() == "pending_review"
    # Four-eyes: the first reviewer has no second decision to give.
    assert first.get_by_role("button", name=re.compile("^(Approve|Reject)$")).count() == 0
    assert first.locator("#four-eyes-note").is_visible()

    second = new_page()
    sign_in(second, omar, clock)
    second.goto(f"/console/appeals/{case['appeal_id']}")
    second.get_by_label(re.compile("^Reason shown to the user if this approval decides")).fill(
        "Approved: please set a new password and authenticator.")
    with second.expect_navigation():
        second.get_by_role("button", name="Approve").click()
    assert second.locator("#appeal-state").inner_text() == "approved"

    # The user finishes the required actions with the appeal token; the account is unlocked.
    user = {"Authorization": f"Bearer {case['token']}"}
    assert client.post(f"/v1/appeals/{case['appeal_id']}/password", json={"new_password": "a-brand-new-passphrase-71"},
                       headers=user).status_code == 200
    secret = client.post(f"/v1/appeals/{case['appeal_id']}/totp", headers=user).get_json()["secret"]
    assert client.post(f"/v1/appeals/{case['appeal_id']}/totp/confirm",
                       json={"code": pyotp.TOTP(secret).at(clock.now())}, headers=user).status_code == 200
    second.goto("/console/accounts/acc-ana")
    assert second.locator("#account-status").inner_text() == "active"


def test_viewer_sees_no_appeal_decision_form(new_page, live_server, clock):
    from security.runtime import runtime
    from tests.review.cases import appeal_waiting_for_review

    rita = live_server.operator("rita", "reviewer", clock)
    vera = live_server.operator("vera", "viewer", clock)
    client = live_server.app.test_client()
    session = runtime(live_server.app).session_factory()
    try:
        case = appeal_waiting_for_review(client, live_server.backend(clock), session, live_server.app,
                                         api_token(client, rita, clock), "acc-ana")
    finally:
        session.close()
    page = new_page()
    sign_in(page, vera, clock)
    page.goto(f"/console/appeals/{case['appeal_id']}")
    assert page.locator("#appeal-state").inner_text() == "pending_review"
    assert page.get_by_role("button", name=re.compile("Approve|Reject|Send")).count() == 0
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = page.request.post(f"/console/appeals/{case['appeal_id']}/decision",
                               form={"outcome": "approve", "version": "5", "csrf_token": csrf})
    assert forged.status == 403
