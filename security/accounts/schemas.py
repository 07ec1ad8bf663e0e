"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Control characters (C0, DEL, C1) are spelled out rather than left to ``\s``: Python, Rust (pydantic) and
# ECMA regexes disagree on which of them are whitespace, and none of them belongs in an address.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL_PATTERN = rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}{{2,}}$"
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164
COUNTRY_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2
# Document numbers are ASCII letters and digits (ICAO 9303); spaces, dashes etc. are tolerated and dropped
# by normalisation. A pattern, not a validator, so that the OpenAPI document states the whole rule.
DOCUMENT_PATTERN = r"^(?:[^A-Za-z0-9\x00]*[A-Za-z0-9]){4}[^\x00]*$"


class Strict(BaseModel):
    # Values are taken as sent: each field's pattern is checked against exactly what the document states.
    model_config = ConfigDict(extra="forbid")


class AccountIn(Strict):
    """The full security profile. PUT replaces it: an omitted field is cleared."""

    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN, examples=["ana@example.com"])
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN, examples=["+4915112345678"])
    home_country: str | None = Field(default=None, pattern=COUNTRY_PATTERN, examples=["DE"])
    identity_document: str | None = Field(
        default=None,
        min_length=4,
        max_length=64,
        pattern=DOCUMENT_PATTERN,
        description="At least 4 ASCII letters or digits (separators allowed); kept only as a keyed HMAC",
        examples=["C01X00T47"],
    )


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
    password: str = Field(min_length=1, max_length=4096, description="8-128 characters (12+ recommended)")
