"""Appeal and freeze use cases (no Flask; the caller commits).

Every state change goes through the pure table (``security.appeals.states``), is appended to
``appeal_history``, audited and announced in the caller's transaction. The appeal row carries a version
column and every attempt, decision or action changes it, so two concurrent changes of one appeal give
one winner and a 409 (``StaleDataError``), on SQLite and PostgreSQL alike.

No enumeration: ``submit`` creates an appeal row for *every* identifier. When it names no locked account
the row is a decoy (``lock_id`` NULL): it gets a contact code that is never sent, counts attempts like a
real appeal and can never be verified. Until a first verification succeeds, a real appeal shows exactly
what a decoy shows (no lock reference, no reason, only "contact_code" needed).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from security.accounts.models import Account
from security.accounts.services import AccountService
from security.appeals.interfaces import (
    ActionNotPending,
    AppealClosed,
    AppealNotFound,
    FourEyesViolation,
    FreezeOutcome,
    FreezeResult,
    InvalidAppealToken,
    NotReviewable,
    ReasonRequired,
    TooManyCodes,
    VerificationNotNeeded,
    VerificationOutcome,
    VerificationResult,
)
from security.appeals.models import (
    Appeal,
    AppealHistory,
    AppealMessage,
    AppealReview,
    AppealVerification,
    ContactCode,
)
from security.appeals.policy import (
    AppealPolicy,
    KindPolicy,
    NextStep,
    Progress,
    VerificationMethod,
    attempt_refusal,
    progress,
    requirement_methods,
)
from security.appeals.states import (
    VERIFIABLE_STATES,
    ActorKind,
    AppealEvent,
    AppealState,
    IllegalTransition,
    is_open,
    next_state,
)
from security.appeals.verification import (
    CodeCheck,
    TransactionRecord,
    check_contact_code,
    document_matches,
    issue_contact_code,
    matches_recent_transaction,
    new_flow_token,
    token_matches,
)
from security.audit.models import AuditEntry
from security.audit.services import AuditLog
from security.clock import Clock
from security.credentials.interfaces import (
    PasswordResetHook,
    SecondFactorOutcome,
    SecondFactorRequired,
    SecondFactorResult,
)
from security.credentials.models import RecoveryCode, TotpCredential
from security.credentials.services import SecondFactorService, TotpService, lock_account
from security.credentials.totp import Enrollment
from security.crypto import SecretBox, keyed_hash, sha256_hex
from security.delivery.outbox import Channel, Outbox
from security.entropy import Entropy
from security.errors import Conflict, InvalidInput, StaleVersion
from security.locks.models import Lock
from security.locks.services import LockService
from security.locks.states import LockEvent, LockKind, LockStatus, RequiredAction
from security.locks.states import is_open as lock_is_open
from security.risk.models import RiskEvent

CODE_PURPOSE_APPEAL: Final = "appeal"
CODE_PURPOSE_FREEZE: Final = "freeze"
#: Outbox templates (owned by the delivery slice): the code itself travels sealed as ``secret["code"]``.
CONTACT_CODE_TEMPLATE: Final = "contact_code"
DECISION_TEMPLATE: Final = "appeal_decision"
NO_CHANNEL: Final = "none"
SYSTEM_ACTOR: Final = "system"
USER_ACTOR: Final = "user"
TRANSACTION_KIND: Final = "transaction"
#: A conversation longer than this is abuse, not an appeal.
MAX_MESSAGES_PER_APPEAL: Final = 100
#: Owner id that stands for "no account" in the hash of a freeze code drawn for an unknown identifier.
NO_OWNER: Final = "-"
#: Refused freeze attempts on one account within the window after which passwords are no longer checked
#: (codes still work: they are limited per code). Mirrors the login's brute-force limit (5 per 15 minutes).
MAX_FREEZE_REFUSALS: Final = 5
FREEZE_REFUSAL_WINDOW: Final = timedelta(minutes=15)
#: Domain of the audit digest naming an identifier that matched no account (never the raw value).
IDENTIFIER_DIGEST_DOMAIN: Final = "foxguard:appeal-identifier:v1:"
#: Derivation label of the contact-code HMAC key from the application secret key.
CODE_KEY_LABEL: Final = "foxguard:contact-code-key:v1"

#: What every appeal shows before the first verification (identical for decoys and real appeals).
GENERIC_NOTICE: Final = (
    "If this identifier belongs to a locked account, a code was sent to its registered contact. "
    "Enter it to continue."
)
#: The user-facing reason of each lock kind, shown once the contact code proved possession.
USER_REASONS: Final[dict[str, str]] = {
    LockKind.BRUTE_FORCE: "Too many failed sign-in attempts.",
    LockKind.RISK: "Unusual activity was detected on your account.",
    LockKind.OPERATOR: "Our security team locked your account.",
    LockKind.USER_REPORTED: "You reported that your account was compromised.",
}
ACTION_TEXT: Final[dict[str, str]] = {
    RequiredAction.RESET_PASSWORD: "choose a new password",
    RequiredAction.ENROLL_TOTP: "set up an authenticator app",
}
DEFAULT_FREEZE_DETAIL: Final = "The owner reported the account as compromised."


class AuditTag(StrEnum):
    """Audit vocabulary of this slice."""

    APPEAL_SUBMITTED = "appeal:appeal:submitted"
    APPEAL_TRANSITION = "appeal:appeal:transition"
    VERIFICATION_ATTEMPTED = "appeal:verification:attempted"
    CODE_SENT = "appeal:code:sent"
    MESSAGE_POSTED = "appeal:message:posted"
    REVIEW_RECORDED = "appeal:review:recorded"
    ACTION_COMPLETED = "appeal:action:completed"
    AUTHENTICATOR_REPLACED = "account:mfa:replaced_by_appeal"
    FREEZE_CODE_REQUESTED = "account:freeze:code_requested"
    FREEZE_ACCEPTED = "account:freeze:accepted"
    FREEZE_REFUSED = "account:freeze:refused"


class WebhookEvent(StrEnum):
    """Webhooks announced by this slice (``account.locked``/``account.unlocked`` come from LockService)."""

    APPEAL_DECIDED = "appeal.decided"
    MFA_DISABLED = "mfa.disabled"


class AuthorKind(StrEnum):
    """Who wrote a message."""

    USER = "user"
    OPERATOR = "operator"
    SYSTEM = "system"


class InvalidAppealTransition(Conflict):
    code = "invalid_appeal_transition"
    title = "This change is not allowed in the appeal's current state"


class TooManyMessages(Conflict):
    code = "too_many_messages"
    title = "This appeal has too many messages"


def action_text(action: str) -> str:
    """A required action in words for the user ("choose a new password")."""
    return ACTION_TEXT.get(action, action)


def derive_code_key(secret_key: str) -> str:
    """Return the key contact codes are hashed with (derived, so it is never the secret key itself)."""
    return keyed_hash(secret_key, CODE_KEY_LABEL)


def identifier_digest(identifier: str) -> str:
    """Digest naming an identifier in the audit log (never the raw e-mail or phone)."""
    return sha256_hex(IDENTIFIER_DIGEST_DOMAIN + identifier.strip().lower())


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """The lock behind an appeal, as the user may see it (after the first verification)."""

    reference: str
    reason: str
    details: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Needed:
    """What an appeal still needs: verifications (each a "one of" group), review, actions."""

    next_step: str  # verify | review | actions | none
    verifications: tuple[tuple[str, ...], ...]
    approvals_required: int | None
    approvals_given: int | None
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageView:
    author: str
    body: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # approved | rejected
    reason: str | None
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class AppealSnapshot:
    """Everything ``GET /v1/appeals/{id}`` shows."""

    appeal_id: uuid.UUID
    state: str
    created_at: datetime
    expires_at: datetime | None
    notice: str | None
    case: CaseInfo | None
    verifications: tuple[tuple[str, datetime], ...]
    needed: Needed
    messages: tuple[MessageView, ...]
    decision: Decision | None


def prefers_sms(identifier: str) -> bool:
    """The user named the account by its phone number: send the code by SMS (as the reset flow does)."""
    return identifier.strip().startswith("+")


def _send_code(outbox: Outbox, account: Account, *, code: str, ttl_minutes: int, reference: str | None,
               sms: bool) -> str:
    """Queue ``code`` by SMS when asked and possible, else to the e-mail (else phone); return the channel."""
    context: dict[str, object] = {"expires_minutes": ttl_minutes}
    if reference:
        context["case_reference"] = reference
    channel = outbox.notify(
        email=account.email, phone=account.phone, template=CONTACT_CODE_TEMPLATE, context=context,
        secret={"code": code}, ordering_key=account.id, prefer_sms=sms,
    )
    return channel.value if channel is not None else NO_CHANNEL


def _seal_like_a_message(box: SecretBox, code: str) -> str:
    """Do the sealing work of a code message that is not sent (decoys), so timing tells less; return the
    channel recorded for it."""
    box.encrypt(json.dumps({"code": code}).encode())
    return NO_CHANNEL


def _void_open_codes(session: Session, *, purpose: str, owner_id: str, at: datetime) -> None:
    """Void every unused code of ``owner_id`` for ``purpose``: a new one is being issued."""
    session.execute(
        update(ContactCode)
        .where(ContactCode.purpose == purpose, ContactCode.owner_id == owner_id,
               ContactCode.voided_at.is_(None), ContactCode.used_at.is_(None))
        .values(voided_at=at, version=ContactCode.version + 1)
    )


def _latest_code(session: Session, *, purpose: str, owner_id: str) -> ContactCode | None:
    """The newest code of ``owner_id`` for ``purpose`` that was not voided (only it can be entered)."""
    return session.scalar(
        select(ContactCode)
        .where(ContactCode.purpose == purpose, ContactCode.owner_id == owner_id, ContactCode.voided_at.is_(None))
        .order_by(ContactCode.created_at.desc()).limit(1)
    )


def _spend_code(row: ContactCode, code: str, *, key: str, policy: AppealPolicy, at: datetime) -> CodeCheck:
    """Check ``code`` against the stored ``row`` and count the attempt; an accepted code is used up."""
    check = check_contact_code(
        code, stored_hash=row.code_hash, key=key, purpose=row.purpose, owner_id=row.owner_id,
        digits=policy.contact_code_digits, expires_at=row.expires_at, used=row.used_at is not None,
        attempts=row.attempts, max_attempts=policy.max_attempts[VerificationMethod.CONTACT_CODE], at=at,
    )
    row.attempts += 1
    if check is CodeCheck.ACCEPTED:
        row.used_at = at
    return check


class AppealService:
    """Appeals from submission to release, and the operators' review API."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        audit: AuditLog,
        outbox: Outbox,
        policy: AppealPolicy,
        locks: LockService,
        accounts: AccountService,
        second_factor: SecondFactorService,
        totp: TotpService,
        secret_box: SecretBox,
        code_key: str,
        identity_key: str,
        password_reset_hooks: Sequence[PasswordResetHook] = (),
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._audit = audit
        self._outbox = outbox
        self._policy = policy
        self._locks = locks
        self._accounts = accounts
        self._second_factor = second_factor
        self._totp = totp
        self._box = secret_box
        self._code_key = code_key
        self._identity_key = identity_key
        self._hooks = tuple(password_reset_hooks)

    # --- submission and access -------------------------------------------------------------------

    def submit(self, identifier: str, statement: str, *, actor: str = USER_ACTOR) -> tuple[Appeal, str]:
        """Open an appeal for the identifier's open lock; return it with its token (shown once).

        Whatever ``identifier`` names, the same rows are written and the same answer results: for no
        account, an account that is not locked, or a lock whose appeal is already under review, the
        appeal is a decoy. An earlier appeal on the same lock that proved nothing yet is withdrawn (the
        user may have lost its token); one that made progress is kept and the new request is a decoy. One
        open appeal per lock is enforced by a unique column.
        """
        now = self._clock.now()
        account = self._accounts.find_by_identifier(identifier)
        lock = self._appealable_lock(account) if account is not None else None
        token, digest = new_flow_token(self._entropy)
        appeal = Appeal(
            id=uuid.uuid4(), account_id=account.id if lock and account else None,
            lock_id=lock.id if lock else None, open_lock_id=lock.id if lock else None,
            lock_kind=lock.kind if lock else None, state=AppealState.SUBMITTED, token_digest=digest,
            created_at=now, updated_at=now, expires_at=now + self._policy.appeal_ttl, attempts=0,
            contact_codes_sent=0, required_actions=[], completed_actions=[],
        )
        self._session.add(appeal)
        self._session.flush()
        self._message(appeal, AuthorKind.USER, None, statement)
        self._issue_appeal_code(appeal, account if lock else None, reference=lock.reference if lock else None,
                                sms=prefers_sms(identifier))
        self._audit.record(
            AuditTag.APPEAL_SUBMITTED, actor=actor, subject_type="appeal", subject_id=str(appeal.id),
            data={"matched": lock is not None, "account_id": appeal.account_id, "lock_kind": appeal.lock_kind,
                  "identifier": identifier_digest(identifier)},
        )
        # No webhook here: the documented events (security.delivery.events) are appeal.decided and the
        # lock's account.locked/unlocked; the backend learns of an appeal when it is decided.
        self._session.flush()
        return appeal, token

    def _appealable_lock(self, account: Account) -> Lock | None:
        """The account's oldest open lock an appeal can be opened for (None: the appeal is a decoy)."""
        for lock in self._locks.open_locks(account.id):
            existing = self._session.scalar(select(Appeal).where(Appeal.open_lock_id == lock.id))
            if existing is None:
                return lock
            if AppealState(existing.state) is AppealState.SUBMITTED:
                # The earlier appeal proved nothing yet (its token may be lost): the newer one replaces it.
                # Once possession was proven it is kept, so nobody can cancel the owner's progress.
                self._transition(existing, AppealEvent.WITHDRAW, ActorKind.USER, USER_ACTOR,
                                 note="replaced by a newer appeal")
                self._session.flush()
                return lock
        return None

    def authenticate(self, appeal_id: uuid.UUID, token: str | None) -> Appeal:
        """Return the appeal if ``token`` is its appeal token; raise :class:`InvalidAppealToken` otherwise.

        Unknown ids, wrong tokens and other appeals' tokens are one and the same answer.
        """
        appeal = self._session.get(Appeal, appeal_id)
        stored = appeal.token_digest if appeal is not None else sha256_hex(str(appeal_id))
        if token is None or not token_matches(token, stored) or appeal is None:
            raise InvalidAppealToken("Send the appeal token as 'Authorization: Bearer <appeal token>'.")
        return appeal

    def get(self, appeal_id: uuid.UUID) -> Appeal:
        """Service API: return an appeal by id or raise :class:`AppealNotFound`."""
        appeal = self._session.get(Appeal, appeal_id)
        if appeal is None:
            raise AppealNotFound()
        return appeal

    # --- housekeeping ------------------------------------------------------------------------------

    def refresh(self, appeal: Appeal) -> Appeal:
        """Apply what time and other slices changed: expiry, and a lock released some other way."""
        state = AppealState(appeal.state)
        now = self._clock.now()
        if state in VERIFIABLE_STATES and now >= appeal.expires_at:
            self._transition(appeal, AppealEvent.EXPIRE, ActorKind.SYSTEM, SYSTEM_ACTOR)
        elif is_open(state) and appeal.lock_id is not None:
            lock = self._session.get(Lock, appeal.lock_id)
            if lock is not None and not lock_is_open(LockStatus(lock.status)):
                self._transition(appeal, AppealEvent.LOCK_RELEASED, ActorKind.SYSTEM, SYSTEM_ACTOR,
                                 note=f"lock {lock.status}: {lock.resolution}")
        return appeal

    def expire_due(self, *, limit: int = 500) -> int:
        """Expire unverified appeals whose time ran out; return how many."""
        return expire_due(self._session, clock=self._clock, audit=self._audit, limit=limit)

    def on_lock_released(self, lock_id: uuid.UUID, *, actor: str, actor_kind: ActorKind = ActorKind.SYSTEM) -> None:
        """Close the open appeal of a lock that was released some other way (operator unlock, expiry)."""
        appeal = self._session.scalar(select(Appeal).where(Appeal.open_lock_id == lock_id))
        if appeal is not None:
            self._transition(appeal, AppealEvent.LOCK_RELEASED, actor_kind, actor, note="lock released")
            self._session.flush()

    # --- contact codes -----------------------------------------------------------------------------

    def _issue_appeal_code(self, appeal: Appeal, account: Account | None, *, reference: str | None,
                           sms: bool) -> None:
        now = self._clock.now()
        issued = issue_contact_code(self._entropy, key=self._code_key, purpose=CODE_PURPOSE_APPEAL,
                                    owner_id=str(appeal.id), digits=self._policy.contact_code_digits)
        _void_open_codes(self._session, purpose=CODE_PURPOSE_APPEAL, owner_id=str(appeal.id), at=now)
        ttl_minutes = self._policy.contact_code_ttl_minutes
        # A decoy's code is drawn, stored and sealed like a real one, and never sent.
        if account is not None:
            channel = _send_code(self._outbox, account, code=issued.code, ttl_minutes=ttl_minutes, reference=reference,
                                 sms=sms)
        else:
            channel = _seal_like_a_message(self._box, issued.code)
        self._session.add(ContactCode(
            id=uuid.uuid4(), purpose=CODE_PURPOSE_APPEAL, owner_id=str(appeal.id), code_hash=issued.code_hash,
            channel=channel, created_at=now, expires_at=now + self._policy.contact_code_ttl, attempts=0,
        ))
        appeal.contact_codes_sent += 1
        appeal.updated_at = now
        self._audit.record(AuditTag.CODE_SENT, actor=SYSTEM_ACTOR, subject_type="appeal", subject_id=str(appeal.id),
                           data={"channel": channel, "number": appeal.contact_codes_sent})

    def resend_code(self, appeal: Appeal) -> None:
        """Send a new contact code (the previous one stops working), within the per-appeal limit.

        Allowed while the contact code is still needed: before the first verification, or when an
        earlier contact-code proof went stale (older than the kind's ``proof_ttl_hours``).
        """
        self.refresh(appeal)
        state = AppealState(appeal.state)
        current = self.progress_of(appeal)
        still_needed = state is AppealState.SUBMITTED or (
            state is AppealState.VERIFYING and current is not None
            and VerificationMethod.CONTACT_CODE in current.useful_methods
        )
        if not still_needed:
            raise VerificationNotNeeded("The contact code is not needed now.")
        if appeal.contact_codes_sent >= self._policy.max_contact_codes:
            raise TooManyCodes()
        account = self._session.get(Account, appeal.account_id) if appeal.account_id else None
        lock = self._session.get(Lock, appeal.lock_id) if appeal.lock_id else None
        previous = self._session.scalar(
            select(ContactCode.channel)
            .where(ContactCode.purpose == CODE_PURPOSE_APPEAL, ContactCode.owner_id == str(appeal.id))
            .order_by(ContactCode.created_at.desc()).limit(1)
        )
        self._issue_appeal_code(appeal, account, reference=lock.reference if lock else None,
                                sms=previous == Channel.SMS.value)
        self._session.flush()

    # --- verification ------------------------------------------------------------------------------

    def kind_policy(self, appeal: Appeal) -> KindPolicy | None:
        """The policy of the appeal's lock kind (None for a decoy)."""
        return self._policy.for_kind(appeal.lock_kind) if appeal.lock_kind else None

    def _verification_rows(self, appeal: Appeal) -> dict[VerificationMethod, AppealVerification]:
        rows = self._session.scalars(select(AppealVerification).where(AppealVerification.appeal_id == appeal.id))
        return {VerificationMethod(row.method): row for row in rows}

    def progress_of(self, appeal: Appeal) -> Progress | None:
        """Where the appeal stands against its kind's policy (None for a decoy)."""
        policy = self.kind_policy(appeal)
        if policy is None:
            return None
        done = {m: r.verified_at for m, r in self._verification_rows(appeal).items() if r.verified_at is not None}
        return progress(policy, done, self._clock.now())

    def verify(
        self,
        appeal: Appeal,
        method: VerificationMethod,
        *,
        code: str | None = None,
        amount: Decimal | None = None,
        day: date | None = None,
        document: str | None = None,
        actor: str = USER_ACTOR,
    ) -> VerificationResult:
        """Check one verification attempt; a refusal is *returned* so its trace is committed.

        Raises (nothing recorded) when the attempt is not acceptable at all: the appeal is closed, or the
        method is not needed now. Before the first verification only ``contact_code`` is accepted, for
        real appeals and decoys alike.
        """
        self.refresh(appeal)
        state = AppealState(appeal.state)
        if state is AppealState.EXPIRED:
            return VerificationResult(VerificationOutcome.APPEAL_EXPIRED)
        if state not in VERIFIABLE_STATES:
            raise AppealClosed(f"The appeal is {state}; no verification is needed.", state=str(state))
        if state is AppealState.SUBMITTED and method is not VerificationMethod.CONTACT_CODE:
            raise VerificationNotNeeded("Start with the code sent to your registered contact.",
                                        needed=[VerificationMethod.CONTACT_CODE.value])
        current = self.progress_of(appeal)
        if current is not None and method not in current.useful_methods:
            raise VerificationNotNeeded(needed=sorted(current.useful_methods))
        now = self._clock.now()
        rows = self._verification_rows(appeal)
        row = rows.get(method)
        if row is None:
            row = AppealVerification(appeal_id=appeal.id, method=method, attempts=0, failures=0, last_attempt_at=now)
            self._session.add(row)
        limit = self._policy.max_attempts[method]
        refusal = attempt_refusal(self._policy, method, method_attempts=row.attempts, appeal_attempts=appeal.attempts)
        if refusal is not None:
            self._audit_attempt(appeal, method, VerificationOutcome.EXHAUSTED, actor=actor, detail=str(refusal))
            self._session.flush()
            return VerificationResult(VerificationOutcome.EXHAUSTED, attempts_left=0)
        row.attempts += 1
        row.last_attempt_at = now
        appeal.attempts += 1
        appeal.updated_at = now
        outcome = self._check(appeal, method, code=code, amount=amount, day=day, document=document, actor=actor)
        self._audit_attempt(appeal, method, outcome, actor=actor)
        attempts_left = max(0, min(limit - row.attempts, self._policy.max_attempts_per_appeal - appeal.attempts))
        if outcome is not VerificationOutcome.ACCEPTED:
            row.failures += 1
            self._session.flush()
            return VerificationResult(outcome, attempts_left=attempts_left)
        row.verified_at = now
        self._session.flush()
        self._advance(appeal, actor=actor)
        self._session.flush()
        return VerificationResult(VerificationOutcome.ACCEPTED, attempts_left=attempts_left)

    def _audit_attempt(self, appeal: Appeal, method: VerificationMethod, outcome: VerificationOutcome, *,
                       actor: str, detail: str | None = None) -> None:
        data: dict[str, object] = {"method": str(method), "outcome": str(outcome), "attempts": appeal.attempts}
        if detail:
            data["detail"] = detail
        self._audit.record(AuditTag.VERIFICATION_ATTEMPTED, actor=actor, subject_type="appeal",
                           subject_id=str(appeal.id), data=data)

    def _check(self, appeal: Appeal, method: VerificationMethod, *, code: str | None, amount: Decimal | None,
               day: date | None, document: str | None, actor: str) -> VerificationOutcome:
        if method in (VerificationMethod.CONTACT_CODE, VerificationMethod.TOTP, VerificationMethod.RECOVERY_CODE):
            if code is None:
                raise InvalidInput(f"'{method}' needs 'code'.")
            if method is VerificationMethod.CONTACT_CODE:
                return self._check_contact_code(appeal, code)
        account = self._session.get(Account, appeal.account_id) if appeal.account_id else None
        if account is None:
            return VerificationOutcome.REJECTED  # unreachable for decoys (contact code comes first)
        now = self._clock.now()
        if method is VerificationMethod.TOTP:
            result = self._second_factor.verify(account.id, totp_code=code, recovery_code=None, at=now, actor=actor)
            return VerificationOutcome.ACCEPTED if result.accepted else VerificationOutcome.REJECTED
        if method is VerificationMethod.RECOVERY_CODE:
            result = self._second_factor.verify(account.id, totp_code=None, recovery_code=code, at=now, actor=actor)
            return VerificationOutcome.ACCEPTED if result.accepted else VerificationOutcome.REJECTED
        if method is VerificationMethod.RECENT_TRANSACTION:
            if amount is None or day is None:
                raise InvalidInput("'recent_transaction' needs 'amount' and 'date'.")
            ok = matches_recent_transaction(
                amount, day, self._recent_transactions(account.id), count=self._policy.recent_transaction_count,
                tolerance=self._policy.amount_tolerance,
            )
            return VerificationOutcome.ACCEPTED if ok else VerificationOutcome.REJECTED
        if document is None:
            raise InvalidInput("'identity_document' needs 'document'.")
        ok = document_matches(document, stored_hmac=account.identity_document_hmac, key=self._identity_key)
        return VerificationOutcome.ACCEPTED if ok else VerificationOutcome.REJECTED

    def _check_contact_code(self, appeal: Appeal, code: str) -> VerificationOutcome:
        now = self._clock.now()
        row = _latest_code(self._session, purpose=CODE_PURPOSE_APPEAL, owner_id=str(appeal.id))
        if row is None:
            return VerificationOutcome.CODE_EXPIRED
        check = _spend_code(row, code, key=self._code_key, policy=self._policy, at=now)
        if check is CodeCheck.ACCEPTED:
            return VerificationOutcome.ACCEPTED
        if check is CodeCheck.EXPIRED:
            return VerificationOutcome.CODE_EXPIRED
        if check is CodeCheck.EXHAUSTED:
            return VerificationOutcome.EXHAUSTED
        return VerificationOutcome.REJECTED

    def _recent_transactions(self, account_id: str) -> list[TransactionRecord]:
        rows = self._session.execute(
            select(RiskEvent.amount, RiskEvent.occurred_at)
            .where(RiskEvent.account_id == account_id, RiskEvent.kind == TRANSACTION_KIND,
                   RiskEvent.amount.is_not(None))
            .order_by(RiskEvent.occurred_at.desc())
            .limit(self._policy.recent_transaction_count)
        ).all()
        records = []
        for amount, occurred_at in rows:
            if amount is None:
                continue
            try:
                records.append(TransactionRecord(Decimal(amount), occurred_at))
            except (InvalidOperation, TypeError):
                continue  # a stored amount that is not a number cannot be matched
        return records

    def _advance(self, appeal: Appeal, *, actor: str) -> None:
        """After a successful verification: move to verifying, then to review or automatic approval."""
        if AppealState(appeal.state) is AppealState.SUBMITTED:
            self._transition(appeal, AppealEvent.VERIFICATION_PASSED, ActorKind.USER, actor)
        current = self.progress_of(appeal)
        if current is None or not current.verified:
            return
        if current.next_step is NextStep.REVIEW:
            self._transition(appeal, AppealEvent.VERIFICATION_COMPLETE, ActorKind.USER, actor)
            self._message(appeal, AuthorKind.SYSTEM, None,
                          "Your identity checks are complete. An operator will review your appeal.")
        else:
            self._transition(appeal, AppealEvent.AUTO_APPROVE, ActorKind.USER, actor)
            self._apply_approval(appeal, actor=SYSTEM_ACTOR, reason=None, automatic=True)

    # --- decisions (service API for the operators' review API and console) ------------------------

    def decide(
        self,
        appeal_id: uuid.UUID,
        operator_id: str,
        approve: bool,
        note: str | None,
        user_reason: str | None,
        expected_version: int,
    ) -> Appeal:
        """Record one operator's decision on an appeal waiting for review.

        - ``expected_version`` is the appeal version the operator saw; another version -> 409
          (``StaleVersion``). Two simultaneous decisions: one wins, the other gets 409.
        - Four-eyes: an operator who already reviewed this appeal cannot decide again
          (:class:`FourEyesViolation`, 409), so one person can never give both approvals.
        - A rejection needs ``user_reason`` (shown to the user); the lock stays in place.
        - An approval that completes the approvals the kind needs approves the appeal: the lock is
          released at once when no action is required, else it awaits the required actions.

        ``note`` is internal (operators only). Raises :class:`AppealNotFound` (404) and
        :class:`NotReviewable` (409) when the appeal is not in ``pending_review``.
        """
        appeal = self.get(appeal_id)
        if expected_version != appeal.version:
            raise StaleVersion("The appeal was changed by someone else; reload and retry.",
                               current_version=appeal.version)
        self.refresh(appeal)
        if AppealState(appeal.state) is not AppealState.PENDING_REVIEW:
            raise NotReviewable(f"The appeal is {appeal.state}.", state=appeal.state)
        reviewed = self._session.scalar(
            select(AppealReview.id).where(AppealReview.appeal_id == appeal.id, AppealReview.operator_id == operator_id)
        )
        if reviewed is not None:
            raise FourEyesViolation()
        if not approve and not (user_reason and user_reason.strip()):
            raise ReasonRequired()
        now = self._clock.now()
        actor = f"operator:{operator_id}"
        # The version bump is the first write: a concurrent decision waits on this row and then fails its
        # version check (409) before it holds any other lock. (Inserting the review first let both hold a
        # key-share lock on the appeal through the foreign key; closing the appeal, which updates its
        # unique open_lock_id, then deadlocked them on PostgreSQL: a 503 instead of a 409.)
        touch(appeal, now)
        self._session.flush()
        self._session.add(AppealReview(appeal_id=appeal.id, operator_id=operator_id, approve=approve, note=note,
                                       user_reason=user_reason, created_at=now))
        self._session.flush()
        self._audit.record(AuditTag.REVIEW_RECORDED, actor=actor, subject_type="appeal", subject_id=str(appeal.id),
                           data={"approve": approve, "account_id": appeal.account_id})
        if not approve:
            self._transition(appeal, AppealEvent.REJECT, ActorKind.OPERATOR, actor, note=note)
            appeal.decision_reason = user_reason
            appeal.decided_at = now
            self._announce_decision(appeal, approved=False, reason=user_reason, automatic=False)
        else:
            policy = self.kind_policy(appeal)
            required = policy.reviewers if policy is not None else 1
            if self.approvals(appeal) < required:
                self._transition(appeal, AppealEvent.FIRST_APPROVAL, ActorKind.OPERATOR, actor, note=note)
            else:
                self._transition(appeal, AppealEvent.APPROVE, ActorKind.OPERATOR, actor, note=note)
                self._apply_approval(appeal, actor=actor, reason=user_reason, automatic=False)
        self._session.flush()
        return appeal

    def review_queue(self, *, limit: int = 100) -> list[Appeal]:
        """Service API: appeals waiting for a review, oldest first (decoys never wait for review)."""
        return list(self._session.scalars(
            select(Appeal).where(Appeal.state == AppealState.PENDING_REVIEW)
            .order_by(Appeal.updated_at, Appeal.id).limit(limit)
        ))

    def reviews(self, appeal: Appeal) -> list[AppealReview]:
        """Service API: the operators' decisions on an appeal, oldest first (notes included)."""
        return list(self._session.scalars(
            select(AppealReview).where(AppealReview.appeal_id == appeal.id).order_by(AppealReview.id)
        ))

    def history(self, appeal: Appeal) -> list[AppealHistory]:
        """Service API: every transition of an appeal, oldest first."""
        return list(self._session.scalars(
            select(AppealHistory).where(AppealHistory.appeal_id == appeal.id).order_by(AppealHistory.id)
        ))

    def withdraw(self, appeal: Appeal, *, actor: str = USER_ACTOR) -> None:
        """The user gives up (before a decision); the lock stays and may be appealed again."""
        self.refresh(appeal)
        self._transition(appeal, AppealEvent.WITHDRAW, ActorKind.USER, actor)
        self._session.flush()

    def approvals(self, appeal: Appeal) -> int:
        """Distinct operators who approved the appeal so far."""
        return self._session.scalar(
            select(func.count()).select_from(AppealReview)
            .where(AppealReview.appeal_id == appeal.id, AppealReview.approve.is_(True))
        ) or 0

    def reply(self, appeal_id: uuid.UUID, operator_id: str, body: str) -> AppealMessage:
        """Service API: an operator's message to the user, kept on the record."""
        appeal = self.get(appeal_id)
        return self._post(appeal, AuthorKind.OPERATOR, operator_id, body, actor=f"operator:{operator_id}")

    def _apply_approval(self, appeal: Appeal, *, actor: str, reason: str | None, automatic: bool) -> None:
        now = self._clock.now()
        appeal.decided_at = now
        appeal.decision_reason = reason
        lock = self._locks.get(appeal.lock_id) if appeal.lock_id else None
        if lock is None or not lock_is_open(LockStatus(lock.status)):
            self._transition(appeal, AppealEvent.LOCK_RELEASED, ActorKind.SYSTEM, SYSTEM_ACTOR)
            return
        policy = self.kind_policy(appeal)
        wanted = [*(str(a) for a in (policy.required_actions if policy else ())), *lock.required_actions]
        actions = [a for a in dict.fromkeys(wanted) if a not in lock.completed_actions]
        appeal.required_actions = actions
        appeal.completed_actions = []
        if actions:
            lock.required_actions = list(dict.fromkeys([*lock.required_actions, *actions]))
            if LockStatus(lock.status) is LockStatus.ACTIVE:
                self._locks.release(lock, LockEvent.APPEAL_APPROVED_WITH_ACTIONS, actor=actor,
                                    note=f"appeal {appeal.id} approved")
            steps = " and ".join(action_text(a) for a in actions)
            self._message(appeal, AuthorKind.SYSTEM, None,
                          f"Your appeal was approved. To release your account, {steps} with this appeal.")
        else:
            self._locks.release(lock, LockEvent.APPEAL_APPROVED, actor=actor, note=f"appeal {appeal.id} approved")
            self._transition(appeal, AppealEvent.RELEASE, ActorKind.SYSTEM, SYSTEM_ACTOR)
        self._announce_decision(appeal, approved=True, reason=reason, automatic=automatic)

    def _announce_decision(self, appeal: Appeal, *, approved: bool, reason: str | None, automatic: bool) -> None:
        if appeal.account_id is None:
            return
        decision = "approved" if approved else "rejected"
        lock = self._session.get(Lock, appeal.lock_id) if appeal.lock_id else None
        self._outbox.webhook(WebhookEvent.APPEAL_DECIDED, {
            "account_id": appeal.account_id, "appeal_id": str(appeal.id),
            "lock_id": str(appeal.lock_id) if appeal.lock_id else None, "decision": decision, "reason": reason,
            "automatic": automatic, "required_actions": list(appeal.required_actions),
            "decided_at": self._clock.now().isoformat(),
        }, ordering_key=appeal.account_id)
        account = self._session.get(Account, appeal.account_id)
        if account is None or lock is None:
            return
        context: dict[str, object] = {"case_reference": lock.reference, "decision": decision}
        if reason:
            context["note"] = reason
        if appeal.required_actions:
            context["next_steps"] = ", ".join(action_text(str(a)) for a in appeal.required_actions)
        self._outbox.notify(email=account.email, phone=account.phone, template=DECISION_TEMPLATE, context=context,
                            ordering_key=account.id)

    # --- required actions with the appeal token ---------------------------------------------------

    def _pending_action(self, appeal: Appeal, action: RequiredAction) -> str:
        self.refresh(appeal)
        if AppealState(appeal.state) is not AppealState.APPROVED or appeal.account_id is None:
            raise ActionNotPending(f"The appeal is {appeal.state}; actions follow an approval.", state=appeal.state)
        if str(action) not in self.actions_left(appeal):
            raise ActionNotPending(f"'{action}' is not pending for this appeal.")
        return appeal.account_id

    def actions_left(self, appeal: Appeal) -> tuple[str, ...]:
        """Required actions not done yet, through this appeal or otherwise (e.g. a reset by e-mail token)."""
        lock = self._session.get(Lock, appeal.lock_id) if appeal.lock_id else None
        done = {*appeal.completed_actions, *(lock.completed_actions if lock is not None else ())}
        return tuple(str(a) for a in appeal.required_actions if a not in done)

    def reset_password(
        self,
        appeal: Appeal,
        new_password: str,
        *,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        actor: str = USER_ACTOR,
    ) -> SecondFactorResult | None:
        """Set a new password with the appeal token (no e-mail round trip: identity is already proven).

        The password policy applies (422 ``weak_password``, nothing written). When no operator reviewed
        the appeal (brute_force: only the contact code was proven) and the account has TOTP enabled, a
        TOTP or recovery code is required, as for a reset by e-mail token: raises ``SecondFactorRequired``
        when none is given; a wrong one is counted and *returned* (the password is not changed). The
        password-reset hooks of the credentials slice run as for a token reset; the lock is released
        once nothing is left. Returns None on success.
        """
        account_id = self._pending_action(appeal, RequiredAction.RESET_PASSWORD)
        self._accounts.check_password_policy(self._accounts.get(account_id), new_password)
        policy = self.kind_policy(appeal)
        if policy is not None and not policy.review:
            factor = self._second_factor.verify(account_id, totp_code=totp_code, recovery_code=recovery_code,
                                                at=self._clock.now(), actor=actor)
            if factor.outcome is SecondFactorOutcome.MISSING:
                raise SecondFactorRequired()
            if not factor.satisfied:
                self._session.flush()
                return factor
        self._accounts.set_password(account_id, new_password, actor=actor, reason="appeal")
        for hook in self._hooks:
            hook(self._session, account_id=account_id, at=self._clock.now(), actor=actor)
        self._complete(appeal, RequiredAction.RESET_PASSWORD, actor=actor)
        return None

    def start_totp(self, appeal: Appeal, *, actor: str = USER_ACTOR) -> Enrollment:
        """Start enrolling a new authenticator within the approved appeal.

        An authenticator already enabled is removed first: after a takeover it may be the attacker's,
        and the owner's identity was just proven and reviewed.
        """
        account_id = self._pending_action(appeal, RequiredAction.ENROLL_TOTP)
        if self._second_factor.confirmed_credential(account_id) is not None:
            self._replace_authenticator(account_id, appeal, actor=actor)
        return self._totp.start_enrollment(account_id, actor=actor)

    def confirm_totp(self, appeal: Appeal, code: str, *, actor: str = USER_ACTOR) -> tuple[str, ...]:
        """Confirm the new authenticator with its first code; return the recovery codes (shown once)."""
        account_id = self._pending_action(appeal, RequiredAction.ENROLL_TOTP)
        codes = self._totp.confirm_enrollment(account_id, code, actor=actor)
        self._complete(appeal, RequiredAction.ENROLL_TOTP, actor=actor)
        return codes

    def _replace_authenticator(self, account_id: str, appeal: Appeal, *, actor: str) -> None:
        # The credentials slice offers no code-less removal; an approved appeal is that proof.
        # Same lock order as every credential write (account row first), so this never deadlocks.
        lock_account(self._session, account_id)
        self._session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
        self._session.execute(delete(TotpCredential).where(TotpCredential.account_id == account_id))
        self._audit.record(AuditTag.AUTHENTICATOR_REPLACED, actor=actor, subject_type="account",
                           subject_id=account_id, data={"appeal_id": str(appeal.id)})
        self._outbox.webhook(WebhookEvent.MFA_DISABLED, {
            "account_id": account_id, "method": "totp", "disabled_at": self._clock.now().isoformat(),
            "reason": "replaced_by_appeal",
        }, ordering_key=account_id)
        self._session.expire_all()

    def _complete(self, appeal: Appeal, action: RequiredAction, *, actor: str) -> None:
        appeal.completed_actions = [*appeal.completed_actions, str(action)]
        touch(appeal, self._clock.now())
        account_id = appeal.account_id or ""
        self._audit.record(AuditTag.ACTION_COMPLETED, actor=actor, subject_type="appeal", subject_id=str(appeal.id),
                           data={"action": str(action), "account_id": account_id})
        self._locks.complete_action(account_id, action, actor=actor)
        lock = self._locks.get(appeal.lock_id) if appeal.lock_id else None
        if lock is not None and not lock_is_open(LockStatus(lock.status)):
            self._transition(appeal, AppealEvent.RELEASE, ActorKind.USER, actor)
        self._session.flush()

    # --- messages ----------------------------------------------------------------------------------

    def post_user_message(self, appeal: Appeal, body: str, *, actor: str = USER_ACTOR) -> AppealMessage:
        """The user's message to the operators, kept on the record."""
        self.refresh(appeal)
        return self._post(appeal, AuthorKind.USER, None, body, actor=actor)

    def _post(self, appeal: Appeal, kind: AuthorKind, author_id: str | None, body: str, *, actor: str) -> AppealMessage:
        count = self._session.scalar(
            select(func.count()).select_from(AppealMessage).where(AppealMessage.appeal_id == appeal.id)
        ) or 0
        if count >= MAX_MESSAGES_PER_APPEAL:
            raise TooManyMessages()
        message = self._message(appeal, kind, author_id, body)
        touch(appeal, self._clock.now())  # an operator deciding on what they saw before this gets 409
        self._audit.record(AuditTag.MESSAGE_POSTED, actor=actor, subject_type="appeal", subject_id=str(appeal.id),
                           data={"author": str(kind), "length": len(body)})
        self._session.flush()
        return message

    def _message(self, appeal: Appeal, kind: AuthorKind, author_id: str | None, body: str) -> AppealMessage:
        message = AppealMessage(appeal_id=appeal.id, author_kind=kind, author_id=author_id, body=body,
                                created_at=self._clock.now())
        self._session.add(message)
        return message

    def messages(self, appeal: Appeal) -> list[AppealMessage]:
        """The conversation, oldest first."""
        return list(self._session.scalars(
            select(AppealMessage).where(AppealMessage.appeal_id == appeal.id)
            .order_by(AppealMessage.created_at, AppealMessage.id)
        ))

    # --- what the user sees ------------------------------------------------------------------------

    def snapshot(self, appeal: Appeal) -> AppealSnapshot:
        """What ``GET /v1/appeals/{id}`` shows; identical for decoys and real appeals until possession is proven."""
        state = AppealState(appeal.state)
        rows = self._verification_rows(appeal)
        verified = tuple(sorted(((str(m), r.verified_at) for m, r in rows.items() if r.verified_at is not None),
                                key=lambda item: item[1]))
        revealed = bool(verified) and appeal.lock_id is not None
        case = self._case(appeal) if revealed else None
        messages = tuple(MessageView(m.author_kind, m.body, m.created_at) for m in self.messages(appeal))
        decision = None
        if appeal.decided_at is not None and state in (AppealState.APPROVED, AppealState.REJECTED,
                                                       AppealState.RELEASED):
            outcome = "rejected" if state is AppealState.REJECTED else "approved"
            decision = Decision(outcome, appeal.decision_reason, appeal.decided_at)
        return AppealSnapshot(
            appeal_id=appeal.id, state=str(state), created_at=appeal.created_at,
            expires_at=appeal.expires_at if state in VERIFIABLE_STATES else None,
            notice=None if revealed else GENERIC_NOTICE, case=case, verifications=verified if revealed else (),
            needed=self._needed(appeal, state, revealed), messages=messages, decision=decision,
        )

    def _case(self, appeal: Appeal) -> CaseInfo | None:
        lock = self._session.get(Lock, appeal.lock_id) if appeal.lock_id else None
        if lock is None:
            return None
        details = tuple(str(r.get("detail") or r.get("rule") or "") for r in lock.reasons if isinstance(r, dict))
        return CaseInfo(reference=lock.reference, reason=USER_REASONS.get(lock.kind, USER_REASONS[LockKind.RISK]),
                        details=tuple(d for d in details if d))

    def _needed(self, appeal: Appeal, state: AppealState, revealed: bool) -> Needed:
        if state is AppealState.SUBMITTED or (state in VERIFIABLE_STATES and not revealed):
            return Needed("verify", ((VerificationMethod.CONTACT_CODE.value,),), None, None, ())
        if state is AppealState.VERIFYING:
            current = self.progress_of(appeal)
            missing = current.missing if current is not None else ()
            groups = tuple(tuple(str(m) for m in requirement_methods(r)) for r in missing)
            return Needed("verify", groups, None, None, ())
        if state is AppealState.PENDING_REVIEW:
            policy = self.kind_policy(appeal)
            return Needed("review", (), policy.reviewers if policy else 1, self.approvals(appeal), ())
        if state is AppealState.APPROVED:
            left = self.actions_left(appeal)
            return Needed("actions", (), None, None, left)
        return Needed("none", (), None, None, ())

    # --- transitions -------------------------------------------------------------------------------

    def _transition(self, appeal: Appeal, event: AppealEvent, kind: ActorKind, actor: str,
                    note: str | None = None) -> None:
        apply_transition(self._session, appeal, event, kind, actor=actor, clock=self._clock, audit=self._audit,
                         note=note)


def touch(appeal: Appeal, at: datetime) -> None:
    """Mark the appeal changed so its version is bumped even when no other column changes."""
    appeal.updated_at = at
    flag_modified(appeal, "updated_at")


def apply_transition(session: Session, appeal: Appeal, event: AppealEvent, kind: ActorKind, *, actor: str,
                     clock: Clock, audit: AuditLog, note: str | None = None) -> None:
    """Move ``appeal`` through the pure table, append the history row and audit it (no flush)."""
    previous = AppealState(appeal.state)
    try:
        state = next_state(previous, event, kind)
    except IllegalTransition as exc:
        raise InvalidAppealTransition(str(exc), state=str(previous), event=str(event)) from exc
    now = clock.now()
    appeal.state = state
    touch(appeal, now)
    if not is_open(state):
        appeal.open_lock_id = None
        appeal.closed_at = now
    session.add(AppealHistory(appeal_id=appeal.id, at=now, actor=actor, event=str(event),
                              from_state=previous, to_state=state, note=note))
    audit.record(AuditTag.APPEAL_TRANSITION, actor=actor, subject_type="appeal", subject_id=str(appeal.id),
                 data={"event": str(event), "from": str(previous), "to": str(state),
                       "account_id": appeal.account_id})


def expire_due(session: Session, *, clock: Clock, audit: AuditLog, limit: int = 500) -> int:
    """Expire unverified appeals whose time ran out (CLI sweep); return how many."""
    now = clock.now()
    due = list(session.scalars(
        select(Appeal)
        .where(Appeal.state.in_([str(s) for s in VERIFIABLE_STATES]), Appeal.expires_at <= now)
        .order_by(Appeal.expires_at).limit(limit)
    ))
    for appeal in due:
        apply_transition(session, appeal, AppealEvent.EXPIRE, ActorKind.SYSTEM, actor=SYSTEM_ACTOR, clock=clock,
                         audit=audit)
    session.flush()
    return len(due)


class FreezeService:
    """"Not me": the owner proves possession and the account is locked at once (kind ``user_reported``)."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        audit: AuditLog,
        outbox: Outbox,
        policy: AppealPolicy,
        locks: LockService,
        accounts: AccountService,
        secret_box: SecretBox,
        code_key: str,
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._audit = audit
        self._outbox = outbox
        self._policy = policy
        self._locks = locks
        self._accounts = accounts
        self._box = secret_box
        self._code_key = code_key

    def send_code(self, identifier: str, *, actor: str = USER_ACTOR) -> None:
        """Send a freeze code to the identifier's registered contact, if it names an account.

        Unknown identifiers go through the same steps (code drawn and hashed, one audit entry).
        """
        now = self._clock.now()
        account = self._accounts.find_by_identifier(identifier)
        owner = account.id if account is not None else NO_OWNER
        issued = issue_contact_code(self._entropy, key=self._code_key, purpose=CODE_PURPOSE_FREEZE, owner_id=owner,
                                    digits=self._policy.contact_code_digits)
        if account is None:
            _seal_like_a_message(self._box, issued.code)
            self._audit.record(AuditTag.FREEZE_CODE_REQUESTED, actor=actor, subject_type="identifier",
                               subject_id=identifier_digest(identifier), data={"matched": False})
            return
        _void_open_codes(self._session, purpose=CODE_PURPOSE_FREEZE, owner_id=account.id, at=now)
        channel = _send_code(self._outbox, account, code=issued.code,
                             ttl_minutes=self._policy.contact_code_ttl_minutes, reference=None,
                             sms=prefers_sms(identifier))
        self._session.add(ContactCode(
            id=uuid.uuid4(), purpose=CODE_PURPOSE_FREEZE, owner_id=account.id, code_hash=issued.code_hash,
            channel=channel, created_at=now, expires_at=now + self._policy.contact_code_ttl, attempts=0,
        ))
        self._audit.record(AuditTag.FREEZE_CODE_REQUESTED, actor=actor, subject_type="account", subject_id=account.id,
                           data={"matched": True, "channel": channel})
        self._session.flush()

    def freeze(self, identifier: str, *, password: str | None, code: str | None, reason: str | None = None,
               actor: str = USER_ACTOR) -> FreezeResult:
        """Lock the account at once if the password or the latest freeze code is right.

        A refusal is returned (its counters and audit entry are committed) and is the same for an
        unknown identifier, a wrong password and a wrong code.
        """
        if (password is None) == (code is None):
            raise InvalidInput("Give exactly one of 'password' and 'code'.")
        account = self._accounts.find_by_identifier(identifier)
        if password is not None:
            proof = "password"
            if account is not None and self._recent_refusals(account.id) >= MAX_FREEZE_REFUSALS:
                # Not a password oracle beyond the login's own brute-force limits: same work, no check.
                self._accounts.verify_password(None, password)
                ok = False
            else:
                ok = self._accounts.verify_password(account, password)
        else:
            proof = "code"
            ok = self._use_code(account, code or "")
        accepted = ok and account is not None
        subject_type, subject_id = (("account", account.id) if account is not None
                                    else ("identifier", identifier_digest(identifier)))
        self._audit.record(AuditTag.FREEZE_ACCEPTED if accepted else AuditTag.FREEZE_REFUSED, actor=actor,
                           subject_type=subject_type, subject_id=subject_id, data={"proof": proof})
        if account is None or not accepted:
            self._session.flush()
            return FreezeResult(FreezeOutcome.REFUSED)
        for lock in self._locks.open_locks(account.id):
            if lock.kind == LockKind.USER_REPORTED:
                return FreezeResult(FreezeOutcome.ALREADY_FROZEN, reference=lock.reference)
        actions = self._policy.for_kind(LockKind.USER_REPORTED).required_actions
        lock = self._locks.place(
            account, kind=LockKind.USER_REPORTED,
            reasons=[{"rule": "user_reported", "detail": (reason or "").strip() or DEFAULT_FREEZE_DETAIL}],
            actor=actor, required_actions=actions,
            note=f"frozen by the owner (proof: {proof})",
        )
        return FreezeResult(FreezeOutcome.FROZEN, reference=lock.reference)

    def _recent_refusals(self, account_id: str) -> int:
        """Refused freeze attempts on the account within the window (from the audit log: shared, durable)."""
        since = self._clock.now() - FREEZE_REFUSAL_WINDOW
        return self._session.scalar(
            select(func.count()).select_from(AuditEntry).where(
                AuditEntry.subject_type == "account", AuditEntry.subject_id == account_id,
                AuditEntry.action == AuditTag.FREEZE_REFUSED, AuditEntry.at >= since,
            )
        ) or 0

    def _use_code(self, account: Account | None, code: str) -> bool:
        now = self._clock.now()
        row = None
        if account is not None:
            row = _latest_code(self._session, purpose=CODE_PURPOSE_FREEZE, owner_id=account.id)
        if row is None:
            # Same work as a real check: one keyed hash and a constant-time compare.
            check_contact_code(code, stored_hash=sha256_hex(code), key=self._code_key, purpose=CODE_PURPOSE_FREEZE,
                               owner_id=NO_OWNER, digits=self._policy.contact_code_digits,
                               expires_at=now + self._policy.contact_code_ttl, used=False, attempts=0,
                               max_attempts=1, at=now)
            return False
        return _spend_code(row, code, key=self._code_key, policy=self._policy, at=now) is CodeCheck.ACCEPTED
