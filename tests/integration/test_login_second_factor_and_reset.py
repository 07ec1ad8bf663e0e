"""Cross-slice wiring: the login check uses the credentials slice's TOTP, and a password reset
completes the locks slice's `reset_password` action."""

from __future__ import annotations

from sqlalchemy import select

from security.accounts.models import Account
from security.credentials import totp
from security.locks.models import Lock
from security.locks.services import LockService
from security.locks.states import LockKind, RequiredAction
from security.runtime import runtime
from tests.credentials.conftest import ACCOUNT, NEW_PASSWORD, OLD_PASSWORD, create_account, enroll_totp
from tests.credentials.test_password_reset_api import confirm, last_token, request_reset
from tests.risk.conftest import BERLIN


def login(api, password=OLD_PASSWORD, **codes):
    response = api.post("/v1/logins", json={"account_id": ACCOUNT, "password": password, "context": BERLIN,
                                            **codes})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_enrolled_account_needs_the_code_and_a_code_works_once(api, clock):
    create_account(api)
    secret, recovery = enroll_totp(api, clock)
    assert login(api)["decision"] == "mfa_required"
    code = totp.code_at(secret, clock.now())
    assert login(api, totp_code=code)["decision"] == "allow"
    replay = login(api, totp_code=code)
    assert replay["decision"] == "deny"
    clock.advance(seconds=totp.PERIOD_SECONDS)
    assert login(api, recovery_code=recovery[0])["decision"] == "allow"
    assert login(api, recovery_code=recovery[0])["decision"] == "deny"


def test_wrong_code_with_right_password_is_a_failed_login(api, clock):
    create_account(api)
    enroll_totp(api, clock)
    assert login(api, totp_code="000000")["decision"] == "deny"


def test_account_without_totp_is_decided_by_the_password(api):
    create_account(api)
    assert login(api)["decision"] == "allow"


def test_reset_completes_the_reset_password_action_and_releases_the_lock(app, api, client, db_session, settings,
                                                                        clock):
    create_account(api)
    with app.test_request_context():
        rt = runtime(app)
        from security.web.deps import deps

        d = deps()
        account = d.session.get(Account, ACCOUNT)
        LockService(d.session, clock=clock, entropy=rt.entropy, audit=d.audit, outbox=d.outbox).place(
            account, kind=LockKind.OPERATOR, reasons=[{"rule": "operator", "detail": "test"}], actor="test",
            required_actions=[RequiredAction.RESET_PASSWORD],
        )
        lock = d.session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one()
        # An operator lock waits for its required actions once approved (appeals do this in production).
        from security.locks.states import LockEvent

        LockService(d.session, clock=clock, entropy=rt.entropy, audit=d.audit, outbox=d.outbox).release(
            lock, LockEvent.APPEAL_APPROVED_WITH_ACTIONS, actor="operator:test")
        d.session.commit()
    db_session.expire_all()
    assert db_session.get(Account, ACCOUNT).status == "locked"

    assert request_reset(client, ACCOUNT).status_code == 202
    assert confirm(client, last_token(db_session, settings)).status_code == 204
    db_session.expire_all()
    assert db_session.get(Account, ACCOUNT).status == "active"
    lock = db_session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one()
    assert "reset_password" in lock.completed_actions
    assert login(api, password=NEW_PASSWORD)["decision"] == "allow"


def test_password_reset_ends_a_brute_force_lock(api, client, db_session, settings):
    create_account(api)
    for _ in range(5):
        assert login(api, password="wrong-password-guess")["decision"] == "deny"
    db_session.expire_all()
    assert db_session.get(Account, ACCOUNT).status == "locked"
    lock = db_session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one()
    assert lock.kind == "brute_force"
    assert login(api)["decision"] == "deny"  # the right password does not help while locked

    assert request_reset(client, ACCOUNT).status_code == 202
    assert confirm(client, last_token(db_session, settings)).status_code == 204
    db_session.expire_all()
    assert db_session.get(Account, ACCOUNT).status == "active"
    assert login(api, password=NEW_PASSWORD)["decision"] == "allow"
