"""Account profile and password use cases (no Flask; the caller commits)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from security.accounts.models import Account, AccountStatus
from security.audit.services import AuditLog
from security.clock import Clock
from security.credentials.passwords import PasswordHasher, PasswordPolicy, Verification
from security.crypto import keyed_hash, normalize_document_number
from security.delivery.outbox import Outbox
from security.errors import AccountNotFound, Conflict, WeakPassword


class AuditTag:
    ACCOUNT_CREATED = "account:profile:created"
    ACCOUNT_UPDATED = "account:profile:updated"
    PASSWORD_SET = "account:password:set"
    PASSWORD_REHASHED = "account:password:rehashed"


class WebhookEvent:
    PASSWORD_CHANGED = "password.changed"


@dataclass(frozen=True)
class Profile:
    email: str | None
    phone: str | None
    home_country: str | None
    identity_document: str | None


def normalize_email(email: str | None) -> str | None:
    return email.strip().lower() if email else None


class AccountService:
    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        audit: AuditLog,
        outbox: Outbox,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        identity_hmac_key: str,
    ) -> None:
        self._session = session
        self._clock = clock
        self._audit = audit
        self._outbox = outbox
        self._hasher = hasher
        self._policy = policy
        self._identity_key = identity_hmac_key

    def get(self, account_id: str) -> Account:
        account = self._session.get(Account, account_id)
        if account is None:
            raise AccountNotFound(f"No account {account_id!r}.")
        return account

    def find_by_identifier(self, identifier: str) -> Account | None:
        """Account id, e-mail address or phone number -> account (None when unknown)."""
        identifier = identifier.strip()
        if not identifier:
            return None
        if "@" in identifier:
            clause = Account.email_normalized == normalize_email(identifier)
        elif identifier.startswith("+"):
            clause = Account.phone == identifier
        else:
            clause = Account.id == identifier
        return self._session.scalar(select(Account).where(clause))

    def document_hmac(self, document_number: str) -> str:
        """The keyed hash a document number is stored and compared as."""
        return keyed_hash(self._identity_key, normalize_document_number(document_number))

    def upsert(self, account_id: str, profile: Profile, *, actor: str) -> tuple[Account, bool]:
        """Create or replace the profile; returns (account, created)."""
        now = self._clock.now()
        email_normalized = normalize_email(profile.email)
        self._ensure_unique(account_id, email_normalized, profile.phone)
        document = self.document_hmac(profile.identity_document) if profile.identity_document else None
        account = self._session.get(Account, account_id)
        created = account is None
        if account is None:
            account = Account(id=account_id, status=AccountStatus.ACTIVE, created_at=now)
            self._session.add(account)
        changed = sorted(
            name
            for name, old, new in (
                ("email", account.email, profile.email),
                ("phone", account.phone, profile.phone),
                ("home_country", account.home_country, profile.home_country),
                ("identity_document", account.identity_document_hmac, document),
            )
            if old != new
        )
        account.email = profile.email
        account.email_normalized = email_normalized
        account.phone = profile.phone
        account.home_country = profile.home_country
        account.identity_document_hmac = document
        if created or changed:
            account.updated_at = now
            self._audit.record(
                AuditTag.ACCOUNT_CREATED if created else AuditTag.ACCOUNT_UPDATED,
                actor=actor, subject_type="account", subject_id=account_id, data={"changed": changed},
            )
        self._session.flush()
        return account, created

    def _ensure_unique(self, account_id: str, email_normalized: str | None, phone: str | None) -> None:
        if email_normalized:
            owner = self._session.scalar(select(Account.id).where(Account.email_normalized == email_normalized))
            if owner is not None and owner != account_id:
                raise Conflict("Another account already uses this e-mail address.", field="email")
        if phone:
            owner = self._session.scalar(select(Account.id).where(Account.phone == phone))
            if owner is not None and owner != account_id:
                raise Conflict("Another account already uses this phone number.", field="phone")

    def check_password_policy(self, account: Account, password: str) -> None:
        """Raise :class:`WeakPassword` with every reason when the policy refuses ``password``."""
        violations = self._policy.violations(
            password, user_inputs=[account.id, account.email, account.phone]
        )
        if violations:
            raise WeakPassword(
                " ".join(v.message for v in violations),
                errors=[{"field": "password", "code": v.code, "message": v.message} for v in violations],
            )

    def set_password(self, account_id: str, password: str, *, actor: str, reason: str = "set") -> Account:
        """Apply the policy, hash with argon2id, audit and announce ``password.changed``."""
        account = self.get(account_id)
        self.check_password_policy(account, password)
        now = self._clock.now()
        account.password_hash = self._hasher.hash(password)
        account.password_changed_at = now
        account.updated_at = now
        self._audit.record(
            AuditTag.PASSWORD_SET, actor=actor, subject_type="account", subject_id=account_id, data={"reason": reason}
        )
        self._outbox.webhook(
            WebhookEvent.PASSWORD_CHANGED,
            {"account_id": account_id, "changed_at": now.isoformat(), "reason": reason},
            ordering_key=account_id,
        )
        self._session.flush()
        return account

    def verify_password(self, account: Account | None, password: str) -> bool:
        """Check ``password``; unknown accounts cost the same time. Upgrades outdated hashes in place."""
        return self.accept_verification(account, self.check_password_hash(
            account.password_hash if account else None, password))

    def check_password_hash(self, stored_hash: str | None, password: str) -> Verification:
        """The slow part of :meth:`verify_password` alone: argon2 against ``stored_hash`` (None: the same
        work, and a failure). Touches no database, so it can run outside any transaction."""
        return self._hasher.verify(stored_hash, password)

    def accept_verification(self, account: Account | None, result: Verification) -> bool:
        """Apply a :meth:`check_password_hash` result made against ``account``'s current hash: store the
        upgraded hash (outdated parameters) and return whether the password was right."""
        if result.ok and result.new_hash and account is not None:
            account.password_hash = result.new_hash
            self._audit.record(
                AuditTag.PASSWORD_REHASHED, actor="system", subject_type="account", subject_id=account.id, data={}
            )
        return result.ok
