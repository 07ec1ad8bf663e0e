"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164
COUNTRY_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AccountIn(Strict):
    """The full security profile. PUT replaces it: an omitted field is cleared."""

    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN, examples=["ana@example.com"])
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, examples=["+4915112345678"])
    home_country: str | None = Field(default=None, pattern=COUNTRY_PATTERN, examples=["DE"])
    identity_document: str | None = Field(
        default=None, min_length=4, max_length=64, description="Kept only as a keyed HMAC", examples=["C01X00T47"]
    )

    @field_validator("identity_document")
    @classmethod
    def _has_alphanumerics(cls, value: str | None) -> str | None:
        if value is not None and sum(ch.isalnum() for ch in value) < 4:
            raise ValueError("must contain at least 4 letters or digits")
        return value


class AccountOut(BaseModel):
    account_id: str
    email: str | None
    phone: str | None
    home_country: str | None
    identity_document_on_file: bool
    has_password: bool
    status: str
    created_at: datetime
    updated_at: datetime


class PasswordIn(Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    password: str = Field(min_length=1, max_length=4096, description="8-128 characters (12+ recommended)")
