"""The owner hears about locks and new-device sign-ins on the registered contact (e-mail, else SMS)."""

from __future__ import annotations

import pytest

from security.delivery.senders import MemoryMailer, MemorySmsSender
from security.delivery.wiring import build_dispatcher
from security.runtime import runtime
from tests.risk.conftest import BERLIN, Flows


@pytest.fixture
def flows(api, clock) -> Flows:
    return Flows(api, clock)


def deliver(app) -> tuple[MemoryMailer, MemorySmsSender]:
    mailer, sms = MemoryMailer(), MemorySmsSender()
    build_dispatcher(runtime(app), mailer=mailer, sms_sender=sms).run_once()
    return mailer, sms


def test_brute_force_lock_sends_a_lock_notice_with_the_case_reference(app, flows):
    flows.account("acc-1")
    for _ in range(5):
        assert flows.login("acc-1", password="wrong-password-guess").get_json()["decision"] == "deny"
    mailer, _ = deliver(app)
    [notice] = [m for m in mailer.outbox if m.kind == "lock_notice"]
    assert notice.to == "acc-1@example.com"
    assert "Several wrong passwords" in notice.text
    assert "/appeal" in notice.text
    assert "The lock ends automatically at" in notice.text
    assert "(case FG-" in notice.subject


def test_account_without_email_gets_the_lock_notice_by_sms(app, api, flows):
    flows.account("acc-2")
    assert api.put("/v1/accounts/acc-2", json={"phone": "+4915112345678", "home_country": "DE"}).status_code == 200
    for _ in range(5):
        flows.login("acc-2", password="wrong-password-guess")
    mailer, sms = deliver(app)
    assert [m for m in mailer.outbox if m.kind == "lock_notice"] == []
    [text] = [m for m in sms.outbox if m.kind == "lock_notice"]
    assert text.to == "+4915112345678"


def test_new_device_sign_in_is_announced_to_the_owner(app, flows):
    flows.account("acc-3")
    flows.warm_up("acc-3", logins=3)
    # Same browser and place, new device id: allowed, and the owner is told.
    response = flows.login("acc-3", device_id="laptop-new")
    assert response.get_json()["decision"] == "allow", response.get_json()
    assert "login.new_device" in {r["rule"] for r in response.get_json()["reasons"]}
    mailer, _ = deliver(app)
    [mail] = [m for m in mailer.outbox if m.kind == "new_device_login"]
    assert mail.to == "acc-3@example.com"
    assert "Device: Chrome 120 on Windows 10" in mail.text
    assert BERLIN["country"] in mail.text
    assert "/freeze" in mail.text
