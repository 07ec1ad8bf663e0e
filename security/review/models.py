"""Who is working on which case. A lock or an appeal can be claimed by one operator at a time."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import Timestamp, UUIDPk


class CaseClaim(Base):
    """One operator's claim on an open case: a lock or an appeal (exactly one of ``lock_id`` and
    ``appeal_id``). Each is unique: two simultaneous claims of one case give one winner.
    """

    __tablename__ = "review_claims"

    id: Mapped[UUIDPk]
    lock_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("locks.id"), unique=True)
    appeal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("appeals.id"), unique=True)
    operator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    claimed_at: Mapped[Timestamp]

    __table_args__ = (
        CheckConstraint("(lock_id IS NULL) <> (appeal_id IS NULL)", name="one_case"),
    )
