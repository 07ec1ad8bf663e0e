"""LockService: placing, releasing, expiry, required actions, restrictions, concurrency."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from security.accounts.models import Account
from security.audit.services import AuditLog
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SeededEntropy
from security.errors import StaleVersion
from security.locks.models import LockHistory
from security.locks.services import InvalidTransition, LockService, new_reference
from security.locks.states import LockEvent, LockKind, RequiredAction

REASON = [{"rule": "test", "points": 0, "detail": "because"}]


@pytest.fixture
def service(db_session, clock, settings):
    from security.crypto import SecretBox

    return LockService(db_session, clock=clock, entropy=SeededEntropy(1), audit=AuditLog(db_session, clock=clock),
                       outbox=Outbox(db_session, clock=clock, entropy=SeededEntropy(2),
                                     secret_box=SecretBox(settings.secrets.encryption_keys)))


@pytest.fixture
def account(db_session, clock):
    acc = Account(id="acc-1", status="active", created_at=clock.now(), updated_at=clock.now())
    db_session.add(acc)
    db_session.flush()
    return acc


def events(db_session):
    return [m.event_type for m in db_session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_reference_format():
    ref = new_reference(SeededEntropy(3))
    assert len(ref) == 12 and ref.startswith("FG-") and ref[7] == "-"
    assert not set(ref[3:].replace("-", "")) & set("ILOU")


def test_place_and_operator_release(service, account, db_session):
    lock = service.place(account, kind=LockKind.OPERATOR, reasons=REASON, actor="operator:ann")
    assert account.status == "locked"
    service.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:bob", note="verified by phone")
    assert (lock.status, lock.resolution, lock.resolved_by) == ("released", "operator_unlocked", "operator:bob")
    assert account.status == "active"
    assert events(db_session) == ["account.locked", "account.unlocked"]
    history = db_session.scalars(select(LockHistory.event).order_by(LockHistory.id)).all()
    assert history == ["place", "operator_unlock"]


def test_account_stays_locked_while_another_lock_is_open(service, account, db_session):
    first = service.place(account, kind=LockKind.RISK, reasons=REASON, actor="system")
    second = service.place(account, kind=LockKind.OPERATOR, reasons=REASON, actor="operator:ann")
    service.release(first, LockEvent.OPERATOR_UNLOCK, actor="operator:ann")
    assert account.status == "locked"
    service.release(second, LockEvent.OPERATOR_UNLOCK, actor="operator:ann")
    assert account.status == "active"
    assert events(db_session).count("account.unlocked") == 1


def test_illegal_release_is_409(service, account):
    lock = service.place(account, kind=LockKind.RISK, reasons=REASON, actor="system")
    with pytest.raises(InvalidTransition) as info:
        service.release(lock, LockEvent.EXPIRE, actor="system")
    assert info.value.status == 409
    service.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:ann")
    with pytest.raises(InvalidTransition):
        service.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:ann")


def test_stale_version_is_409(service, account):
    lock = service.place(account, kind=LockKind.RISK, reasons=REASON, actor="system")
    seen = lock.version
    service.release(lock, LockEvent.APPEAL_APPROVED_WITH_ACTIONS, actor="operator:ann")
    with pytest.raises(StaleVersion):
        service.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:bob", expected_version=seen)


def test_expiry_releases_only_due_temporary_locks(service, account, clock):
    temporary = service.place(account, kind=LockKind.BRUTE_FORCE, reasons=REASON, actor="system",
                              expires_at=clock.now() + timedelta(minutes=1))
    assert service.expire_due().locks == []
    clock.advance(minutes=1)
    assert service.expire_due().locks == [temporary]
    assert account.status == "active"


def test_required_actions_complete_then_release(service, account):
    lock = service.place(account, kind=LockKind.USER_REPORTED, reasons=REASON, actor="user",
                         required_actions=[RequiredAction.RESET_PASSWORD, RequiredAction.ENROLL_TOTP])
    service.release(lock, LockEvent.APPEAL_APPROVED_WITH_ACTIONS, actor="operator:ann")
    assert account.status == "locked"
    assert service.complete_action("acc-1", RequiredAction.RESET_PASSWORD, actor="user") == []
    assert lock.completed_actions == ["reset_password"]
    assert service.complete_action("acc-1", RequiredAction.ENROLL_TOTP, actor="user") == [lock]
    assert (lock.status, lock.resolution) == ("released", "actions_completed")
    assert account.status == "active"


def test_password_reset_releases_brute_force_lock_only(service, account):
    brute = service.place(account, kind=LockKind.BRUTE_FORCE, reasons=REASON, actor="system")
    risk = service.place(account, kind=LockKind.RISK, reasons=REASON, actor="system")
    assert service.complete_action("acc-1", RequiredAction.RESET_PASSWORD, actor="user") == [brute]
    assert risk.status == "active"
    assert account.status == "locked"


def test_restrict_and_lift(service, account, db_session):
    assert service.restrict(account, reasons=REASON, actor="system") is True
    assert account.status == "restricted"
    assert service.restrict(account, reasons=REASON, actor="system") is False  # already restricted
    service.lift_restriction(account, actor="operator:ann")
    assert account.status == "active"
    service.place(account, kind=LockKind.RISK, reasons=REASON, actor="system")
    assert service.restrict(account, reasons=REASON, actor="system") is False  # a lock is stronger
    with pytest.raises(InvalidTransition):
        service.lift_restriction(account, actor="operator:ann")
    assert events(db_session) == ["account.restricted", "account.unlocked", "account.locked"]


def test_a_timed_restriction_lifts_itself_through_the_expiry_sweep(service, account, db_session, clock):
    from security.audit.models import AuditEntry

    until = clock.now() + timedelta(hours=2)
    assert service.restrict(account, reasons=REASON, actor="operator:ann", expires_at=until) is True
    assert (account.status, account.restricted_until) == ("restricted", until)
    clock.advance(minutes=119)
    assert service.expire_due().restrictions == []
    assert account.status == "restricted"
    clock.advance(minutes=1)
    swept = service.expire_due()
    assert (swept.locks, swept.restrictions) == ([], [account])
    assert (account.status, account.restricted_until) == ("active", None)
    assert events(db_session) == ["account.restricted", "account.unlocked"]
    messages = db_session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
    restricted, lifted = (m.payload["data"] for m in messages)
    assert restricted["expires_at"] == until.isoformat()
    assert (lifted["status"], lifted["resolution"]) == ("active", "restriction_expired")
    db_session.commit()  # audit entries are written when the session commits
    audit = db_session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [(e.action, e.actor) for e in audit] == [
        ("account:status:restricted", "operator:ann"), ("account:status:restriction_lifted", "system")]
    assert audit[0].data["expires_at"] == until.isoformat()
    assert audit[1].data == {"resolution": "restriction_expired"}
    assert service.expire_due().restrictions == []  # once
    assert account.status == "active"


def test_a_lock_overtakes_a_timed_restriction(service, account, clock):
    service.restrict(account, reasons=REASON, actor="system", expires_at=clock.now() + timedelta(minutes=5))
    lock = service.place(account, kind=LockKind.OPERATOR, reasons=REASON, actor="operator:ann")
    assert (account.status, account.restricted_until) == ("locked", None)
    clock.advance(minutes=10)
    assert service.expire_due().restrictions == []
    assert account.status == "locked"  # the old restriction's expiry never unlocks anything
    service.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:ann")
    assert account.status == "active"


def test_the_sweep_for_one_account_leaves_the_others(service, account, db_session, clock):
    other = Account(id="acc-2", status="active", created_at=clock.now(), updated_at=clock.now())
    db_session.add(other)
    db_session.flush()
    for acc in (account, other):
        service.restrict(acc, reasons=REASON, actor="system", expires_at=clock.now() + timedelta(minutes=1))
    clock.advance(minutes=1)
    assert service.expire_due(account_id="acc-2").restrictions == [other]
    assert (account.status, other.status) == ("restricted", "active")
