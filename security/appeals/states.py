"""The appeal state machine: ONE pure transition table (no Flask, no SQLAlchemy).

::

    submitted -> verifying -> pending_review -> approved -> released
                     |              |       \\-> rejected
                     |              \\-> (first of two approvals: stays pending_review)
                     \\-> approved (the lock kind needs no review: approval is automatic)
    submitted | verifying -> expired (not verified in time)
    submitted | verifying | pending_review -> withdrawn (the user gives up)
    any open state -> released (the lock was released some other way, e.g. an operator unlock)

Each row also names the actor kinds that may cause the transition, so an operator cannot "verify" on
the user's behalf and a user cannot approve their own appeal. Anything not in the table raises
:class:`IllegalTransition` (the service layer maps it to 409).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class AppealState(StrEnum):
    """Where an appeal stands."""

    SUBMITTED = "submitted"  # created; nothing proven yet
    VERIFYING = "verifying"  # at least one verification succeeded, more are needed
    PENDING_REVIEW = "pending_review"  # identity proven as the policy asks; waiting for operator(s)
    APPROVED = "approved"  # approved; the lock is released once the required actions are done
    REJECTED = "rejected"  # refused with a reason shown to the user; the lock stays
    RELEASED = "released"  # the lock is gone
    EXPIRED = "expired"  # not verified in time
    WITHDRAWN = "withdrawn"  # the user gave up


class AppealEvent(StrEnum):
    """Things that happen to an appeal."""

    VERIFICATION_PASSED = "verification_passed"  # a verification succeeded but more are required
    VERIFICATION_COMPLETE = "verification_complete"  # every required verification done; review next
    AUTO_APPROVE = "auto_approve"  # every required verification done and no review needed
    FIRST_APPROVAL = "first_approval"  # four-eyes: one of two approvals recorded
    APPROVE = "approve"  # the (last) approval
    REJECT = "reject"
    RELEASE = "release"  # required actions done (or none): the lock was released
    LOCK_RELEASED = "lock_released"  # the lock ended some other way (operator unlock, expiry)
    EXPIRE = "expire"
    WITHDRAW = "withdraw"


class ActorKind(StrEnum):
    """Who causes a transition."""

    USER = "user"  # the account owner, holding the appeal token
    OPERATOR = "operator"
    SYSTEM = "system"  # sweeps, policy-driven automatic steps


class IllegalTransition(Exception):
    """A transition that the table does not allow from this state (or not for this actor)."""

    def __init__(self, state: AppealState, event: AppealEvent, actor: ActorKind, *, why: str) -> None:
        self.state = state
        self.event = event
        self.actor = actor
        self.why = why
        super().__init__(f"appeal: cannot {event} from {state} as {actor}: {why}")


class ActorNotAllowed(IllegalTransition):
    """The transition exists from this state, but this kind of actor may not trigger it."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table: the target state and who may cause it."""

    to: AppealState
    actors: frozenset[ActorKind]


_USER: Final = frozenset({ActorKind.USER})
_OPERATOR: Final = frozenset({ActorKind.OPERATOR})
_SYSTEM: Final = frozenset({ActorKind.SYSTEM})
# Automatic steps happen inside the user's verification request, decided by policy, not by the user.
_USER_OR_SYSTEM: Final = frozenset({ActorKind.USER, ActorKind.SYSTEM})
_OPERATOR_OR_SYSTEM: Final = frozenset({ActorKind.OPERATOR, ActorKind.SYSTEM})
_ANYONE: Final = frozenset(ActorKind)

S = AppealState
E = AppealEvent

TRANSITIONS: Final[Mapping[tuple[AppealState, AppealEvent], Transition]] = {
    (S.SUBMITTED, E.VERIFICATION_PASSED): Transition(S.VERIFYING, _USER),
    (S.VERIFYING, E.VERIFICATION_PASSED): Transition(S.VERIFYING, _USER),
    (S.VERIFYING, E.VERIFICATION_COMPLETE): Transition(S.PENDING_REVIEW, _USER_OR_SYSTEM),
    (S.VERIFYING, E.AUTO_APPROVE): Transition(S.APPROVED, _USER_OR_SYSTEM),
    (S.PENDING_REVIEW, E.FIRST_APPROVAL): Transition(S.PENDING_REVIEW, _OPERATOR),
    (S.PENDING_REVIEW, E.APPROVE): Transition(S.APPROVED, _OPERATOR),
    (S.PENDING_REVIEW, E.REJECT): Transition(S.REJECTED, _OPERATOR),
    (S.VERIFYING, E.REJECT): Transition(S.REJECTED, _OPERATOR),  # e.g. evident fraud before review
    (S.SUBMITTED, E.REJECT): Transition(S.REJECTED, _OPERATOR),
    (S.APPROVED, E.RELEASE): Transition(S.RELEASED, _ANYONE),
    (S.SUBMITTED, E.EXPIRE): Transition(S.EXPIRED, _SYSTEM),
    (S.VERIFYING, E.EXPIRE): Transition(S.EXPIRED, _SYSTEM),
    (S.SUBMITTED, E.WITHDRAW): Transition(S.WITHDRAWN, _USER),
    (S.VERIFYING, E.WITHDRAW): Transition(S.WITHDRAWN, _USER),
    (S.PENDING_REVIEW, E.WITHDRAW): Transition(S.WITHDRAWN, _USER),
    (S.SUBMITTED, E.LOCK_RELEASED): Transition(S.RELEASED, _OPERATOR_OR_SYSTEM),
    (S.VERIFYING, E.LOCK_RELEASED): Transition(S.RELEASED, _OPERATOR_OR_SYSTEM),
    (S.PENDING_REVIEW, E.LOCK_RELEASED): Transition(S.RELEASED, _OPERATOR_OR_SYSTEM),
    (S.APPROVED, E.LOCK_RELEASED): Transition(S.RELEASED, _OPERATOR_OR_SYSTEM),
}

#: States in which the appeal still runs (one open appeal per lock).
OPEN_STATES: Final = frozenset({S.SUBMITTED, S.VERIFYING, S.PENDING_REVIEW, S.APPROVED})
#: States nothing leaves.
FINAL_STATES: Final = frozenset(AppealState) - OPEN_STATES
#: States in which the user may still submit verifications.
VERIFIABLE_STATES: Final = frozenset({S.SUBMITTED, S.VERIFYING})


def next_state(current: AppealState, event: AppealEvent, actor: ActorKind) -> AppealState:
    """Return the state after ``event`` caused by ``actor``.

    Raises :class:`ActorNotAllowed` when the transition exists but not for this actor kind, and
    :class:`IllegalTransition` when it does not exist from ``current`` at all.
    """
    row = TRANSITIONS.get((current, event))
    if row is None:
        raise IllegalTransition(current, event, actor, why="no such transition")
    if actor not in row.actors:
        raise ActorNotAllowed(current, event, actor, why=f"only {', '.join(sorted(row.actors))} may")
    return row.to


def allowed_events(current: AppealState, actor: ActorKind) -> frozenset[AppealEvent]:
    """Return the events ``actor`` may cause from ``current`` (for UIs and the review queue)."""
    return frozenset(event for (state, event), row in TRANSITIONS.items() if state is current and actor in row.actors)


def is_open(state: AppealState) -> bool:
    """Return whether the appeal still runs (not rejected, released, expired or withdrawn)."""
    return state in OPEN_STATES
