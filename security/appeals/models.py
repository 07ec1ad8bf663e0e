"""Appeals, their verifications, contact codes, messages, reviews and append-only history."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import JSONList, Timestamp, UUIDPk

BigId = BigInteger().with_variant(Integer(), "sqlite")


class Appeal(Base):
    """An appeal against a lock, or a decoy.

    Every ``POST /v1/appeals`` creates a row, whatever the identifier named: when it named no locked
    account, ``lock_id`` is NULL and the row is a *decoy* that looks the same from outside (same answers,
    never verifiable) so nobody learns whether an account exists or is locked.
    """

    __tablename__ = "appeals"

    id: Mapped[UUIDPk]
    # NULL for decoys. The account id is kept only for real appeals.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    lock_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("locks.id"))
    # Equals lock_id while the appeal is open, NULL once closed: the unique constraint makes "one open
    # appeal per lock" hold under concurrency on both databases (NULLs never collide).
    open_lock_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), unique=True)
    lock_kind: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the 256-bit appeal token; the token itself is only ever in the 202 answer.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    # Until when the appeal may stay unverified (submitted/verifying).
    expires_at: Mapped[Timestamp]
    # All verification attempts so far (limit per appeal); per-method counts live on the verification rows.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    contact_codes_sent: Mapped[int] = mapped_column(Integer, default=0)
    # Actions still to do / done after approval (copied from the policy when approved).
    required_actions: Mapped[JSONList]
    completed_actions: Mapped[JSONList]
    decided_at: Mapped[Timestamp | None]
    # The reason shown to the user with the decision (rejections always have one).
    decision_reason: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[Timestamp | None]
    # Optimistic concurrency: every attempt, decision and action bumps it; a concurrent change -> 409.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        # Review queue and expiry sweep.
        Index("ix_appeals_state_created", "state", "created_at"),
        Index("ix_appeals_account", "account_id"),
    )

    @property
    def is_decoy(self) -> bool:
        """True when the identifier named no locked account (nothing can ever be proven)."""
        return self.lock_id is None


class AppealVerification(Base):
    """Attempts and success of one verification method within one appeal."""

    __tablename__ = "appeal_verifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appeal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("appeals.id"))
    method: Mapped[str] = mapped_column(String(24))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[Timestamp]
    verified_at: Mapped[Timestamp | None]

    __table_args__ = (UniqueConstraint("appeal_id", "method"),)


class ContactCode(Base):
    """A one-time code sent to the registered contact (appeals and freezes), stored as a keyed hash."""

    __tablename__ = "contact_codes"

    id: Mapped[UUIDPk]
    # "appeal" (owner = appeal id) or "freeze" (owner = account id).
    purpose: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]
    # A newer code for the same owner voids this one.
    voided_at: Mapped[Timestamp | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (Index("ix_contact_codes_owner", "purpose", "owner_id", "created_at"),)


class AppealMessage(Base):
    """The conversation between the user and operators, on the record."""

    __tablename__ = "appeal_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appeal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("appeals.id"), index=True)
    # "user", "operator" or "system".
    author_kind: Mapped[str] = mapped_column(String(16))
    # Operator id for operator messages; NULL otherwise.
    author_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Timestamp]


class AppealReview(Base):
    """One operator's decision. Unique per (appeal, operator): four-eyes cannot be met by one person."""

    __tablename__ = "appeal_reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appeal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("appeals.id"))
    operator_id: Mapped[str] = mapped_column(String(64))
    approve: Mapped[bool] = mapped_column(Boolean)
    # Internal note (operators only) and the reason shown to the user.
    note: Mapped[str | None] = mapped_column(Text)
    user_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[Timestamp]

    __table_args__ = (UniqueConstraint("appeal_id", "operator_id"),)


class AppealHistory(Base):
    """Append-only record of every appeal transition."""

    __tablename__ = "appeal_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appeal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("appeals.id"), index=True)
    at: Mapped[Timestamp]
    actor: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
