"""Request and response bodies of the operator JSON API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from security.operators.models import Operator
from security.operators.policy import permissions_for

MAX_PASSWORD_CHARS = 1024
"""Bounds the argon2 input; the password policy's own maximum is lower."""


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No NUL characters anywhere (PostgreSQL text cannot hold them: a 422, never a 500).
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$", examples=["alice"])
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS, pattern=r"^[^\x00]+$")
    totp_code: str = Field(min_length=1, max_length=16, pattern=r"^[^\x00]+$", examples=["123456"])


class OperatorOut(BaseModel):
    id: uuid.UUID
    name: str
    role: str
    permissions: list[str]
    disabled: bool

    @classmethod
    def of(cls, operator: Operator) -> OperatorOut:
        return cls(
            id=operator.id,
            name=operator.name,
            role=operator.role,
            permissions=sorted(permissions_for(operator.role)),
            disabled=operator.disabled_at is not None,
        )


class TokenOut(BaseModel):
    token: str = Field(description="Bearer token for /v1/review/...; shown once, stored only hashed")
    token_type: str = "bearer"
    expires_at: datetime
    operator: OperatorOut


class OperatorList(BaseModel):
    operators: list[OperatorOut]
