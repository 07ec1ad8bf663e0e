"""Operators and their sessions (console cookies and API bearer tokens), stored hashed."""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from security.db import Base
from security.types import Timestamp, UUIDPk


class SessionKind(StrEnum):
    CONSOLE = "console"  # cookie; idle + absolute timeout; carries a CSRF token
    API = "api"  # bearer token for /v1/review/...; fixed lifetime


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[UUIDPk]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    # The TOTP secret sealed with the SecretBox (never stored in the clear).
    totp_secret_sealed: Mapped[str] = mapped_column(Text)
    # Highest TOTP time step accepted so far: a code for this step or an earlier one is a replay.
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[Timestamp | None]
    disabled_at: Mapped[Timestamp | None]
    created_at: Mapped[Timestamp]
    # Optimistic concurrency: two simultaneous sign-ins cannot both consume the same TOTP step.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class OperatorSession(Base):
    """A signed-in console session or an API token. Only the SHA-256 of the 256-bit token is kept."""

    __tablename__ = "operator_sessions"

    id: Mapped[UUIDPk]
    operator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Synchronizer CSRF token of a console session (compared with every form post); None for API tokens.
    csrf_token: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    last_seen_at: Mapped[Timestamp]
    # Hard end of the session (absolute timeout / token lifetime).
    expires_at: Mapped[Timestamp]
    revoked_at: Mapped[Timestamp | None]
