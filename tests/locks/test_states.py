"""The account-status and lock transition tables."""

from __future__ import annotations

import itertools

import pytest

from security.locks.states import (
    ACCOUNT_TRANSITIONS,
    AccountEvent,
    AccountStatus,
    IllegalTransition,
    LockEvent,
    LockKind,
    LockStatus,
    Resolution,
    is_open,
    next_account_status,
    next_lock_status,
)

A, E = AccountStatus, AccountEvent


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        (A.ACTIVE, E.LOCK, A.LOCKED),
        (A.RESTRICTED, E.LOCK, A.LOCKED),
        (A.LOCKED, E.LOCK, A.LOCKED),
        (A.ACTIVE, E.RESTRICT, A.RESTRICTED),
        (A.RESTRICTED, E.LIFT_RESTRICTION, A.ACTIVE),
        (A.LOCKED, E.UNLOCK, A.ACTIVE),
    ],
)
def test_allowed_account_transitions(current: A, event: E, expected: A) -> None:
    assert next_account_status(current, event) is expected


def test_everything_else_is_illegal() -> None:
    for current, event in itertools.product(A, E):
        if (current, event) in ACCOUNT_TRANSITIONS:
            continue
        with pytest.raises(IllegalTransition) as info:
            next_account_status(current, event)
        assert (info.value.state, info.value.event) == (current, event)
        assert str(info.value) == f"account: cannot {event} from {current}"


def test_restricting_a_locked_account_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        next_account_status(A.LOCKED, E.RESTRICT)


def test_temporary_brute_force_lock_expires() -> None:
    status, resolution = next_lock_status(LockStatus.ACTIVE, LockEvent.EXPIRE,
                                          kind=LockKind.BRUTE_FORCE, temporary=True)
    assert (status, resolution) == (LockStatus.RELEASED, Resolution.EXPIRED)
    assert not is_open(status)


@pytest.mark.parametrize(("kind", "temporary"), [
    (LockKind.BRUTE_FORCE, False),  # escalated to indefinite
    (LockKind.RISK, True),
    (LockKind.USER_REPORTED, True),
])
def test_only_temporary_brute_force_locks_expire(kind: LockKind, temporary: bool) -> None:
    with pytest.raises(IllegalTransition):
        next_lock_status(LockStatus.ACTIVE, LockEvent.EXPIRE, kind=kind, temporary=temporary)


def test_password_reset_releases_only_brute_force_locks() -> None:
    assert next_lock_status(LockStatus.ACTIVE, LockEvent.PASSWORD_RESET, kind=LockKind.BRUTE_FORCE,
                            temporary=False) == (LockStatus.RELEASED, Resolution.PASSWORD_RESET)
    with pytest.raises(IllegalTransition):
        next_lock_status(LockStatus.ACTIVE, LockEvent.PASSWORD_RESET, kind=LockKind.USER_REPORTED,
                         temporary=False)


def test_approval_with_required_actions_waits_for_them() -> None:
    status, resolution = next_lock_status(LockStatus.ACTIVE, LockEvent.APPEAL_APPROVED_WITH_ACTIONS,
                                          kind=LockKind.USER_REPORTED, temporary=False)
    assert (status, resolution) == (LockStatus.AWAITING_ACTIONS, None)
    assert is_open(status)
    assert next_lock_status(status, LockEvent.ACTIONS_COMPLETED, kind=LockKind.USER_REPORTED,
                            temporary=False) == (LockStatus.RELEASED, Resolution.ACTIONS_COMPLETED)


@pytest.mark.parametrize("event", list(LockEvent))
def test_released_lock_is_final(event: LockEvent) -> None:
    with pytest.raises(IllegalTransition):
        next_lock_status(LockStatus.RELEASED, event, kind=LockKind.BRUTE_FORCE, temporary=True)


def test_operator_unlock_from_any_open_state() -> None:
    for status in (LockStatus.ACTIVE, LockStatus.AWAITING_ACTIONS):
        assert next_lock_status(status, LockEvent.OPERATOR_UNLOCK, kind=LockKind.RISK,
                                temporary=False) == (LockStatus.RELEASED, Resolution.OPERATOR_UNLOCKED)
