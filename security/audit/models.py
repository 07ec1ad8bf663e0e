"""Append-only, hash-chained audit log."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import JSONDict, Timestamp

# SQLite only auto-assigns INTEGER PRIMARY KEY; BigInteger elsewhere.
BigIntPk = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(Base):
    """One state change. ``hash`` covers every field and ``prev_hash``, chaining each entry to the one before."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_subject", "subject_type", "subject_id"),)

    seq: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=False)
    at: Mapped[Timestamp]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128))
    data: Mapped[JSONDict]
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The single row naming the chain's last entry: appending locks it, so the chain never forks,
    and deleting the newest entries is detected because the head still names them."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
