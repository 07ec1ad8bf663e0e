"""Contracts of the appeals slice: its errors and the outcomes its services return.

Refusals that must leave a trace (a wrong code, an exhausted method, an appeal found expired) are
*returned* as outcomes so the request commits the counters and audit entries; the view turns them into
the problem response with :func:`refusal_error`. Raised errors mean nothing happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from security.errors import BadRequest, Conflict, FoxguardError, NotFound, Unauthenticated


class InvalidAppealToken(Unauthenticated):
    """Unknown appeal, wrong token, or a token of another appeal: one answer for all."""

    code = "invalid_appeal_token"
    title = "The appeal token is not valid for this appeal"


class AppealNotFound(NotFound):
    """Service API (operators): no appeal with this id."""

    code = "appeal_not_found"
    title = "No such appeal"


class AppealClosed(Conflict):
    code = "appeal_closed"
    title = "The appeal is closed"


class AppealExpired(Conflict):
    code = "appeal_expired"
    title = "The appeal expired before it was verified; start a new one"


class VerificationNotNeeded(Conflict):
    code = "verification_not_needed"
    title = "This verification is not needed now"


class VerificationFailed(BadRequest):
    """A wrong answer: which part was wrong is never said."""

    code = "verification_failed"
    title = "The verification did not succeed"


class CodeExpired(BadRequest):
    code = "code_expired"
    title = "The code expired or was replaced; ask for a new one"


class AttemptsExhausted(Conflict):
    code = "verification_attempts_exhausted"
    title = "No attempts left for this verification"


class TooManyCodes(Conflict):
    code = "too_many_codes"
    title = "No more codes can be sent for this appeal"


class NotReviewable(Conflict):
    code = "appeal_not_reviewable"
    title = "The appeal is not waiting for a review"


class FourEyesViolation(Conflict):
    code = "four_eyes_violation"
    title = "This operator already reviewed the appeal; another operator must decide"


class ReasonRequired(BadRequest):
    code = "user_reason_required"
    title = "A rejection needs a reason the user can read"


class ActionNotPending(Conflict):
    code = "action_not_pending"
    title = "This action is not pending for the appeal"


class FreezeRefused(BadRequest):
    """Unknown identifier, wrong password or wrong code: one answer for all (no enumeration)."""

    code = "freeze_refused"
    title = "The account could not be frozen with these details"


class VerificationOutcome(StrEnum):
    """What one verification attempt came to."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # wrong answer (counted)
    CODE_EXPIRED = "code_expired"  # counted: a guess at an expired code is still a guess
    EXHAUSTED = "exhausted"  # method or appeal limit reached (not evaluated)
    APPEAL_EXPIRED = "appeal_expired"  # the appeal ran out of time (it is now expired)


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """Result of :meth:`~security.appeals.services.AppealService.verify`."""

    outcome: VerificationOutcome
    # Attempts left for this method (after this attempt); None when the appeal expired.
    attempts_left: int | None = None

    @property
    def accepted(self) -> bool:
        """The verification succeeded."""
        return self.outcome is VerificationOutcome.ACCEPTED


def refusal_error(result: VerificationResult) -> FoxguardError:
    """The problem a refused verification is answered with (the view returns it as a value)."""
    match result.outcome:
        case VerificationOutcome.REJECTED:
            return VerificationFailed(attempts_left=result.attempts_left)
        case VerificationOutcome.CODE_EXPIRED:
            return CodeExpired(attempts_left=result.attempts_left)
        case VerificationOutcome.EXHAUSTED:
            return AttemptsExhausted(attempts_left=0)
        case VerificationOutcome.APPEAL_EXPIRED:
            return AppealExpired()
    raise ValueError(f"not a refusal: {result.outcome}")


class FreezeOutcome(StrEnum):
    """What a freeze request came to."""

    FROZEN = "frozen"  # a new user_reported lock
    ALREADY_FROZEN = "already_frozen"  # an open user_reported lock exists already
    REFUSED = "refused"  # unknown identifier or wrong proof (counted where there is something to count)


@dataclass(frozen=True, slots=True)
class FreezeResult:
    """Result of :meth:`~security.appeals.services.FreezeService.freeze`."""

    outcome: FreezeOutcome
    reference: str | None = None
