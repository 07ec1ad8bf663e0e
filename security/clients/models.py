"""Service clients (the wallet backend and its tools) and their hashed API keys."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import JSONList, Timestamp, UUIDPk


class ServiceClient(Base):
    __tablename__ = "service_clients"

    id: Mapped[UUIDPk]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Public part of the key, used to find the row; the whole key is only stored as a SHA-256 hash.
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[JSONList]
    created_at: Mapped[Timestamp]
    revoked_at: Mapped[Timestamp | None]
