"""The login check's second factor, behind one small contract.

TOTP and recovery codes belong to the credentials slice. The login check only needs to know, for an
account whose password was right: is a second factor enrolled, and did the request carry a valid
one? ``security.risk.views.login_second_factor`` is the single place that picks the implementation.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.audit.services import AuditLog
from security.credentials.interfaces import SecondFactorOutcome as CredentialOutcome
from security.credentials.services import verify_second_factor
from security.crypto import SecretBox
from security.delivery.outbox import Outbox


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
    """Null twin: no account has a second factor enrolled (demo data, unit tests)."""

    def check(self, account: Account, *, totp_code: str | None, recovery_code: str | None,
              at: datetime) -> SecondFactorOutcome:
        return SecondFactorOutcome.NOT_ENROLLED


class CredentialsSecondFactor:
    """The credentials slice's TOTP / recovery-code check, seen through the login check's contract.

    A wrong, replayed or already used code counts as a failed login; the credentials slice records
    the failure on the authenticator itself (returned, not raised, so the request commits it).
    """

    def __init__(self, session: Session, *, secret_box: SecretBox, audit: AuditLog, outbox: Outbox) -> None:
        self._session = session
        self._box = secret_box
        self._audit = audit
        self._outbox = outbox

    def check(self, account: Account, *, totp_code: str | None, recovery_code: str | None,
              at: datetime) -> SecondFactorOutcome:
        result = verify_second_factor(
            self._session, account.id, totp_code=totp_code, recovery_code=recovery_code, at=at,
            secret_box=self._box, audit=self._audit, outbox=self._outbox, actor="user",
        )
        return _OUTCOMES[result.outcome]


_OUTCOMES = {
    CredentialOutcome.NOT_ENROLLED: SecondFactorOutcome.NOT_ENROLLED,
    CredentialOutcome.MISSING: SecondFactorOutcome.MISSING,
    CredentialOutcome.ACCEPTED_TOTP: SecondFactorOutcome.VERIFIED,
    CredentialOutcome.ACCEPTED_RECOVERY_CODE: SecondFactorOutcome.VERIFIED,
    CredentialOutcome.REJECTED: SecondFactorOutcome.INVALID,
}
