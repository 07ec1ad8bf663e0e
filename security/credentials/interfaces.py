"""Contracts of the credentials slice: its errors, outcomes and the hook other slices plug into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy.orm import Session

from security.errors import BadRequest, Conflict


class InvalidResetToken(BadRequest):
    """Unknown, expired, used, voided or tampered: deliberately one error so none can be told apart."""

    code = "invalid_reset_token"
    title = "The password-reset token is not valid"


class SecondFactorRequired(BadRequest):
    code = "second_factor_required"
    title = "A TOTP code or a recovery code is required"


class SecondFactorRejected(BadRequest):
    """Wrong, replayed or already-used code (which one is never said)."""

    code = "second_factor_rejected"
    title = "The code is not valid"


class InvalidTotpCode(BadRequest):
    code = "invalid_totp_code"
    title = "The code does not match the authenticator being enrolled"


class TotpAlreadyEnabled(Conflict):
    code = "totp_already_enabled"
    title = "TOTP is already enabled for this account; disable it first"


class TotpNotEnabled(Conflict):
    code = "totp_not_enabled"
    title = "TOTP is not enabled for this account"


class TotpNotPending(Conflict):
    code = "totp_not_pending"
    title = "No TOTP enrollment is waiting for confirmation; start one first"


class SecondFactorOutcome(StrEnum):
    NOT_ENROLLED = "not_enrolled"  # no confirmed TOTP: nothing to check
    MISSING = "missing"  # enrolled, but neither code was given (not counted as a failure)
    ACCEPTED_TOTP = "accepted_totp"
    ACCEPTED_RECOVERY_CODE = "accepted_recovery_code"
    REJECTED = "rejected"  # wrong, replayed or used code; counted


@dataclass(frozen=True, slots=True)
class SecondFactorResult:
    """What :func:`~security.credentials.services.verify_second_factor` found."""

    outcome: SecondFactorOutcome
    # Consecutive failures on the account's authenticator after this attempt (0 after a success).
    failure_count: int = 0
    # Unused recovery codes left (only after a recovery code was accepted).
    recovery_codes_left: int | None = None

    @property
    def accepted(self) -> bool:
        """A code was given and it was valid."""
        return self.outcome in (SecondFactorOutcome.ACCEPTED_TOTP, SecondFactorOutcome.ACCEPTED_RECOVERY_CODE)

    @property
    def satisfied(self) -> bool:
        """Nothing more is needed: the account has no second factor, or a valid code was given."""
        return self.accepted or self.outcome is SecondFactorOutcome.NOT_ENROLLED


class PasswordResetHook(Protocol):
    """Called inside the reset's transaction once a password was reset through a token.

    The locks slice registers one to complete a pending ``reset_password`` required action. Hooks are
    listed in ``runtime().extras[PASSWORD_RESET_HOOKS]`` (see ``security.credentials.views``).
    """

    def __call__(self, session: Session, *, account_id: str, at: datetime, actor: str) -> None:
        """React to the reset of ``account_id``'s password at ``at``; must not commit."""
        ...


PASSWORD_RESET_HOOKS = "credentials.password_reset_hooks"
"""Key in ``Runtime.extras`` of the list of :class:`PasswordResetHook` run after every token reset."""


class TotpEnabledHook(Protocol):
    """Called inside the transaction that confirmed (activated) an account's TOTP authenticator.

    The locks slice registers one to complete a pending ``enroll_totp`` required action. Hooks are
    listed in ``runtime().extras[TOTP_ENABLED_HOOKS]``.
    """

    def __call__(self, session: Session, *, account_id: str, at: datetime, actor: str) -> None:
        """React to ``account_id`` enabling TOTP at ``at``; must not commit."""
        ...


TOTP_ENABLED_HOOKS = "credentials.totp_enabled_hooks"
"""Key in ``Runtime.extras`` of the list of :class:`TotpEnabledHook` run after every TOTP activation."""
