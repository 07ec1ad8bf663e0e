"""The login check with a second factor enrolled (through the verifier contract)."""

from __future__ import annotations

from datetime import datetime

import pytest

from security.accounts.models import Account
from security.risk import views
from security.risk.second_factor import NoSecondFactor, SecondFactorOutcome
from tests.risk.conftest import PASSWORD


class FakeTotp:
    """Enrolled for every account; "123456" is the valid code and works once (replay-safe)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def check(self, account: Account, *, totp_code: str | None, recovery_code: str | None,
              at: datetime) -> SecondFactorOutcome:
        if totp_code is None and recovery_code is None:
            return SecondFactorOutcome.MISSING
        if totp_code == "123456" and account.id not in self.used:
            self.used.add(account.id)
            return SecondFactorOutcome.VERIFIED
        return SecondFactorOutcome.INVALID


@pytest.fixture
def totp(monkeypatch):
    fake = FakeTotp()
    monkeypatch.setattr(views, "login_second_factor", lambda d: fake)
    return fake


def login(flows, **extra):
    return flows.api.post("/v1/logins", json={"account_id": "acc-1", "password": PASSWORD,
                                              "context": {"ip": "84.150.20.10"}, **extra}).get_json()


def test_enrolled_account_needs_the_code(flows, totp):
    flows.account()
    body = login(flows)
    assert body["decision"] == "mfa_required"
    assert body["reasons"][0]["rule"] == "login.second_factor_required"
    assert login(flows, totp_code="123456")["decision"] == "allow"


def test_wrong_or_replayed_code_counts_as_failure(flows, totp, db_session):
    flows.account()
    assert login(flows, totp_code="123456")["decision"] == "allow"
    for _ in range(4):
        replay = login(flows, totp_code="123456")
        assert replay["decision"] == "deny"
        assert replay["reasons"][0]["rule"] == "login.invalid_credentials"
    assert login(flows, totp_code="000000")["account"]["status"] == "locked"


def test_verified_code_satisfies_a_risk_step_up(flows, totp, clock):
    flows.account()
    for _ in range(3):
        login(flows, totp_code="123456")
        totp.used.clear()
        clock.advance(hours=6)
    stepped = flows.api.post("/v1/logins", json={
        "account_id": "acc-1", "password": PASSWORD, "totp_code": "123456",
        "context": {"ip": "41.58.1.2", "country": "NG", "device_id": "new"}}).get_json()
    assert stepped["risk"]["band"] in ("medium", "high")  # the rules alone would ask for MFA
    assert stepped["decision"] == "allow"
    assert stepped["reasons"][0]["rule"] == "login.second_factor_verified"


def test_default_verifier_reports_not_enrolled(db_session, clock):
    account = Account(id="x", status="active", created_at=clock.now(), updated_at=clock.now())
    outcome = NoSecondFactor().check(account, totp_code="1", recovery_code=None, at=clock.now())
    assert outcome is SecondFactorOutcome.NOT_ENROLLED
