"""Request and response bodies of the password-reset and TOTP API (field names from DESIGN.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_CODE_CHARS = 16
"""A TOTP code with the spaces users type (e.g. "123 456")."""
MAX_RECOVERY_CODE_CHARS = 64
MAX_TOKEN_CHARS = 256
RESET_ACCEPTED_DETAIL = (
    "If the identifier belongs to an account, a reset link has been sent to its registered contact."
)


class Strict(BaseModel):
    # Secrets are not stripped: what was typed is what is checked.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ResetRequestIn(Strict):
    identifier: str = Field(
        min_length=1, max_length=320, description="Account id, e-mail address or E.164 phone number",
        examples=["ana@example.com"],
    )


class ResetAcceptedOut(BaseModel):
    """Always the same body, whether or not the identifier names an account."""

    status: Literal["accepted"] = "accepted"
    detail: str = RESET_ACCEPTED_DETAIL


class SecondFactorIn(Strict):
    """At most one of the two codes (a TOTP code, or one of the recovery codes)."""

    totp_code: str | None = Field(default=None, min_length=1, max_length=MAX_CODE_CHARS, examples=["123456"])
    recovery_code: str | None = Field(
        default=None, min_length=1, max_length=MAX_RECOVERY_CODE_CHARS, examples=["7k3m-q9zx-2hcw-a4rt"]
    )

    @model_validator(mode="after")
    def _at_most_one_code(self) -> SecondFactorIn:
        if self.totp_code is not None and self.recovery_code is not None:
            raise ValueError("give either totp_code or recovery_code, not both")
        return self


class RequiredSecondFactorIn(SecondFactorIn):
    """Exactly one of the two codes."""

    @model_validator(mode="after")
    def _one_code(self) -> RequiredSecondFactorIn:
        if self.totp_code is None and self.recovery_code is None:
            raise ValueError("give totp_code or recovery_code")
        return self


class ResetConfirmIn(SecondFactorIn):
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="The token from the reset message")
    new_password: str = Field(min_length=1, max_length=4096, description="8-128 characters (12+ recommended)")


class TotpEnrollmentOut(BaseModel):
    secret: str = Field(description="Base32 secret for manual entry")
    otpauth_uri: str = Field(description="otpauth://totp/... provisioning URI")
    qr_svg: str = Field(description="The URI as an SVG QR code")


class TotpConfirmIn(Strict):
    code: str = Field(min_length=1, max_length=MAX_CODE_CHARS, examples=["123456"])


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="Single-use codes; shown only this once")
