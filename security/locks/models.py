"""Locks (with optimistic concurrency), their append-only history, and brute-force counters."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import JSONList, Timestamp, UUIDPk

BigId = BigInteger().with_variant(Integer(), "sqlite")


class Lock(Base):
    """A lock on an account. ``reference`` is the case reference shown to the user."""

    __tablename__ = "locks"

    id: Mapped[UUIDPk]
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20))
    # [{rule, points, detail}] or [{rule: "operator", detail: note}]: why the lock exists.
    reasons: Mapped[JSONList]
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp | None]
    required_actions: Mapped[JSONList]
    completed_actions: Mapped[JSONList]
    resolution: Mapped[str | None] = mapped_column(String(24))
    resolved_at: Mapped[Timestamp | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    assessment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    # Optimistic concurrency: two simultaneous releases -> one StaleDataError -> 409.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        Index("ix_locks_account_status", "account_id", "status"),
        # Expiry sweep: open temporary locks by expiry time.
        Index("ix_locks_status_expires", "status", "expires_at"),
        # Auto-lock guard: locks of a kind created in the last window.
        Index("ix_locks_kind_created", "kind", "created_at"),
    )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe view (audit entries, webhooks)."""
        return {
            "lock_id": str(self.id),
            "reference": self.reference,
            "account_id": self.account_id,
            "kind": self.kind,
            "status": self.status,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "required_actions": list(self.required_actions),
        }


class LockHistory(Base):
    """Append-only record of every lock transition."""

    __tablename__ = "lock_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lock_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("locks.id"), index=True)
    at: Mapped[Timestamp]
    actor: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)


class LoginFailureCounter(Base):
    """Per-account brute-force counters (see ``security.locks.bruteforce.FailureState``)."""

    __tablename__ = "login_failure_counters"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[Timestamp | None]
    temporary_locks: Mapped[int] = mapped_column(Integer, default=0)
    last_lock_at: Mapped[Timestamp | None]
    updated_at: Mapped[Timestamp]
