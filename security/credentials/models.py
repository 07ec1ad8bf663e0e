"""Stored second factors and password-reset tokens.

Nothing here holds a usable secret in the clear: TOTP secrets are SecretBox ciphertext, recovery codes
and reset tokens are SHA-256 digests (see ``recovery.py`` and ``tokens.py`` for why a fast hash is right).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import Timestamp, UUIDPk


class TotpCredential(Base):
    """One TOTP authenticator per account; pending until the first code confirms it."""

    __tablename__ = "totp_credentials"

    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), primary_key=True)
    # SecretBox (MultiFernet) ciphertext of the base32 secret; `keys rotate` re-encrypts it.
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Timestamp]
    # Set when the user proved the authenticator works; only confirmed credentials are second factors.
    confirmed_at: Mapped[Timestamp | None]
    # Highest RFC 6238 time step ever accepted: any code of this step or earlier is a replay.
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Consecutive failed second-factor attempts (reset by a success); read by lockout policy.
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[Timestamp | None]

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None


class RecoveryCode(Base):
    """One single-use recovery code, stored only as its SHA-256 digest."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_account", "account_id", "used_at"),)

    id: Mapped[UUIDPk]
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]


class PasswordResetToken(Base):
    """A password-reset token: only its digest is kept; used, expired or voided tokens stay for the record."""

    __tablename__ = "password_reset_tokens"
    __table_args__ = (Index("ix_password_reset_tokens_account", "account_id", "used_at", "voided_at"),)

    id: Mapped[UUIDPk]
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    # Where the token was sent: "email", "sms" or "none" (no registered contact).
    channel: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]
    # Set when a newer token replaced this one, or too many wrong second factors were tried with it.
    voided_at: Mapped[Timestamp | None]
    # Wrong second-factor attempts made with this token (it is voided at the limit).
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
