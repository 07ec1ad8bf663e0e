"""A lock awaiting `enroll_totp` and `reset_password` is released by doing both through this slice."""

from __future__ import annotations

from sqlalchemy import select

from security.accounts.models import Account
from security.credentials import totp
from security.locks.models import Lock
from security.locks.services import LockService
from security.locks.states import LockEvent, LockKind, RequiredAction
from security.runtime import runtime
from security.web.deps import deps
from tests.credentials.conftest import ACCOUNT, create_account, enroll_totp
from tests.credentials.test_password_reset_api import confirm, last_token, request_reset


def lock_awaiting(app, clock, actions):
    with app.test_request_context():
        d = deps()
        service = LockService(d.session, clock=clock, entropy=runtime(app).entropy, audit=d.audit, outbox=d.outbox)
        lock = service.place(
            d.session.get(Account, ACCOUNT), kind=LockKind.USER_REPORTED,
            reasons=[{"rule": "user_reported", "detail": "not me"}], actor="test", required_actions=actions,
        )
        service.release(lock, LockEvent.APPEAL_APPROVED_WITH_ACTIONS, actor="operator:test")
        d.session.commit()


def test_enrolling_totp_then_resetting_releases_the_lock(app, api, client, db_session, settings, clock):
    create_account(api)
    lock_awaiting(app, clock, [RequiredAction.ENROLL_TOTP, RequiredAction.RESET_PASSWORD])

    secret, _ = enroll_totp(api, clock)
    db_session.expire_all()
    lock = db_session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one()
    assert lock.completed_actions == ["enroll_totp"]
    assert db_session.get(Account, ACCOUNT).status == "locked"  # the reset is still owed

    assert request_reset(client, ACCOUNT).status_code == 202
    token = last_token(db_session, settings)
    assert confirm(client, token, totp_code=totp.code_at(secret, clock.now())).status_code == 204
    db_session.expire_all()
    lock = db_session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one()
    assert set(lock.completed_actions) == {"enroll_totp", "reset_password"}
    assert db_session.get(Account, ACCOUNT).status == "active"


def test_a_failed_enrollment_confirmation_completes_nothing(app, api, db_session, clock):
    create_account(api)
    lock_awaiting(app, clock, [RequiredAction.ENROLL_TOTP])
    api.post(f"/v1/accounts/{ACCOUNT}/totp")
    assert api.post(f"/v1/accounts/{ACCOUNT}/totp/confirm", json={"code": "000000"}).status_code == 400
    db_session.expire_all()
    assert db_session.scalars(select(Lock).where(Lock.account_id == ACCOUNT)).one().completed_actions == []
    assert db_session.get(Account, ACCOUNT).status == "locked"
