"""The login check's second factor, behind one small contract.

TOTP and recovery codes belong to the credentials slice. The login check only needs to know, for an
account whose password was right: is a second factor enrolled, and did the request carry a valid
one? :func:`login_second_factor` is the single place that picks the implementation; until the
credentials slice provides one, :class:`NoSecondFactor` reports "not enrolled" for everyone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from security.accounts.models import Account


class SecondFactorOutcome(StrEnum):
    """What the second-factor check found."""

    NOT_ENROLLED = "not_enrolled"  # password alone decides
    MISSING = "missing"  # enrolled, no code sent -> mfa_required
    VERIFIED = "verified"  # enrolled and a valid, unused code was sent
    INVALID = "invalid"  # enrolled and the code was wrong or replayed -> counts as a failed login


class SecondFactorVerifier(Protocol):
    """Checks the TOTP or recovery code sent with a login."""

    def check(self, account: Account, *, totp_code: str | None, recovery_code: str | None,
              at: datetime) -> SecondFactorOutcome:
        """Return the outcome; a verified code must be consumed (replay-safe) in the caller's transaction."""
        ...


class NoSecondFactor:
    """Null twin: no account has a second factor enrolled."""

    def check(self, account: Account, *, totp_code: str | None, recovery_code: str | None,
              at: datetime) -> SecondFactorOutcome:
        return SecondFactorOutcome.NOT_ENROLLED


def login_second_factor(deps: Any) -> SecondFactorVerifier:
    """Return the verifier the login check uses (WIRE HERE: the credentials slice's TOTP service).

    ``deps`` is the request's :class:`security.web.deps.Deps`. Replace the body with the credentials
    slice's verifier once it is merged, e.g. ``return TotpSecondFactor(deps.session, ...)``.
    """
    return NoSecondFactor()
