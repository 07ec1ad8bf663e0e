"""Hypothesis stateful test of the lock lifecycle (LockService on a real database, both backends).

Random interleavings of placing locks (every kind, temporary or not, with required actions), releasing
them with every event (legal or not), completing required actions, restricting and lifting restrictions,
and letting time pass so temporary locks expire. After every step:

* account status and locks agree: ``locked`` exactly when an open lock exists; ``restricted`` or
  ``active`` accounts have none (a released account has no open lock);
* every row of lock history is a transition of the table (``security.locks.states``), nothing else;
* the audit chain verifies;
* the step wrote exactly one audit entry per state change and the right webhooks (``account.locked`` per
  lock placed, ``account.unlocked`` when the last open lock went, ``account.restricted`` ...), and a refused
  step (illegal transition) wrote nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from security.accounts.models import Account
from security.audit.models import AuditEntry
from security.audit.services import AuditLog, verify_audit_log
from security.crypto import SecretBox
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SystemEntropy
from security.locks.models import Lock, LockHistory
from security.locks.services import InvalidTransition, LockService
from security.locks.states import (
    EXPIRING_KINDS,
    LOCK_TRANSITIONS,
    AccountStatus,
    LockEvent,
    LockKind,
    LockStatus,
    RequiredAction,
    is_open,
)

ACCOUNTS = 3
TEMPORARY_LOCK = timedelta(minutes=15)
NORMAL = {"max_examples": 20, "stateful_step_count": 15}
LONG = {"max_examples": 300, "stateful_step_count": 40}


class LockLifecycle(RuleBasedStateMachine):
    locks = Bundle("locks")

    def __init__(self, session, clock, box: SecretBox) -> None:
        super().__init__()
        self.session = session
        self.clock = clock
        self.box = box
        self.accounts = [f"acct-{uuid.uuid4().hex[:12]}" for _ in range(ACCOUNTS)]

    def service(self) -> LockService:
        entropy = SystemEntropy()
        return LockService(
            self.session, clock=self.clock, entropy=entropy, audit=AuditLog(self.session, clock=self.clock),
            outbox=Outbox(self.session, clock=self.clock, entropy=entropy, secret_box=self.box),
        )

    # --- bookkeeping: what one step wrote -----------------------------------------------------------

    def _counts(self) -> tuple[Counter[str], Counter[str]]:
        audit = Counter(dict(self.session.execute(
            select(AuditEntry.action, func.count()).where(AuditEntry.subject_id.in_(self.accounts))
            .group_by(AuditEntry.action)).all()))
        hooks = Counter(dict(self.session.execute(
            select(OutboxMessage.event_type, func.count()).where(OutboxMessage.ordering_key.in_(self.accounts))
            .group_by(OutboxMessage.event_type)).all()))
        return audit, hooks

    def step(self, change, *, audit: Counter[str] | None = None, hooks: Counter[str] | None = None):
        """Run ``change``, commit, and check the audit entries and webhooks it added are exactly these."""
        audit_before, hooks_before = self._counts()
        result = change(self.service())
        self.session.commit()
        audit_after, hooks_after = self._counts()
        assert audit_after - audit_before == (audit or Counter()), "audit entries of the step"
        assert hooks_after - hooks_before == (hooks or Counter()), "webhooks of the step"
        return result

    def refused(self, change) -> None:
        audit_before, hooks_before = self._counts()
        with pytest.raises(InvalidTransition):
            change(self.service())
        self.session.rollback()
        assert self._counts() == (audit_before, hooks_before), "a refused change wrote nothing"

    def account(self, account_id: str) -> Account:
        account = self.session.get(Account, account_id)
        self.session.refresh(account)
        return account

    def open_count(self, account_id: str) -> int:
        return len(self.service().open_locks(account_id))

    # --- rules --------------------------------------------------------------------------------------

    @initialize()
    def create_accounts(self) -> None:
        now = self.clock.now()
        for account_id in self.accounts:
            self.session.add(Account(id=account_id, status="active", created_at=now, updated_at=now))
        self.session.commit()

    @rule(target=locks, n=st.integers(0, ACCOUNTS - 1), kind=st.sampled_from(LockKind), temporary=st.booleans(),
          actions=st.lists(st.sampled_from(RequiredAction), unique=True, max_size=2))
    def place(self, n, kind, temporary, actions):
        account_id = self.accounts[n]
        expires_at = self.clock.now() + TEMPORARY_LOCK if temporary and kind in EXPIRING_KINDS else None
        lock = self.step(
            lambda s: s.place(self.account(account_id), kind=kind, reasons=[{"rule": "stateful"}], actor="test",
                              expires_at=expires_at, required_actions=actions),
            audit=Counter({"account:lock:placed": 1}), hooks=Counter({"account.locked": 1}),
        )
        return lock.id

    @rule(lock_id=locks, event=st.sampled_from([e for e in LockEvent if e is not LockEvent.EXPIRE]))
    def release(self, lock_id, event):
        lock = self.session.get(Lock, lock_id)
        self.session.refresh(lock)
        legal = (LockStatus(lock.status), event) in LOCK_TRANSITIONS and (
            event is not LockEvent.PASSWORD_RESET or lock.kind == LockKind.BRUTE_FORCE
        )
        if not legal:
            self.refused(lambda s: s.release(lock, event, actor="test"))
            return
        target, _ = LOCK_TRANSITIONS[(LockStatus(lock.status), event)]
        frees_account = not is_open(target) and self.open_count(lock.account_id) == 1
        self.step(
            lambda s: s.release(lock, event, actor="test"),
            audit=Counter({"account:lock:released" if not is_open(target) else "account:lock:awaiting_actions": 1}),
            hooks=Counter({"account.unlocked": 1} if frees_account else {}),
        )

    @rule(minutes=st.sampled_from([1, 14, 16, 60]))
    def time_passes(self, minutes):
        self.clock.advance(minutes=minutes)
        now = self.clock.now()
        due = [lock for lock in self.session.scalars(select(Lock).where(Lock.account_id.in_(self.accounts)))
               if lock.status == LockStatus.ACTIVE and lock.expires_at is not None and lock.expires_at <= now]
        freed = sum(1 for account_id in self.accounts
                    if self.open_count(account_id) and
                    all(lock in due for lock in self.service().open_locks(account_id)))
        self.step(
            lambda s: [s.expire_due(account_id=a) for a in self.accounts],
            audit=Counter({"account:lock:released": len(due)} if due else {}),
            hooks=Counter({"account.unlocked": freed} if freed else {}),
        )

    @rule(n=st.integers(0, ACCOUNTS - 1), action=st.sampled_from(RequiredAction))
    def complete_action(self, n, action):
        account_id = self.accounts[n]
        open_locks = self.service().open_locks(account_id)
        noted = [lk for lk in open_locks if lk.status == LockStatus.AWAITING_ACTIONS and action in lk.required_actions
                 and action not in lk.completed_actions]
        done = [lk for lk in open_locks if lk.status == LockStatus.AWAITING_ACTIONS and action in lk.required_actions
                and set(lk.required_actions) <= {*lk.completed_actions, action}]
        reset = [lk for lk in open_locks if action is RequiredAction.RESET_PASSWORD and lk.status == LockStatus.ACTIVE
                 and lk.kind == LockKind.BRUTE_FORCE]
        released = len(done) + len(reset)
        audit = Counter({"account:lock:action_completed": len(noted), "account:lock:released": released})
        frees = released > 0 and released == len(open_locks)
        self.step(lambda s: s.complete_action(account_id, action, actor="test"),
                  audit=+audit, hooks=Counter({"account.unlocked": 1} if frees else {}))

    @rule(n=st.integers(0, ACCOUNTS - 1))
    def restrict(self, n):
        account_id = self.accounts[n]
        active = self.account(account_id).status == AccountStatus.ACTIVE
        changed = self.step(
            lambda s: s.restrict(self.account(account_id), reasons=[{"rule": "stateful"}], actor="test"),
            audit=Counter({"account:status:restricted": 1} if active else {}),
            hooks=Counter({"account.restricted": 1} if active else {}),
        )
        assert changed is active

    @rule(n=st.integers(0, ACCOUNTS - 1))
    def lift_restriction(self, n):
        account_id = self.accounts[n]
        if self.account(account_id).status != AccountStatus.RESTRICTED:
            self.refused(lambda s: s.lift_restriction(self.account(account_id), actor="test"))
            return
        self.step(lambda s: s.lift_restriction(self.account(account_id), actor="test"),
                  audit=Counter({"account:status:restriction_lifted": 1}), hooks=Counter({"account.unlocked": 1}))

    # --- invariants ---------------------------------------------------------------------------------

    @invariant()
    def status_agrees_with_locks(self):
        for account_id in self.accounts:
            account = self.session.get(Account, account_id)
            if account is None:
                return  # before initialisation
            self.session.refresh(account)
            assert (account.status == AccountStatus.LOCKED) == (self.open_count(account_id) > 0), (
                f"{account_id}: {account.status} with {self.open_count(account_id)} open lock(s)"
            )

    @invariant()
    def history_follows_the_table(self):
        lock_ids = select(Lock.id).where(Lock.account_id.in_(self.accounts))
        for row in self.session.scalars(select(LockHistory).where(LockHistory.lock_id.in_(lock_ids))):
            if row.from_status is None:
                assert (row.event, row.to_status) == ("place", LockStatus.ACTIVE)
            else:
                target, _ = LOCK_TRANSITIONS[(LockStatus(row.from_status), LockEvent(row.event))]
                assert row.to_status == target

    @invariant()
    def audit_chain_verifies(self):
        _, broken = verify_audit_log(self.session)
        assert broken is None, broken


def run(db_session, clock, settings_, budget) -> None:
    box = SecretBox(settings_.secrets.encryption_keys)
    run_state_machine_as_test(
        lambda: LockLifecycle(db_session, clock, box),
        settings=settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow], **budget),
    )


def test_lock_lifecycle(db_session, clock, settings):
    run(db_session, clock, settings, NORMAL)


@pytest.mark.slow
def test_lock_lifecycle_long(db_session, clock, settings):
    run(db_session, clock, settings, LONG)
