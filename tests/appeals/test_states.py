"""The appeal transition table: every legal path, illegal transitions and actor restrictions."""

from __future__ import annotations

import pytest

from security.appeals.states import (
    FINAL_STATES,
    OPEN_STATES,
    TRANSITIONS,
    ActorKind,
    ActorNotAllowed,
    AppealEvent,
    AppealState,
    IllegalTransition,
    allowed_events,
    is_open,
    next_state,
)

S = AppealState
E = AppealEvent
A = ActorKind


def run(path: list[tuple[AppealEvent, ActorKind]], start: AppealState = S.SUBMITTED) -> AppealState:
    state = start
    for event, actor in path:
        state = next_state(state, event, actor)
    return state


def test_review_path_with_four_eyes_ends_released() -> None:
    path = [
        (E.VERIFICATION_PASSED, A.USER),
        (E.VERIFICATION_COMPLETE, A.USER),
        (E.FIRST_APPROVAL, A.OPERATOR),
        (E.APPROVE, A.OPERATOR),
        (E.RELEASE, A.USER),
    ]
    assert run(path) is S.RELEASED


def test_automatic_path_skips_review() -> None:
    assert run([(E.VERIFICATION_PASSED, A.USER), (E.AUTO_APPROVE, A.USER)]) is S.APPROVED


def test_rejection_is_final() -> None:
    state = run([(E.VERIFICATION_PASSED, A.USER), (E.VERIFICATION_COMPLETE, A.USER), (E.REJECT, A.OPERATOR)])
    assert state is S.REJECTED
    assert not is_open(state)
    assert allowed_events(state, A.OPERATOR) == frozenset()
    with pytest.raises(IllegalTransition):
        next_state(state, E.APPROVE, A.OPERATOR)
    with pytest.raises(IllegalTransition):
        next_state(state, E.RELEASE, A.SYSTEM)


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_nothing_leaves_a_final_state(state: AppealState) -> None:
    for event in AppealEvent:
        for actor in ActorKind:
            with pytest.raises(IllegalTransition):
                next_state(state, event, actor)


def test_user_cannot_approve_and_operator_cannot_verify() -> None:
    with pytest.raises(ActorNotAllowed) as caught:
        next_state(S.PENDING_REVIEW, E.APPROVE, A.USER)
    assert caught.value.state is S.PENDING_REVIEW
    assert caught.value.event is E.APPROVE
    with pytest.raises(ActorNotAllowed):
        next_state(S.SUBMITTED, E.VERIFICATION_PASSED, A.OPERATOR)
    with pytest.raises(ActorNotAllowed):
        next_state(S.SUBMITTED, E.EXPIRE, A.USER)


def test_release_requires_approval_first() -> None:
    for state in (S.SUBMITTED, S.VERIFYING, S.PENDING_REVIEW):
        with pytest.raises(IllegalTransition):
            next_state(state, E.RELEASE, A.SYSTEM)


def test_pending_review_neither_expires_nor_is_verified_again() -> None:
    # Operators being slow must not expire a verified appeal.
    with pytest.raises(IllegalTransition):
        next_state(S.PENDING_REVIEW, E.EXPIRE, A.SYSTEM)
    with pytest.raises(IllegalTransition):
        next_state(S.PENDING_REVIEW, E.VERIFICATION_PASSED, A.USER)


def test_withdraw_and_expire() -> None:
    assert next_state(S.VERIFYING, E.WITHDRAW, A.USER) is S.WITHDRAWN
    assert next_state(S.SUBMITTED, E.EXPIRE, A.SYSTEM) is S.EXPIRED
    with pytest.raises(IllegalTransition):
        next_state(S.APPROVED, E.WITHDRAW, A.USER)


def test_lock_released_elsewhere_closes_every_open_appeal() -> None:
    for state in OPEN_STATES:
        assert next_state(state, E.LOCK_RELEASED, A.SYSTEM) is S.RELEASED


def test_table_is_consistent() -> None:
    assert frozenset(AppealState) == OPEN_STATES | FINAL_STATES
    assert not OPEN_STATES & FINAL_STATES
    for (state, _event), row in TRANSITIONS.items():
        assert state in OPEN_STATES
        assert row.actors
    assert allowed_events(S.PENDING_REVIEW, A.OPERATOR) == {E.FIRST_APPROVAL, E.APPROVE, E.REJECT, E.LOCK_RELEASED}
