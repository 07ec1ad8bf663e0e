"""Operator use cases: accounts, sign-in (password + TOTP), sessions and API tokens. No Flask; never commits.

A refused sign-in is a *return value*, not an exception: the failure counter and the audit entry it
writes must be committed with the request.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clock import Clock
from security.credentials import totp
from security.credentials.passwords import PasswordHasher, PasswordPolicy
from security.crypto import SecretBox, sha256_hex
from security.entropy import Entropy
from security.errors import Conflict, InvalidInput, NotFound, WeakPassword
from security.operators.models import Operator, OperatorSession, SessionKind
from security.operators.policy import FourEyesViolation, Role, check_four_eyes, is_locked
from security.operators.settings import OperatorSettings

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
TOKEN_BYTES = 32
"""256-bit session and API tokens: a fast SHA-256 is enough to store them."""
API_TOKEN_PREFIX = "fgo_"
"""Marks operator bearer tokens, so they are never confused with service-client keys (``fg_``)."""


class AuditTag(StrEnum):
    CREATED = "operator:account:created"
    DISABLED = "operator:account:disabled"
    LOCKED_OUT = "operator:account:locked"
    TOTP_RESET = "operator:totp:reset"
    TOTP_REFUSED = "operator:totp:refused"
    SIGN_IN_SUCCEEDED = "operator:signin:succeeded"
    SIGN_IN_FAILED = "operator:signin:failed"
    SESSION_ENDED = "operator:session:ended"
    SESSIONS_PURGED = "operator:session:purged"
    TOKEN_ISSUED = "operator:token:issued"


class SignInFailure(StrEnum):
    """Why a sign-in failed: recorded in the audit log only, never told to the person signing in."""

    UNKNOWN_OPERATOR = "unknown_operator"
    DISABLED = "disabled"
    LOCKED_OUT = "locked_out"
    BAD_PASSWORD = "bad_password"
    BAD_TOTP = "bad_totp"


class OperatorExists(Conflict):
    code = "operator_exists"
    title = "An operator with this name exists already"


class OperatorNotFound(NotFound):
    code = "operator_not_found"
    title = "No such operator"


class FourEyesRequired(Conflict):
    code = "four_eyes_required"
    title = "This action needs two different administrators"


def actor_of(operator: Operator) -> str:
    """The audit actor name of an operator."""
    return f"operator:{operator.id}"


@dataclass(frozen=True)
class SignInResult:
    operator: Operator | None
    failure: SignInFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.operator is not None


@dataclass(frozen=True)
class IssuedSession:
    session: OperatorSession
    token: str
    """The raw token: a cookie value or a bearer token. Shown once; only its hash is stored."""


@dataclass(frozen=True)
class CreatedOperator:
    operator: Operator
    enrollment: totp.Enrollment


@dataclass(frozen=True)
class TotpReset:
    """Outcome of a four-eyes TOTP reset: the new enrollment, or why it was refused."""

    enrollment: totp.Enrollment | None
    refused: str | None = None


class OperatorService:
    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        audit: AuditLog,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        secret_box: SecretBox,
        settings: OperatorSettings,
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._audit = audit
        self._hasher = hasher
        self._policy = policy
        self._box = secret_box
        self._settings = settings

    # --- operators -------------------------------------------------------------------------------------

    def find(self, name: str) -> Operator | None:
        return self._session.scalar(select(Operator).where(Operator.name == name))

    def get(self, name: str) -> Operator:
        operator = self.find(name)
        if operator is None:
            raise OperatorNotFound(f"No operator named {name!r}.")
        return operator

    def list(self) -> list[Operator]:
        return list(self._session.scalars(select(Operator).order_by(Operator.name)))

    def create(self, name: str, role: str, password: str, *, actor: str) -> CreatedOperator:
        """Create an operator with a password (policy-checked) and a fresh TOTP secret to enroll."""
        if not NAME_PATTERN.match(name):
            raise InvalidInput("Operator names are 2-64 characters: lower-case letters, digits, '.', '_' or '-'.")
        if role not in tuple(Role):
            raise InvalidInput(f"Unknown role {role!r}. Roles: {', '.join(Role)}.")
        violations = self._policy.violations(password, user_inputs=[name])
        if violations:
            raise WeakPassword(
                " ".join(v.message for v in violations),
                errors=[{"field": "password", "code": v.code, "message": v.message} for v in violations],
            )
        if self.find(name) is not None:
            raise OperatorExists(f"An operator named {name!r} exists already.")
        enrollment = totp.start_enrollment(self._entropy, account_name=name, issuer=self._settings.totp_issuer)
        operator = Operator(
            name=name,
            role=role,
            password_hash=self._hasher.hash(password),
            totp_secret_sealed=self._box.encrypt(enrollment.secret.encode()),
            failed_sign_ins=0,
            created_at=self._clock.now(),
        )
        self._session.add(operator)
        self._session.flush()
        self._audit.record(
            AuditTag.CREATED, actor=actor, subject_type="operator", subject_id=str(operator.id),
            data={"name": name, "role": role},
        )
        return CreatedOperator(operator=operator, enrollment=enrollment)

    def disable(self, name: str, *, actor: str) -> Operator:
        """Disable an operator and end all their sessions and tokens at once."""
        operator = self.get(name)
        if operator.disabled_at is None:
            operator.disabled_at = self._clock.now()
            self._revoke_all(operator)
            self._audit.record(
                AuditTag.DISABLED, actor=actor, subject_type="operator", subject_id=str(operator.id),
                data={"name": name},
            )
        return operator

    def _revoke_all(self, operator: Operator) -> None:
        self._session.execute(
            update(OperatorSession)
            .where(OperatorSession.operator_id == operator.id, OperatorSession.revoked_at.is_(None))
            .values(revoked_at=self._clock.now())
        )

    def _secret(self, operator: Operator) -> str:
        return self._box.decrypt(operator.totp_secret_sealed).decode()

    def _check_totp(self, operator: Operator, code: str) -> bool:
        """Verify a code (replay-safe); on success remember its step so it can never be used again."""
        step = totp.verify(self._secret(operator), code, at=self._clock.now(), last_step=operator.last_totp_step)
        if step is None:
            return False
        operator.last_totp_step = step
        return True

    def _count_failure(self, operator: Operator) -> None:
        now = self._clock.now()
        operator.failed_sign_ins += 1
        locked_until = self._settings.lockout_policy.after_failure(operator.failed_sign_ins, at=now)
        if locked_until is not None:
            operator.locked_until = locked_until
            # The next lockout needs a full new series of failures.
            operator.failed_sign_ins = 0
            self._audit.record(
                AuditTag.LOCKED_OUT, actor="system", subject_type="operator", subject_id=str(operator.id),
                data={"until": locked_until.isoformat()},
            )

    def _usable(self, operator: Operator) -> bool:
        return operator.disabled_at is None and not is_locked(operator.locked_until, at=self._clock.now())

    def reset_totp(
        self, name: str, *, requester: str, requester_code: str, approver: str, approver_code: str, actor: str
    ) -> TotpReset:
        """Give operator ``name`` a new TOTP secret, with two different admins confirming by TOTP code.

        Neither admin may be the target. A wrong code counts toward that admin's lockout, so the
        refusal is returned (and committed) rather than raised.
        """
        try:
            check_four_eyes(target=name, requester=requester, approver=approver)
        except FourEyesViolation as exc:
            raise FourEyesRequired(str(exc).capitalize() + ".") from None
        target = self.get(name)
        confirmed: list[Operator] = []
        for admin_name, code in ((requester, requester_code), (approver, approver_code)):
            admin = self.find(admin_name)
            if admin is None or admin.role != Role.ADMIN or not self._usable(admin):
                return self._refuse_reset(target, "both operators must be active administrators", actor=actor)
            if not self._check_totp(admin, code):
                self._count_failure(admin)
                return self._refuse_reset(target, "a TOTP code was not accepted", actor=actor)
            confirmed.append(admin)
        first, second = confirmed
        enrollment = totp.start_enrollment(
            self._entropy, account_name=target.name, issuer=self._settings.totp_issuer
        )
        target.totp_secret_sealed = self._box.encrypt(enrollment.secret.encode())
        target.last_totp_step = None
        self._revoke_all(target)
        self._audit.record(
            AuditTag.TOTP_RESET, actor=actor_of(first), subject_type="operator", subject_id=str(target.id),
            data={"name": target.name, "approved_by": actor_of(second), "via": actor},
        )
        return TotpReset(enrollment=enrollment)

    def _refuse_reset(self, target: Operator, why: str, *, actor: str) -> TotpReset:
        self._audit.record(
            AuditTag.TOTP_REFUSED, actor=actor, subject_type="operator", subject_id=str(target.id),
            data={"reason": why},
        )
        return TotpReset(enrollment=None, refused=why)

    # --- sign-in -----------------------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, code: str) -> SignInResult:
        """Check password and TOTP. Every path spends one password verification (timing)."""
        operator = self.find(name)
        if operator is None:
            self._hasher.burn(password)
            return self._failed(None, SignInFailure.UNKNOWN_OPERATOR)
        if operator.disabled_at is not None:
            self._hasher.burn(password)
            return self._failed(operator, SignInFailure.DISABLED)
        if is_locked(operator.locked_until, at=self._clock.now()):
            self._hasher.burn(password)
            return self._failed(operator, SignInFailure.LOCKED_OUT)
        verification = self._hasher.verify(operator.password_hash, password)
        if not verification.ok:
            self._count_failure(operator)
            return self._failed(operator, SignInFailure.BAD_PASSWORD)
        if not self._check_totp(operator, code):
            self._count_failure(operator)
            return self._failed(operator, SignInFailure.BAD_TOTP)
        if verification.new_hash is not None:
            operator.password_hash = verification.new_hash
        operator.failed_sign_ins = 0
        operator.locked_until = None
        self._audit.record(
            AuditTag.SIGN_IN_SUCCEEDED, actor=actor_of(operator), subject_type="operator",
            subject_id=str(operator.id), data={},
        )
        return SignInResult(operator=operator, failure=None)

    def _failed(self, operator: Operator | None, why: SignInFailure) -> SignInResult:
        self._audit.record(
            AuditTag.SIGN_IN_FAILED, actor="anonymous", subject_type="operator",
            subject_id=str(operator.id) if operator else "unknown", data={"reason": str(why)},
        )
        return SignInResult(operator=None, failure=why)

    # --- sessions and tokens -----------------------------------------------------------------------------

    def start_session(self, operator: Operator, kind: SessionKind, *, replacing: str | None = None) -> IssuedSession:
        """Issue a new console session or API token; ``replacing`` (an older token) is revoked (rotation).

        The operator's own dead sessions and tokens are purged on the way (cheap: one indexed delete of
        a handful of rows), so the table does not grow with every sign-in between CLI purges.
        """
        now = self._clock.now()
        if replacing is not None:
            old = self._find_session(replacing)
            if old is not None and old.revoked_at is None:
                old.revoked_at = now
        self.purge_sessions(operator=operator)
        raw = self._entropy.token_urlsafe(TOKEN_BYTES)
        token = API_TOKEN_PREFIX + raw if kind == SessionKind.API else raw
        lifetime = (
            self._settings.session_policy.absolute if kind == SessionKind.CONSOLE
            else self._settings.api_token_lifetime
        )
        row = OperatorSession(
            operator_id=operator.id,
            kind=kind,
            token_hash=sha256_hex(token),
            csrf_token=self._entropy.token_urlsafe(TOKEN_BYTES) if kind == SessionKind.CONSOLE else None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
        )
        self._session.add(row)
        self._session.flush()
        if kind == SessionKind.API:
            self._audit.record(
                AuditTag.TOKEN_ISSUED, actor=actor_of(operator), subject_type="operator",
                subject_id=str(operator.id), data={"session": str(row.id), "expires_at": row.expires_at.isoformat()},
            )
        return IssuedSession(session=row, token=token)

    def purge_sessions(self, *, operator: Operator | None = None) -> int:
        """Delete console sessions and API tokens that can never be used again (all, or one operator's).

        Dead means: past the hard end (absolute timeout / token lifetime), revoked (sign-out, rotation,
        disable, TOTP reset), or, for console sessions, idle longer than the idle timeout: exactly what
        :meth:`resolve` refuses. Only hashes are stored; the audit log keeps the sign-ins and sign-outs.
        Returns how many rows went.
        """
        now = self._clock.now()
        dead = or_(
            OperatorSession.expires_at <= now,
            OperatorSession.revoked_at.is_not(None),
            and_(OperatorSession.kind == SessionKind.CONSOLE,
                 OperatorSession.last_seen_at <= now - self._settings.session_policy.idle),
        )
        statement = delete(OperatorSession).where(dead)
        if operator is not None:
            statement = statement.where(OperatorSession.operator_id == operator.id)
        result = self._session.execute(statement.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    def purge_all_sessions(self, *, actor: str) -> int:
        """:meth:`purge_sessions` for every operator, audited (the CLI's housekeeping)."""
        purged = self.purge_sessions()
        self._audit.record(AuditTag.SESSIONS_PURGED, actor=actor, subject_type="operator", subject_id="*",
                           data={"purged": purged})
        return purged

    def _find_session(self, token: str) -> OperatorSession | None:
        return self._session.scalar(select(OperatorSession).where(OperatorSession.token_hash == sha256_hex(token)))

    def resolve(self, token: str, kind: SessionKind) -> tuple[OperatorSession, Operator] | None:
        """The live session or token ``token`` and its operator; ``None`` when unknown, expired or revoked."""
        now = self._clock.now()
        row = self._find_session(token)
        if row is None or row.kind != kind or row.revoked_at is not None or now >= row.expires_at:
            return None
        if kind == SessionKind.CONSOLE and not self._settings.session_policy.is_live(
            created_at=row.created_at, last_seen_at=row.last_seen_at, at=now
        ):
            return None
        operator = self._session.get(Operator, row.operator_id)
        if operator is None or operator.disabled_at is not None:
            return None
        row.last_seen_at = now
        return row, operator

    def end_session(self, token: str) -> None:
        """Sign out: revoke the session or token (unknown or already ended: nothing to do)."""
        row = self._find_session(token)
        if row is None or row.revoked_at is not None:
            return
        row.revoked_at = self._clock.now()
        self._audit.record(
            AuditTag.SESSION_ENDED, actor=f"operator:{row.operator_id}", subject_type="operator",
            subject_id=str(row.operator_id), data={"kind": row.kind},
        )

    def operator_by_id(self, operator_id: uuid.UUID) -> Operator | None:
        return self._session.get(Operator, operator_id)
