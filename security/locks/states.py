"""The one transition table for account status and lock lifecycle (pure).

Account status: ``active`` -> ``restricted`` (login allowed, outgoing transactions held) ->
``locked`` (login and transactions denied). A lock: ``active`` -> ``awaiting_actions`` (approved,
but required actions such as a password reset are still open) -> ``released``. Every change goes
through :func:`next_account_status` / :func:`next_lock_status`; anything not in the tables raises
:class:`IllegalTransition`, which the web layer maps to 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class AccountStatus(StrEnum):
    """What the wallet may let the account do."""

    ACTIVE = "active"
    RESTRICTED = "restricted"
    LOCKED = "locked"


class AccountEvent(StrEnum):
    """Things that change an account's status."""

    LOCK = "lock"  # a lock was created (a second lock on a locked account keeps it locked)
    RESTRICT = "restrict"
    LIFT_RESTRICTION = "lift_restriction"
    UNLOCK = "unlock"  # the last active lock was released


class LockKind(StrEnum):
    """Why a lock exists; the kind decides expiry and the assurance an appeal needs."""

    BRUTE_FORCE = "brute_force"  # temporary (expires_at) unless it escalated to indefinite
    RISK = "risk"  # automatic, from a critical risk assessment
    OPERATOR = "operator"  # placed by hand
    USER_REPORTED = "user_reported"  # the user said "not me" (freeze)


class LockStatus(StrEnum):
    """Lifecycle of one lock."""

    ACTIVE = "active"
    AWAITING_ACTIONS = "awaiting_actions"
    RELEASED = "released"


class LockEvent(StrEnum):
    """Things that happen to a lock."""

    EXPIRE = "expire"  # a temporary lock reached expires_at
    OPERATOR_UNLOCK = "operator_unlock"
    APPEAL_APPROVED = "appeal_approved"  # no required actions left
    APPEAL_APPROVED_WITH_ACTIONS = "appeal_approved_with_actions"
    ACTIONS_COMPLETED = "actions_completed"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a label, not a secret; releases a brute-force lock (Keycloak: reset clears it)


class RequiredAction(StrEnum):
    """What the user must do before a lock is released."""

    RESET_PASSWORD = "reset_password"  # noqa: S105 - a label, not a secret
    ENROLL_TOTP = "enroll_totp"


class Resolution(StrEnum):
    """How a lock ended (stored on the released lock)."""

    EXPIRED = "expired"
    OPERATOR_UNLOCKED = "operator_unlocked"
    APPEAL_APPROVED = "appeal_approved"
    ACTIONS_COMPLETED = "actions_completed"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a label, not a secret


class IllegalTransition(Exception):  # noqa: N818 - named for what happened, per house style
    """A state change that the transition table does not allow."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine}: cannot {event} from {state}")


ACCOUNT_TRANSITIONS: Final[Mapping[tuple[AccountStatus, AccountEvent], AccountStatus]] = {
    (AccountStatus.ACTIVE, AccountEvent.LOCK): AccountStatus.LOCKED,
    (AccountStatus.RESTRICTED, AccountEvent.LOCK): AccountStatus.LOCKED,
    (AccountStatus.LOCKED, AccountEvent.LOCK): AccountStatus.LOCKED,
    (AccountStatus.ACTIVE, AccountEvent.RESTRICT): AccountStatus.RESTRICTED,
    (AccountStatus.RESTRICTED, AccountEvent.RESTRICT): AccountStatus.RESTRICTED,
    (AccountStatus.RESTRICTED, AccountEvent.LIFT_RESTRICTION): AccountStatus.ACTIVE,
    (AccountStatus.LOCKED, AccountEvent.UNLOCK): AccountStatus.ACTIVE,
}

LOCK_TRANSITIONS: Final[Mapping[tuple[LockStatus, LockEvent], tuple[LockStatus, Resolution | None]]] = {
    (LockStatus.ACTIVE, LockEvent.EXPIRE): (LockStatus.RELEASED, Resolution.EXPIRED),
    (LockStatus.ACTIVE, LockEvent.OPERATOR_UNLOCK): (LockStatus.RELEASED, Resolution.OPERATOR_UNLOCKED),
    (LockStatus.ACTIVE, LockEvent.APPEAL_APPROVED): (LockStatus.RELEASED, Resolution.APPEAL_APPROVED),
    (LockStatus.ACTIVE, LockEvent.APPEAL_APPROVED_WITH_ACTIONS): (LockStatus.AWAITING_ACTIONS, None),
    (LockStatus.ACTIVE, LockEvent.PASSWORD_RESET): (LockStatus.RELEASED, Resolution.PASSWORD_RESET),
    (LockStatus.AWAITING_ACTIONS, LockEvent.ACTIONS_COMPLETED): (
        LockStatus.RELEASED, Resolution.ACTIONS_COMPLETED,
    ),
    (LockStatus.AWAITING_ACTIONS, LockEvent.OPERATOR_UNLOCK): (
        LockStatus.RELEASED, Resolution.OPERATOR_UNLOCKED,
    ),
}

#: Lock kinds a password reset releases on its own (the attacker only guessed; nothing was proven).
RELEASED_BY_PASSWORD_RESET: Final = frozenset({LockKind.BRUTE_FORCE})
#: Lock kinds that may expire by themselves.
EXPIRING_KINDS: Final = frozenset({LockKind.BRUTE_FORCE})


def next_account_status(current: AccountStatus, event: AccountEvent) -> AccountStatus:
    """Return the account status after ``event``; raise :class:`IllegalTransition` if not allowed."""
    try:
        return ACCOUNT_TRANSITIONS[(current, event)]
    except KeyError:
        raise IllegalTransition("account", current, event) from None


def next_lock_status(
    current: LockStatus, event: LockEvent, *, kind: LockKind, temporary: bool
) -> tuple[LockStatus, Resolution | None]:
    """Return the lock status (and resolution, once released) after ``event``.

    Only temporary locks of an expiring kind may ``expire``; only brute-force locks are released by
    a password reset. Raises :class:`IllegalTransition` otherwise.
    """
    if event is LockEvent.EXPIRE and (kind not in EXPIRING_KINDS or not temporary):
        raise IllegalTransition(f"lock ({kind})", current, event)
    if event is LockEvent.PASSWORD_RESET and kind not in RELEASED_BY_PASSWORD_RESET:
        raise IllegalTransition(f"lock ({kind})", current, event)
    try:
        return LOCK_TRANSITIONS[(current, event)]
    except KeyError:
        raise IllegalTransition(f"lock ({kind})", current, event) from None


def is_open(status: LockStatus) -> bool:
    """Return whether a lock still keeps the account locked."""
    return status is not LockStatus.RELEASED
