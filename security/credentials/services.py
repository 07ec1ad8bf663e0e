"""Password reset, TOTP enrollment, recovery codes and second-factor checks (no Flask; the caller commits).

Refusals that must leave a trace (a wrong code raises the failure counter) are *return values*; raised
errors mean nothing happened and the caller's transaction is rolled back.

Single use is enforced with conditional ``UPDATE ... WHERE <still unused>`` statements checked by row
count, so two concurrent requests presenting the same code or token cannot both succeed, on SQLite and
PostgreSQL alike (PostgreSQL re-evaluates the condition after the competing transaction commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Update, delete, func, or_, select, update
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.accounts.services import AccountService
from security.audit.services import AuditLog
from security.clock import Clock
from security.credentials import recovery, tokens, totp
from security.credentials.interfaces import (
    InvalidResetToken,
    InvalidTotpCode,
    PasswordResetHook,
    SecondFactorOutcome,
    SecondFactorRequired,
    SecondFactorResult,
    TotpAlreadyEnabled,
    TotpEnabledHook,
    TotpNotEnabled,
    TotpNotPending,
)
from security.credentials.models import PasswordResetToken, RecoveryCode, TotpCredential
from security.crypto import SecretBox, UndecryptableSecret, keyed_hash
from security.delivery.outbox import Outbox
from security.entropy import Entropy
from security.errors import AccountNotFound, WeakPassword


class AuditTag(StrEnum):
    RESET_REQUESTED = "account:password:reset_requested"
    RESET_COMPLETED = "account:password:reset_completed"
    RESET_SECOND_FACTOR_FAILED = "account:password:reset_second_factor_failed"
    TOTP_ENROLLMENT_STARTED = "account:mfa:enrollment_started"
    MFA_ENABLED = "account:mfa:enabled"
    MFA_DISABLED = "account:mfa:disabled"
    MFA_VERIFICATION_FAILED = "account:mfa:verification_failed"
    RECOVERY_CODE_USED = "account:mfa:recovery_code_used"
    RECOVERY_CODES_REGENERATED = "account:mfa:recovery_codes_regenerated"
    SECRETS_ROTATED = "system:keys:totp_secrets_rotated"


class WebhookEvent(StrEnum):
    PASSWORD_RESET_REQUESTED = "password.reset_requested"
    # password.changed is announced by AccountService.set_password, which the reset goes through.
    MFA_ENABLED = "mfa.enabled"
    MFA_DISABLED = "mfa.disabled"
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    MFA_RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"


RESET_TEMPLATE = "password_reset"
"""Outbox template of the reset message; its sealed secret is ``{"token": ...}``."""
NO_CHANNEL = "none"
UNKNOWN_IDENTIFIER_SUBJECT = "identifier"
"""Audit subject type of reset requests naming no account (subject id: a keyed HMAC of the identifier)."""
IDENTIFIER_DIGEST_DOMAIN = "foxguard:reset-identifier:v1:"
SYSTEM_ACTOR = "system"
UNMATCHED_ACCOUNT = ""
"""An account id that cannot exist (ids are 1-64 characters): used to mirror work for unknown identifiers."""


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def lock_account(session: Session, account_id: str) -> Account | None:
    """Read the account row locked until the transaction ends (``None`` if there is none).

    Lock order used by every credential write, matching the login check: account row first, then the
    TOTP credential, then recovery codes and reset tokens. One order means waiting, never deadlock.
    """
    return session.get(Account, account_id, with_for_update=True, populate_existing=True)


class SecondFactorService:
    """Checks TOTP codes and recovery codes for accounts that enrolled an authenticator."""

    def __init__(self, session: Session, *, secret_box: SecretBox, audit: AuditLog, outbox: Outbox) -> None:
        self._session = session
        self._box = secret_box
        self._audit = audit
        self._outbox = outbox

    def confirmed_credential(self, account_id: str) -> TotpCredential | None:
        """The account's confirmed authenticator, if any, row-locked until the transaction ends.

        Every second-factor use locks the credential row *first*, before any recovery-code or token row:
        one lock order for all of them, so two requests on the same account queue instead of deadlocking
        (SQLite has no row locks; its IMMEDIATE transactions already serialise writers).
        """
        credential = self._session.scalars(
            select(TotpCredential)
            .where(TotpCredential.account_id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        return credential if credential is not None and credential.confirmed else None

    def verify(
        self,
        account_id: str,
        *,
        totp_code: str | None,
        recovery_code: str | None,
        at: datetime,
        actor: str,
    ) -> SecondFactorResult:
        """Check the code given (a TOTP code wins if both are); record failures and used steps/codes."""
        credential = self.confirmed_credential(account_id)
        if credential is None:
            return SecondFactorResult(SecondFactorOutcome.NOT_ENROLLED)
        if totp_code is not None:
            secret = self._box.decrypt(credential.secret_ciphertext).decode("ascii")
            step = totp.verify(secret, totp_code, at=at, last_step=credential.last_step)
            if step is not None and self._advance_step(account_id, step):
                return SecondFactorResult(SecondFactorOutcome.ACCEPTED_TOTP)
            return self._failure(account_id, method="totp", at=at, actor=actor)
        if recovery_code is not None:
            return self._use_recovery_code(account_id, recovery_code, at=at, actor=actor)
        return SecondFactorResult(SecondFactorOutcome.MISSING)

    def _advance_step(self, account_id: str, step: int) -> bool:
        # Conditional on the stored step still being older: a concurrent use of the same code loses.
        statement: Update = (
            update(TotpCredential)
            .where(
                TotpCredential.account_id == account_id,
                or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
            )
            .values(last_step=step, failure_count=0)
        )
        return _rowcount(self._session.execute(statement)) == 1

    def _failure(self, account_id: str, *, method: str, at: datetime, actor: str) -> SecondFactorResult:
        count = self._session.execute(
            update(TotpCredential)
            .where(TotpCredential.account_id == account_id)
            .values(failure_count=TotpCredential.failure_count + 1, last_failure_at=at)
            .returning(TotpCredential.failure_count)
        ).scalar()
        if count is None:  # disabled by a concurrent request meanwhile: nothing left to count on
            return SecondFactorResult(SecondFactorOutcome.REJECTED)
        self._audit.record(
            AuditTag.MFA_VERIFICATION_FAILED, actor=actor, subject_type="account", subject_id=account_id,
            data={"method": method, "failure_count": count},
        )
        return SecondFactorResult(SecondFactorOutcome.REJECTED, failure_count=count)

    def _use_recovery_code(self, account_id: str, code: str, *, at: datetime, actor: str) -> SecondFactorResult:
        unused = self._session.scalars(
            select(RecoveryCode)
            .where(RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None))
            .order_by(RecoveryCode.id)
        ).all()
        index = recovery.match(code, [row.code_hash for row in unused])
        if index is None or not self._consume_code(unused[index], at):
            return self._failure(account_id, method="recovery_code", at=at, actor=actor)
        self._session.execute(
            update(TotpCredential).where(TotpCredential.account_id == account_id).values(failure_count=0)
        )
        remaining = len(unused) - 1
        self._audit.record(
            AuditTag.RECOVERY_CODE_USED, actor=actor, subject_type="account", subject_id=account_id,
            data={"remaining": remaining},
        )
        self._outbox.webhook(
            WebhookEvent.MFA_RECOVERY_CODE_USED,
            {"account_id": account_id, "used_at": at.isoformat(), "remaining": remaining},
            ordering_key=account_id,
        )
        return SecondFactorResult(SecondFactorOutcome.ACCEPTED_RECOVERY_CODE, recovery_codes_left=remaining)

    def _consume_code(self, row: RecoveryCode, at: datetime) -> bool:
        statement = (
            update(RecoveryCode)
            .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
            .values(used_at=at)
        )
        return _rowcount(self._session.execute(statement)) == 1


def verify_second_factor(
    session: Session,
    account_id: str,
    *,
    totp_code: str | None,
    recovery_code: str | None,
    at: datetime,
    secret_box: SecretBox,
    audit: AuditLog,
    outbox: Outbox,
    actor: str = "user",
) -> SecondFactorResult:
    """The second-factor check for the login flow and anything else that needs one.

    Returns ``NOT_ENROLLED`` (no confirmed TOTP), ``MISSING`` (enrolled, no code given, nothing
    recorded), ``ACCEPTED_TOTP`` / ``ACCEPTED_RECOVERY_CODE`` (step or code consumed, failure counter
    reset; a used recovery code is audited and announced) or ``REJECTED`` (failure counter raised and
    audited; ``failure_count`` says how many in a row). Never raises for a wrong code: the caller must
    commit so the failure is kept.
    """
    service = SecondFactorService(session, secret_box=secret_box, audit=audit, outbox=outbox)
    return service.verify(account_id, totp_code=totp_code, recovery_code=recovery_code, at=at, actor=actor)


class TotpService:
    """Enrollment, confirmation, disabling, recovery-code regeneration and key rotation."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        secret_box: SecretBox,
        audit: AuditLog,
        outbox: Outbox,
        issuer: str,
        on_enabled: Sequence[TotpEnabledHook] = (),
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._box = secret_box
        self._audit = audit
        self._outbox = outbox
        self._issuer = issuer
        self._on_enabled = tuple(on_enabled)
        self.second_factor = SecondFactorService(session, secret_box=secret_box, audit=audit, outbox=outbox)

    def _account(self, account_id: str) -> Account:
        account = lock_account(self._session, account_id)
        if account is None:
            raise AccountNotFound(f"No account {account_id!r}.")
        return account

    def start_enrollment(self, account_id: str, *, actor: str) -> totp.Enrollment:
        """Create (or restart) a pending enrollment; the secret is stored encrypted."""
        account = self._account(account_id)
        now = self._clock.now()
        credential = self._session.get(TotpCredential, account_id)
        if credential is not None and credential.confirmed:
            raise TotpAlreadyEnabled()
        enrollment = totp.start_enrollment(
            self._entropy, account_name=account.email or account.id, issuer=self._issuer
        )
        ciphertext = self._box.encrypt(enrollment.secret.encode("ascii"))
        if credential is None:
            credential = TotpCredential(account_id=account_id, failure_count=0)
            self._session.add(credential)
        credential.secret_ciphertext = ciphertext
        credential.created_at = now
        credential.last_step = None
        credential.failure_count = 0
        credential.last_failure_at = None
        self._audit.record(
            AuditTag.TOTP_ENROLLMENT_STARTED, actor=actor, subject_type="account", subject_id=account_id, data={}
        )
        self._session.flush()
        return enrollment

    def confirm_enrollment(self, account_id: str, code: str, *, actor: str) -> tuple[str, ...]:
        """Activate the pending authenticator with its first code; return 10 recovery codes (shown once)."""
        self._account(account_id)
        now = self._clock.now()
        credential = self._session.get(TotpCredential, account_id)
        if credential is None:
            raise TotpNotPending()
        if credential.confirmed:
            raise TotpAlreadyEnabled()
        secret = self._box.decrypt(credential.secret_ciphertext).decode("ascii")
        step = totp.verify(secret, code, at=now, last_step=None)
        if step is None:
            raise InvalidTotpCode()
        # Conditional on still being pending and on the same secret: of two concurrent confirmations
        # (or a confirmation racing a restart) only one activates, so no one is shown dead codes.
        activated = self._session.execute(
            update(TotpCredential)
            .where(
                TotpCredential.account_id == account_id,
                TotpCredential.confirmed_at.is_(None),
                TotpCredential.secret_ciphertext == credential.secret_ciphertext,
            )
            .values(confirmed_at=now, last_step=step, failure_count=0)
        )
        if _rowcount(activated) != 1:
            raise TotpAlreadyEnabled()
        codes = self._replace_recovery_codes(account_id, now)
        self._audit.record(
            AuditTag.MFA_ENABLED, actor=actor, subject_type="account", subject_id=account_id,
            data={"method": "totp", "recovery_codes": len(codes)},
        )
        self._outbox.webhook(
            WebhookEvent.MFA_ENABLED,
            {"account_id": account_id, "method": "totp", "enabled_at": now.isoformat()},
            ordering_key=account_id,
        )
        for hook in self._on_enabled:
            hook(self._session, account_id=account_id, at=now, actor=actor)
        self._session.flush()
        return codes

    def _replace_recovery_codes(self, account_id: str, now: datetime) -> tuple[str, ...]:
        self._session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
        generated = recovery.generate(self._entropy)
        self._session.add_all(
            RecoveryCode(account_id=account_id, code_hash=digest, created_at=now) for digest in generated.hashes
        )
        return generated.plaintext

    def _prove_second_factor(
        self, account_id: str, *, totp_code: str | None, recovery_code: str | None, actor: str
    ) -> tuple[SecondFactorResult, datetime]:
        """What guards every change to an enabled authenticator: lock the account, require an enabled
        authenticator and one code, verify it. Returns the result (a rejection is counted, not raised) and
        the time it was checked at."""
        self._account(account_id)
        now = self._clock.now()
        if self.second_factor.confirmed_credential(account_id) is None:
            raise TotpNotEnabled()
        if totp_code is None and recovery_code is None:
            raise SecondFactorRequired()
        result = self.second_factor.verify(
            account_id, totp_code=totp_code, recovery_code=recovery_code, at=now, actor=actor
        )
        return result, now

    def disable(
        self, account_id: str, *, totp_code: str | None, recovery_code: str | None, actor: str
    ) -> SecondFactorResult:
        """Remove the authenticator and its recovery codes, if a valid code is given.

        A rejected code is returned (and counted), not raised, so the caller commits the failure.
        """
        result, now = self._prove_second_factor(
            account_id, totp_code=totp_code, recovery_code=recovery_code, actor=actor
        )
        if not result.accepted:
            return result
        removed = self._session.execute(delete(TotpCredential).where(TotpCredential.account_id == account_id))
        if _rowcount(removed) != 1:
            raise TotpNotEnabled()  # a concurrent request disabled it first; roll back, announce once
        self._session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
        method = "totp" if result.outcome is SecondFactorOutcome.ACCEPTED_TOTP else "recovery_code"
        self._audit.record(
            AuditTag.MFA_DISABLED, actor=actor, subject_type="account", subject_id=account_id,
            data={"proved_with": method},
        )
        self._outbox.webhook(
            WebhookEvent.MFA_DISABLED,
            {"account_id": account_id, "method": "totp", "disabled_at": now.isoformat()},
            ordering_key=account_id,
        )
        return result

    def regenerate_recovery_codes(
        self, account_id: str, *, totp_code: str | None, recovery_code: str | None, actor: str
    ) -> tuple[SecondFactorResult, tuple[str, ...]]:
        """Replace every recovery code (old ones stop working) after a valid code; returns the new set."""
        result, now = self._prove_second_factor(
            account_id, totp_code=totp_code, recovery_code=recovery_code, actor=actor
        )
        if not result.accepted:
            return result, ()
        codes = self._replace_recovery_codes(account_id, now)
        self._audit.record(
            AuditTag.RECOVERY_CODES_REGENERATED, actor=actor, subject_type="account", subject_id=account_id,
            data={"recovery_codes": len(codes)},
        )
        self._outbox.webhook(
            WebhookEvent.MFA_RECOVERY_CODES_REGENERATED,
            {"account_id": account_id, "regenerated_at": now.isoformat()},
            ordering_key=account_id,
        )
        self._session.flush()
        return result, codes


def rotate_totp_secrets(session: Session, *, secret_box: SecretBox, audit: AuditLog, actor: str = SYSTEM_ACTOR) -> int:
    """Re-encrypt every stored TOTP secret under the newest key; return how many were rotated.

    Run after putting a new key first in the key list (old keys still decrypt); once it has run, the
    old keys can be removed from the configuration.
    """
    count = 0
    for credential in session.scalars(select(TotpCredential).order_by(TotpCredential.account_id)):
        try:
            credential.secret_ciphertext = secret_box.rotate(credential.secret_ciphertext)
        except UndecryptableSecret as exc:
            raise UndecryptableSecret(
                f"the TOTP secret of account {credential.account_id!r} matches none of the configured keys"
            ) from exc
        count += 1
    audit.record(
        AuditTag.SECRETS_ROTATED, actor=actor, subject_type="system", subject_id="totp_credentials",
        data={"rotated": count},
    )
    session.flush()
    return count


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """Result of a reset confirmation: completed, or refused because of the second factor."""

    completed: bool
    second_factor: SecondFactorResult


def identifier_digest(identifier: str, *, key: str) -> str:
    """Keyed digest naming an identifier that matched no account in the audit log (never the raw value).

    Keyed (HMAC) so a reader of the audit log cannot confirm a guessed e-mail address by hashing it;
    whoever holds the key can still group repeated requests for the same identifier.
    """
    return keyed_hash(key, IDENTIFIER_DIGEST_DOMAIN + identifier.strip().lower())


class PasswordResetService:
    """Request and confirm password resets by token (DESIGN.md "Password reset")."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        secret_box: SecretBox,
        audit: AuditLog,
        outbox: Outbox,
        accounts: AccountService,
        second_factor: SecondFactorService,
        identifier_key: str,
        token_ttl: timedelta = tokens.RESET_TOKEN_TTL,
        max_second_factor_failures: int = 5,
        hooks: Sequence[PasswordResetHook] = (),
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._box = secret_box
        self._audit = audit
        self._outbox = outbox
        self._accounts = accounts
        self._second_factor = second_factor
        self._identifier_key = identifier_key
        self._ttl = token_ttl
        self._max_failures = max_second_factor_failures
        self._hooks = tuple(hooks)

    def request(self, identifier: str, *, actor: str) -> None:
        """Send a reset token to the account named by ``identifier`` (id, e-mail or +phone), if any.

        Unknown identifiers go through the same steps (token draw, digest, one encryption, one audit
        entry), so neither the answer nor, to the extent the code controls it, the timing differs.
        """
        now = self._clock.now()
        account = self._accounts.find_by_identifier(identifier)
        issued = tokens.issue(self._entropy, at=now, ttl=self._ttl)
        if account is None:
            # Mirror the known path's work: the voiding round trip (matches nothing here) and the
            # encryption that seals the outgoing message.
            self._void_outstanding(UNMATCHED_ACCOUNT, now)
            self._box.encrypt(issued.token.encode("ascii"))
            self._audit.record(
                AuditTag.RESET_REQUESTED, actor=actor, subject_type=UNKNOWN_IDENTIFIER_SUBJECT,
                subject_id=identifier_digest(identifier, key=self._identifier_key), data={"matched": False},
            )
            return
        # Serialise requests for one account, so that of two concurrent requests the later one voids
        # the earlier one's token ("older tokens void") instead of both staying usable.
        lock_account(self._session, account.id)
        self._void_outstanding(account.id, now)
        channel = self._deliver(account, identifier, issued)
        self._session.add(
            PasswordResetToken(
                account_id=account.id, digest=issued.digest, channel=channel, created_at=now,
                expires_at=issued.expires_at, failed_attempts=0,
            )
        )
        self._audit.record(
            AuditTag.RESET_REQUESTED, actor=actor, subject_type="account", subject_id=account.id,
            data={"matched": True, "channel": channel},
        )
        self._outbox.webhook(
            WebhookEvent.PASSWORD_RESET_REQUESTED,
            {"account_id": account.id, "channel": channel, "expires_at": issued.expires_at.isoformat()},
            ordering_key=account.id,
        )
        self._session.flush()

    def _deliver(self, account: Account, identifier: str, issued: tokens.IssuedToken) -> str:
        """Queue the token to the contact the user named (phone -> SMS), else e-mail, else SMS."""
        context = {
            "account_id": account.id,
            "expires_at": issued.expires_at.isoformat(),
            "ttl_minutes": int(self._ttl.total_seconds() // 60),
        }
        secret = {"token": issued.token}
        channel = self._outbox.notify(
            email=account.email, phone=account.phone, template=RESET_TEMPLATE, context=context, secret=secret,
            ordering_key=account.id, prefer_sms=identifier.strip().startswith("+"),
        )
        if channel is None:
            self._box.encrypt(issued.token.encode("ascii"))  # keep the work equal; nowhere to send it
            return NO_CHANNEL
        return channel.value

    def _void_outstanding(self, account_id: str, now: datetime) -> None:
        """Void every token of the account still usable (DESIGN.md: a new token voids older ones)."""
        self._session.execute(
            update(PasswordResetToken)
            .where(
                PasswordResetToken.account_id == account_id,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.voided_at.is_(None),
            )
            .values(voided_at=now)
        )

    def _usable_token(self, token: str, now: datetime) -> PasswordResetToken:
        digest = tokens.digest(token)
        row = self._session.scalar(select(PasswordResetToken).where(PasswordResetToken.digest == digest))
        if (
            row is None
            or not tokens.digests_equal(row.digest, digest)
            or not tokens.is_usable(expires_at=row.expires_at, used_at=row.used_at, voided_at=row.voided_at, at=now)
        ):
            raise InvalidResetToken()
        return row

    def confirm(
        self,
        token: str,
        new_password: str,
        *,
        totp_code: str | None,
        recovery_code: str | None,
        actor: str,
    ) -> ResetOutcome:
        """Set a new password with a valid token (and a second factor when TOTP is enrolled).

        Raises :class:`InvalidResetToken` for every unusable token, ``WeakPassword`` (422) when the
        policy refuses the password and :class:`SecondFactorRequired` when a code is needed but none was
        given; none of these writes anything. A wrong code is returned (``completed=False``), counted on
        the token and the authenticator, and voids the token at the configured limit.
        """
        now = self._clock.now()
        row = self._usable_token(token, now)
        account = lock_account(self._session, row.account_id)
        if account is None:  # tokens reference accounts by foreign key; kept for the type checker
            raise InvalidResetToken()
        self._check_policy(account, new_password)
        factor = self._second_factor.verify(
            account.id, totp_code=totp_code, recovery_code=recovery_code, at=now, actor=actor
        )
        if factor.outcome is SecondFactorOutcome.MISSING:
            raise SecondFactorRequired()
        if not factor.satisfied:
            self._count_failed_attempt(row, now, actor=actor)
            return ResetOutcome(completed=False, second_factor=factor)
        consumed = self._session.execute(
            update(PasswordResetToken)
            .where(
                PasswordResetToken.id == row.id,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.voided_at.is_(None),
            )
            .values(used_at=now)
        )
        if _rowcount(consumed) != 1:
            raise InvalidResetToken()  # used concurrently: roll back everything, including the code
        self._void_outstanding(account.id, now)
        self._accounts.set_password(account.id, new_password, actor=actor, reason="reset")
        self._audit.record(
            AuditTag.RESET_COMPLETED, actor=actor, subject_type="account", subject_id=account.id,
            data={"second_factor": factor.outcome.value, "token_id": str(row.id)},
        )
        for hook in self._hooks:
            hook(self._session, account_id=account.id, at=now, actor=actor)
        self._session.flush()
        return ResetOutcome(completed=True, second_factor=factor)

    def _check_policy(self, account: Account, new_password: str) -> None:
        try:
            self._accounts.check_password_policy(account, new_password)
        except WeakPassword as weak:
            # Same reasons, named after this endpoint's field.
            errors = [{**error, "field": "new_password"} for error in weak.errors or []]
            raise WeakPassword(weak.detail, errors=errors) from None

    def _count_failed_attempt(self, row: PasswordResetToken, now: datetime, *, actor: str) -> None:
        failures = self._session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.id == row.id)
            .values(failed_attempts=PasswordResetToken.failed_attempts + 1)
            .returning(PasswordResetToken.failed_attempts)
        ).scalar_one()
        voided = failures >= self._max_failures
        if voided:
            self._session.execute(
                update(PasswordResetToken)
                .where(PasswordResetToken.id == row.id, PasswordResetToken.voided_at.is_(None))
                .values(voided_at=now)
            )
        self._audit.record(
            AuditTag.RESET_SECOND_FACTOR_FAILED, actor=actor, subject_type="account", subject_id=row.account_id,
            data={"failed_attempts": failures, "token_voided": voided},
        )


def count_unused_recovery_codes(session: Session, account_id: str) -> int:
    """How many recovery codes the account can still use."""
    return session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None))
    ) or 0
