"""Accounts' security profiles."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import Timestamp


class AccountStatus(StrEnum):
    ACTIVE = "active"
    RESTRICTED = "restricted"  # login allowed, outgoing transactions held
    LOCKED = "locked"  # login and transactions denied


class Account(Base):
    __tablename__ = "accounts"

    # The wallet's own account identifier.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    # Lower-cased e-mail for identifier look-ups; unique so "reset by e-mail" names one account.
    email_normalized: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    home_country: Mapped[str | None] = mapped_column(String(2))
    # Keyed HMAC of the normalised identity-document number; the number itself is never stored.
    identity_document_hmac: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.ACTIVE)
    password_hash: Mapped[str | None] = mapped_column(Text)
    password_changed_at: Mapped[Timestamp | None]
    # When a restriction placed with an expiry lifts itself (``LockService.expire_due``); None otherwise.
    restricted_until: Mapped[Timestamp | None]
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    # Optimistic concurrency: a concurrent change to the same account fails with StaleDataError -> 409.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        # Expiry sweep: restrictions due to lift.
        Index("ix_accounts_restricted_until", "restricted_until"),
    )
