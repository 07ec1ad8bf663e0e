"""Who is working on which case. A lock (and later an appeal) can be claimed by one operator at a time."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import Timestamp, UUIDPk


class CaseClaim(Base):
    """One operator's claim on an open lock. ``lock_id`` is unique: two simultaneous claims give one winner.

    Appeals will add their own nullable, unique ``appeal_id`` column the same way.
    """

    __tablename__ = "review_claims"

    id: Mapped[UUIDPk]
    lock_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), ForeignKey("locks.id"), unique=True)
    operator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    claimed_at: Mapped[Timestamp]
