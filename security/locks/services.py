"""Lock use cases: place, release, expire, restrict (no Flask; the caller commits).

Every change goes through the pure transition table (``security.locks.states``), is appended to
``lock_history``, audited and announced through the outbox in the caller's transaction. Locks carry a
version column: two simultaneous releases of the same lock give one winner; the loser's flush
raises ``StaleDataError`` which the web layer turns into 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

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
#: The lock notice sent to the account's registered contact (security/delivery/templates).
LOCK_NOTICE_TEMPLATE: Final = "lock_notice"
#: What the owner is told about why; the detailed rule reasons stay with operators.
LOCK_NOTICE_REASONS: Final[Mapping[str, str]] = {
    LockKind.BRUTE_FORCE: "Several wrong passwords were entered for your account.",
    LockKind.RISK: "We noticed unusual activity on your account.",
    LockKind.OPERATOR: "Our security team locked your account while they review it.",
    LockKind.USER_REPORTED: "You reported that your account may be in someone else's hands.",
}
SYSTEM_ACTOR: Final = "system"
RESTRICTION_LIFTED: Final = "restriction_lifted"
RESTRICTION_EXPIRED: Final = "restriction_expired"
"""How a restriction ended (the ``resolution`` of its ``account.unlocked`` webhook)."""


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


@dataclass(frozen=True)
class Expired:
    """What one expiry sweep ended: temporary locks released and restrictions lifted."""

    locks: list[Lock]
    restrictions: list[Account]


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
        context: dict[str, Any] = {"case_reference": lock.reference, "reason": LOCK_NOTICE_REASONS[kind]}
        if expires_at is not None:
            context["expires_at"] = expires_at.strftime("%Y-%m-%d %H:%M UTC")
        self._outbox.notify(email=account.email, phone=account.phone, template=LOCK_NOTICE_TEMPLATE,
                            context=context, ordering_key=account.id)
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

    def expire_due(self, *, account_id: str | None = None, limit: int = EXPIRY_BATCH) -> Expired:
        """End what has run out (all accounts, or one): temporary locks whose ``expires_at`` has passed
        are released, and restrictions whose ``restricted_until`` has passed are lifted.

        The one expiry path: the ``locks expire`` sweep and the risk engine (before it decides about an
        account) both call it.
        """
        now = self._clock.now()
        query = select(Lock).where(
            Lock.status == LockStatus.ACTIVE, Lock.expires_at.is_not(None), Lock.expires_at <= now
        )
        if account_id is not None:
            query = query.where(Lock.account_id == account_id)
        due = list(self._session.scalars(query.order_by(Lock.expires_at).limit(limit)))
        for lock in due:
            self.release(lock, LockEvent.EXPIRE, actor=SYSTEM_ACTOR, note="temporary lock expired")
        restricted = select(Account).where(
            Account.status == AccountStatus.RESTRICTED, Account.restricted_until.is_not(None),
            Account.restricted_until <= now,
        )
        if account_id is not None:
            restricted = restricted.where(Account.id == account_id)
        lifted = list(self._session.scalars(restricted.order_by(Account.restricted_until, Account.id).limit(limit)))
        for account in lifted:
            self.lift_restriction(account, actor=SYSTEM_ACTOR, expired=True)
        return Expired(locks=due, restrictions=lifted)

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

    def restrict(self, account: Account, *, reasons: Sequence[Mapping[str, Any]], actor: str,
                 expires_at: datetime | None = None) -> bool:
        """Restrict an active account (outgoing transactions held). Returns False if nothing changed.

        With ``expires_at`` the restriction lifts itself then (:meth:`expire_due`); without, it lasts
        until lifted. A locked or already restricted account stays as it is: a lock is stronger than a
        restriction. The caller checks that ``expires_at`` lies in the future.
        """
        if account.status != AccountStatus.ACTIVE:
            return False
        self._set_account_status(account, AccountEvent.RESTRICT)
        account.restricted_until = expires_at
        now = self._clock.now()
        until = expires_at.isoformat() if expires_at is not None else None
        rules = [str(r.get("rule", "")) for r in reasons]
        self._audit.record(AuditTag.ACCOUNT_RESTRICTED, actor=actor, subject_type="account",
                           subject_id=account.id, data={"reasons": rules, "expires_at": until})
        self._outbox.webhook(WebhookEvent.ACCOUNT_RESTRICTED, {
            "account_id": account.id, "restricted_at": now.isoformat(), "expires_at": until,
            "reasons": [{"rule": str(r.get("rule", "")), "detail": str(r.get("detail", ""))} for r in reasons],
        }, ordering_key=account.id)
        self._session.flush()
        return True

    def lift_restriction(self, account: Account, *, actor: str, expired: bool = False) -> None:
        """Return a restricted account to active (operator decision, or ``expired`` by :meth:`expire_due`)."""
        self._set_account_status(account, AccountEvent.LIFT_RESTRICTION)
        resolution = RESTRICTION_EXPIRED if expired else RESTRICTION_LIFTED
        self._audit.record(AuditTag.RESTRICTION_LIFTED, actor=actor, subject_type="account",
                           subject_id=account.id, data={"resolution": resolution})
        self._outbox.webhook(WebhookEvent.ACCOUNT_UNLOCKED, {
            "account_id": account.id, "unlocked_at": self._clock.now().isoformat(), "status": "active",
            "resolution": resolution,
        }, ordering_key=account.id)
        self._session.flush()

    # --- helpers ------------------------------------------------------------------------------

    def _set_account_status(self, account: Account, event: AccountEvent) -> None:
        try:
            account.status = next_account_status(AccountStatus(account.status), event)
        except IllegalTransition as exc:
            raise InvalidTransition(str(exc), account_status=account.status, event=str(event)) from exc
        if account.status != AccountStatus.RESTRICTED:
            # A restriction's expiry belongs to it: lifted, or overtaken by a lock, it is gone (a later
            # unlock returns the account to active, not to a half-expired restriction).
            account.restricted_until = None
        account.updated_at = self._clock.now()
        # Always write the row, even when nothing changed (locked -> locked at the same instant): the
        # UPDATE carries the version check that makes a concurrent unlock lose instead of leaving the
        # account active beside the new lock.
        flag_modified(account, "status")

    def _history(self, lock: Lock, *, actor: str, event: str, from_status: str | None,
                 note: str | None) -> None:
        self._session.add(LockHistory(
            lock_id=lock.id, at=self._clock.now(), actor=actor, event=str(event),
            from_status=from_status, to_status=lock.status, note=note,
        ))
