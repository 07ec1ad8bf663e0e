"""Lock use cases: place, release, expire, restrict (no Flask; the caller commits).

Every change goes through the pure transition table (``security.locks.states``), is appended to
``lock_history``, audited and announced through the outbox in the caller's transaction. Locks carry a
version column: two simultaneous releases of the same lock give one winner; the loser's flush
raises ``StaleDataError`` which the web layer turns into 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.audit.services import AuditLog
from security.clock import Clock
from security.delivery.outbox import Outbox
from security.entropy import Entropy
from security.errors import Conflict, NotFound, StaleVersion
from security.locks.models import Lock, LockHistory
from security.locks.states import (
    AccountEvent,
    AccountStatus,
    IllegalTransition,
    LockEvent,
    LockKind,
    LockStatus,
    RequiredAction,
    is_open,
    next_account_status,
    next_lock_status,
)

#: Crockford base32 without look-alikes: case references are read out over the phone.
REFERENCE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_GROUPS: Final = (4, 4)
#: Most overdue locks released per expiry sweep (keeps one transaction short).
EXPIRY_BATCH: Final = 500
SYSTEM_ACTOR: Final = "system"


class AuditTag(StrEnum):
    """Audit vocabulary of this slice."""

    LOCK_PLACED = "account:lock:placed"
    LOCK_RELEASED = "account:lock:released"
    LOCK_AWAITING_ACTIONS = "account:lock:awaiting_actions"
    LOCK_ACTION_COMPLETED = "account:lock:action_completed"
    ACCOUNT_RESTRICTED = "account:status:restricted"
    RESTRICTION_LIFTED = "account:status:restriction_lifted"


class WebhookEvent(StrEnum):
    """Webhooks announced by this slice."""

    ACCOUNT_LOCKED = "account.locked"
    ACCOUNT_UNLOCKED = "account.unlocked"
    ACCOUNT_RESTRICTED = "account.restricted"


class InvalidTransition(Conflict):
    """The lock or account is not in a state that allows this change."""

    code = "invalid_transition"
    title = "This change is not allowed in the current state"


class LockNotFound(NotFound):
    code = "lock_not_found"
    title = "No such lock"


def new_reference(entropy: Entropy) -> str:
    """Return a case reference like ``FG-7KQ2-9XWD`` (40 bits of randomness)."""
    groups = ["".join(REFERENCE_ALPHABET[entropy.randbelow(len(REFERENCE_ALPHABET))] for _ in range(n))
              for n in REFERENCE_GROUPS]
    return "FG-" + "-".join(groups)


class LockService:
    """Places and releases locks and keeps the account status in step."""

    def __init__(self, session: Session, *, clock: Clock, entropy: Entropy, audit: AuditLog,
                 outbox: Outbox) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._audit = audit
        self._outbox = outbox

    # --- queries ------------------------------------------------------------------------------

    def get(self, lock_id: uuid.UUID) -> Lock:
        """Return a lock or raise :class:`LockNotFound`."""
        lock = self._session.get(Lock, lock_id)
        if lock is None:
            raise LockNotFound()
        return lock

    def open_locks(self, account_id: str) -> list[Lock]:
        """Return the account's locks that still keep it locked, oldest first."""
        return list(self._session.scalars(
            select(Lock)
            .where(Lock.account_id == account_id, Lock.status != LockStatus.RELEASED)
            .order_by(Lock.created_at, Lock.reference)
        ))

    def count_created(self, kind: LockKind, since: datetime) -> int:
        """Return how many locks of ``kind`` were created at or after ``since`` (auto-lock guard)."""
        return self._session.scalar(
            select(func.count()).select_from(Lock).where(Lock.kind == kind, Lock.created_at >= since)
        ) or 0

    # --- changes ------------------------------------------------------------------------------

    def place(
        self,
        account: Account,
        *,
        kind: LockKind,
        reasons: Sequence[Mapping[str, Any]],
        actor: str,
        expires_at: datetime | None = None,
        required_actions: Sequence[RequiredAction] = (),
        assessment_id: uuid.UUID | None = None,
        note: str | None = None,
    ) -> Lock:
        """Lock ``account`` (a second lock on a locked account is allowed: both must be released)."""
        now = self._clock.now()
        self._set_account_status(account, AccountEvent.LOCK)
        lock = Lock(
            id=uuid.uuid4(), reference=new_reference(self._entropy), account_id=account.id, kind=kind,
            status=LockStatus.ACTIVE, reasons=[dict(r) for r in reasons], created_by=actor, created_at=now,
            expires_at=expires_at, required_actions=[str(a) for a in required_actions], completed_actions=[],
            assessment_id=assessment_id,
        )
        self._session.add(lock)
        self._history(lock, actor=actor, event="place", from_status=None, note=note)
        data = lock.as_dict() | {"reasons": [str(r.get("rule", "")) for r in reasons]}
        self._audit.record(AuditTag.LOCK_PLACED, actor=actor, subject_type="account",
                           subject_id=account.id, data=data)
        self._outbox.webhook(WebhookEvent.ACCOUNT_LOCKED, {
            **lock.as_dict(), "locked_at": now.isoformat(),
            "reasons": [{"rule": str(r.get("rule", "")), "detail": str(r.get("detail", ""))} for r in reasons],
        }, ordering_key=account.id)
        self._session.flush()
        return lock

    def release(self, lock: Lock, event: LockEvent, *, actor: str, note: str | None = None,
                expected_version: int | None = None) -> Lock:
        """Apply ``event`` to ``lock``; when no open lock remains the account is unlocked.

        ``expected_version`` (from the caller's earlier read) turns a lost race into 409 up front.
        """
        if expected_version is not None and expected_version != lock.version:
            raise StaleVersion("The lock was changed by someone else; reload and retry.")
        previous = LockStatus(lock.status)
        try:
            status, resolution = next_lock_status(previous, event, kind=LockKind(lock.kind),
                                                  temporary=lock.expires_at is not None)
        except IllegalTransition as exc:
            raise InvalidTransition(str(exc), lock_status=previous, event=str(event)) from exc
        now = self._clock.now()
        lock.status = status
        if resolution is not None:
            lock.resolution = resolution
            lock.resolved_at = now
            lock.resolved_by = actor
        self._history(lock, actor=actor, event=event, from_status=previous, note=note)
        tag = AuditTag.LOCK_RELEASED if not is_open(status) else AuditTag.LOCK_AWAITING_ACTIONS
        self._audit.record(tag, actor=actor, subject_type="account", subject_id=lock.account_id,
                           data={**lock.as_dict(), "event": str(event), "resolution": resolution})
        # Flush now so a concurrent release of the same lock fails here (version check), before the
        # account status changes.
        self._session.flush()
        if not is_open(status):
            self._unlock_if_free(lock, actor=actor, at=now)
        return lock

    def _unlock_if_free(self, lock: Lock, *, actor: str, at: datetime) -> None:
        account = self._session.get(Account, lock.account_id)
        if account is None or account.status != AccountStatus.LOCKED:
            return
        if any(other.id != lock.id for other in self.open_locks(account.id)):
            return
        self._set_account_status(account, AccountEvent.UNLOCK)
        self._outbox.webhook(WebhookEvent.ACCOUNT_UNLOCKED, {
            "account_id": account.id, "lock_id": str(lock.id), "reference": lock.reference,
            "resolution": lock.resolution, "unlocked_at": at.isoformat(), "status": account.status,
        }, ordering_key=account.id)
        self._session.flush()

    def expire_due(self, *, account_id: str | None = None, limit: int = EXPIRY_BATCH) -> list[Lock]:
        """Release temporary locks whose ``expires_at`` has passed (all accounts, or one)."""
        now = self._clock.now()
        query = select(Lock).where(
            Lock.status == LockStatus.ACTIVE, Lock.expires_at.is_not(None), Lock.expires_at <= now
        )
        if account_id is not None:
            query = query.where(Lock.account_id == account_id)
        due = list(self._session.scalars(query.order_by(Lock.expires_at).limit(limit)))
        for lock in due:
            self.release(lock, LockEvent.EXPIRE, actor=SYSTEM_ACTOR, note="temporary lock expired")
        return due

    def complete_action(self, account_id: str, action: RequiredAction, *, actor: str) -> list[Lock]:
        """Record that the user completed ``action`` (e.g. a password reset).

        Locks awaiting that action note it and are released once nothing is left; a password reset
        also releases brute-force locks. Returns the locks that were released.
        """
        released: list[Lock] = []
        for lock in self.open_locks(account_id):
            if lock.status == LockStatus.AWAITING_ACTIONS and str(action) in lock.required_actions:
                if str(action) not in lock.completed_actions:
                    lock.completed_actions = [*lock.completed_actions, str(action)]
                    self._audit.record(AuditTag.LOCK_ACTION_COMPLETED, actor=actor, subject_type="account",
                                       subject_id=account_id, data={**lock.as_dict(), "action": str(action)})
                if set(lock.required_actions) <= set(lock.completed_actions):
                    released.append(self.release(lock, LockEvent.ACTIONS_COMPLETED, actor=actor))
            elif (action is RequiredAction.RESET_PASSWORD and lock.kind == LockKind.BRUTE_FORCE
                  and lock.status == LockStatus.ACTIVE):
                released.append(self.release(lock, LockEvent.PASSWORD_RESET, actor=actor))
        return released

    def restrict(self, account: Account, *, reasons: Sequence[Mapping[str, Any]], actor: str) -> bool:
        """Restrict an active account (outgoing transactions held). Returns False if nothing changed.

        A locked or already restricted account stays as it is: a lock is stronger than a restriction.
        """
        if account.status != AccountStatus.ACTIVE:
            return False
        self._set_account_status(account, AccountEvent.RESTRICT)
        now = self._clock.now()
        rules = [str(r.get("rule", "")) for r in reasons]
        self._audit.record(AuditTag.ACCOUNT_RESTRICTED, actor=actor, subject_type="account",
                           subject_id=account.id, data={"reasons": rules})
        self._outbox.webhook(WebhookEvent.ACCOUNT_RESTRICTED, {
            "account_id": account.id, "restricted_at": now.isoformat(),
            "reasons": [{"rule": str(r.get("rule", "")), "detail": str(r.get("detail", ""))} for r in reasons],
        }, ordering_key=account.id)
        self._session.flush()
        return True

    def lift_restriction(self, account: Account, *, actor: str) -> None:
        """Return a restricted account to active (operator decision)."""
        self._set_account_status(account, AccountEvent.LIFT_RESTRICTION)
        self._audit.record(AuditTag.RESTRICTION_LIFTED, actor=actor, subject_type="account",
                           subject_id=account.id, data={})
        self._outbox.webhook(WebhookEvent.ACCOUNT_UNLOCKED, {
            "account_id": account.id, "unlocked_at": self._clock.now().isoformat(), "status": "active",
            "resolution": "restriction_lifted",
        }, ordering_key=account.id)
        self._session.flush()

    # --- helpers ------------------------------------------------------------------------------

    def _set_account_status(self, account: Account, event: AccountEvent) -> None:
        try:
            account.status = next_account_status(AccountStatus(account.status), event)
        except IllegalTransition as exc:
            raise InvalidTransition(str(exc), account_status=account.status, event=str(event)) from exc
        account.updated_at = self._clock.now()

    def _history(self, lock: Lock, *, actor: str, event: str, from_status: str | None,
                 note: str | None) -> None:
        self._session.add(LockHistory(
            lock_id=lock.id, at=self._clock.now(), actor=actor, event=str(event),
            from_status=from_status, to_status=lock.status, note=note,
        ))
