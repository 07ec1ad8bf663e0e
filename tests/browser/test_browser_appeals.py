"""The user-reported appeal path end to end, with the operators' part in a real Chromium.

The owner freezes the account ("not me"), appeals, proves the contact code and the identity document
through the API; two different reviewers approve in the console; the owner completes the required
actions with the appeal token; the console then shows the account unlocked. A viewer sees no decision
buttons and a forged decision is refused.
"""

from __future__ import annotations

import re

from security.credentials import totp
from security.runtime import runtime
from tests.appeals.conftest import DOCUMENT, NEW_PASSWORD, PASSWORD, AppealClient, create_account, last_code, submit
from tests.browser.test_console_browser import sign_in

ACCOUNT = "acc-stolen"
EMAIL = "owner@example.com"


def contact_code(live_server) -> str:
    session = runtime(live_server.app).session_factory()
    try:
        return last_code(session, runtime(live_server.app).settings, EMAIL)
    finally:
        session.close()


def appeal_ready_for_review(live_server, clock) -> AppealClient:
    api = live_server.backend(clock)
    create_account(api, ACCOUNT, email=EMAIL, phone="+4915112340000")
    user = live_server.app.test_client()
    frozen = user.post("/v1/freeze", json={"identifier": EMAIL, "password": PASSWORD,
                                           "reason": "Transfers I never made"})
    assert frozen.status_code in (200, 202), frozen.get_json()
    appeal = submit(user, EMAIL, "My laptop was stolen with the wallet open. Please help me get it back.")
    assert appeal.verify(method="contact_code", code=contact_code(live_server)).status_code == 200
    proven = appeal.verify(method="identity_document", document=DOCUMENT)
    assert proven.status_code == 200, proven.get_json()
    assert proven.get_json()["state"] == "pending_review"
    return appeal


def open_appeal(page, appeal_id: str, screenshot=None) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name="Appeals").click()
    row = page.locator("#appeals tbody tr").first
    assert "pending_review" in row.inner_text()
    assert ACCOUNT in row.inner_text()
    if screenshot is not None:
        screenshot(page, "appeals")
    with page.expect_navigation():
        row.get_by_role("link", name=appeal_id[:8]).click()
    assert page.url.endswith(f"/console/appeals/{appeal_id}")


def test_two_reviewers_approve_the_appeal_and_the_account_is_unlocked(new_page, live_server, clock, screenshot):
    appeal = appeal_ready_for_review(live_server, clock)
    alice = live_server.operator("alice", "reviewer", clock)
    bruno = live_server.operator("bruno", "reviewer", clock)

    page = new_page()
    sign_in(page, alice, clock)
    open_appeal(page, appeal.appeal_id, screenshot)
    assert "My laptop was stolen" in page.locator("#statement").inner_text()
    verifications = page.locator("#verifications").inner_text()
    assert "contact_code" in verifications
    assert "identity_document" in verifications
    assert "Transfers I never made" in page.locator("#lock-reasons").inner_text()
    assert page.locator("#approvals").inner_text() == "0 of 2"
    screenshot(page, "appeal-case")
    page.get_by_label("Approval note (operators only)").fill("Document matches; code from the registered e-mail")
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    assert page.locator("#approvals").inner_text() == "1 of 2"
    assert page.locator("#four-eyes-note").is_visible()
    assert page.get_by_role("button", name="Approve").count() == 0
    screenshot(page, "appeal-first-approval")

    second = new_page()
    sign_in(second, bruno, clock)
    open_appeal(second, appeal.appeal_id)
    second.get_by_label(re.compile("^Reason shown to the user if this approval decides")).fill(
        "Identity confirmed. Please set a new password.")
    with second.expect_navigation():
        second.get_by_role("button", name="Approve").click()
    assert second.locator("#appeal-state").inner_text() == "approved"
    assert "reset_password, enroll_totp" in second.locator("#needed").inner_text()

    # The owner completes the required actions with the appeal token.
    assert appeal.get().get_json()["needed"]["actions"] == ["reset_password", "enroll_totp"]
    assert appeal.post("/password", {"new_password": NEW_PASSWORD}).status_code == 200
    secret = appeal.post("/totp").get_json()["secret"]
    assert appeal.post("/totp/confirm", {"code": totp.code_at(secret, clock.now())}).status_code == 200

    second.reload()
    assert second.locator("#appeal-state").inner_text() == "released"
    screenshot(second, "appeal-released")
    with second.expect_navigation():
        second.locator("#account-link").click()
    assert second.locator("#account-status").inner_text() == "active"


def test_viewer_sees_no_decision_buttons_and_a_forged_decision_is_refused(new_page, live_server, clock, screenshot):
    appeal = appeal_ready_for_review(live_server, clock)
    vera = live_server.operator("vera", "viewer", clock)
    page = new_page()
    sign_in(page, vera, clock)
    open_appeal(page, appeal.appeal_id)
    assert page.get_by_role("button", name=re.compile("Approve|Reject|Send reply")).count() == 0
    assert page.locator("#read-only").is_visible()
    screenshot(page, "appeal-viewer")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = page.request.post(f"/console/appeals/{appeal.appeal_id}/decision",
                               form={"outcome": "approve", "version": "1", "csrf_token": csrf})
    assert forged.status == 403
    page.reload()
    assert page.locator("#approvals").inner_text() == "0 of 2"
    assert appeal.get().get_json()["state"] == "pending_review"


def test_appeal_pages_fit_a_phone(new_page, live_server, clock, screenshot):
    appeal = appeal_ready_for_review(live_server, clock)
    page = new_page(width=390, height=844)
    sign_in(page, live_server.operator("rita", "reviewer", clock), clock)
    for path in ("/console/appeals", f"/console/appeals/{appeal.appeal_id}"):
        page.goto(path)
        # Nothing wider than the phone's screen: no horizontal scrolling of the page.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    assert page.get_by_role("button", name="Approve").is_visible()
    screenshot(page, "appeal-phone")
