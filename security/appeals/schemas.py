"""Request and response bodies of the appeal and freeze API."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonValue

from security.appeals.policy import VerificationMethod

#: Longest statement or message accepted (a letter, not a document dump).
MAX_TEXT = 4000
#: Identifiers are account ids, e-mail addresses or E.164 phone numbers.
MAX_IDENTIFIER = 320
MAX_CODE = 32
MAX_PASSWORD = 1024
MAX_DOCUMENT = 64
#: Amounts: a decimal string like the events API ("123.45"), positive, at most 18 integer digits.
AMOUNT_PATTERN = r"^[0-9]{1,18}(\.[0-9]{1,18})?$"


# Identifiers are taken as sent: the account lookup trims them itself, and a blank one is simply unknown
# (202 like any other), not a 422 for a body the document calls valid.
UNSTRIPPED = StringConstraints(strip_whitespace=False)


class Strict(BaseModel):
    # No whitespace stripping: the document's minLength/pattern then mean exactly what is enforced
    # (identifiers are trimmed where they are looked up).
    model_config = ConfigDict(extra="forbid")


class AppealIn(Strict):
    identifier: Annotated[str, UNSTRIPPED] = Field(
        min_length=1, max_length=MAX_IDENTIFIER, description="Account id, e-mail or phone"
    )
    statement: str = Field(min_length=1, max_length=MAX_TEXT, description="What happened, in the user's words")


class AppealCreatedOut(BaseModel):
    appeal_id: uuid.UUID
    appeal_token: str = Field(description="Send as 'Authorization: Bearer <appeal_token>'. Shown only once.")


_METHOD_FIELDS = ("code", "amount", "date", "document")
_NEEDS: dict[VerificationMethod, set[str]] = {
    VerificationMethod.CONTACT_CODE: {"code"},
    VerificationMethod.TOTP: {"code"},
    VerificationMethod.RECOVERY_CODE: {"code"},
    VerificationMethod.RECENT_TRANSACTION: {"amount", "date"},
    VerificationMethod.IDENTITY_DOCUMENT: {"document"},
}


def _method_field_schemas() -> list[JsonValue]:
    """One alternative per method: its fields present and not null, every other field absent or null."""
    return [
        {
            "properties": {
                "method": {"const": str(method)},
                **{name: {"not": {"type": "null"}} if name in wanted else {"type": "null"} for name in _METHOD_FIELDS},
            },
            "required": ["method", *sorted(wanted)],
        }
        for method, wanted in _NEEDS.items()
    ]


class VerificationIn(Strict):
    """One verification step. Fields by method: `contact_code`, `totp`, `recovery_code` -> `code`;
    `recent_transaction` -> `amount` + `date` (UTC calendar day); `identity_document` -> `document`."""

    # The field rule of ``_fields_match_method``, stated in /openapi.json (a null counts as absent).
    model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(anyOf=_method_field_schemas()))

    method: VerificationMethod
    code: str | None = Field(default=None, min_length=1, max_length=MAX_CODE)
    amount: str | None = Field(default=None, pattern=AMOUNT_PATTERN, examples=["120.50"])
    date: dt.date | None = None
    document: str | None = Field(default=None, min_length=1, max_length=MAX_DOCUMENT)

    @model_validator(mode="after")
    def _fields_match_method(self) -> Self:
        given = {name for name in _METHOD_FIELDS if getattr(self, name) is not None}
        wanted = _NEEDS[self.method]
        if given != wanted:
            raise ValueError(f"method '{self.method}' takes exactly: {', '.join(sorted(wanted))}")
        return self

    @property
    def decimal_amount(self) -> Decimal | None:
        """The amount as an exact decimal."""
        return Decimal(self.amount) if self.amount is not None else None


class MessageIn(Strict):
    body: str = Field(min_length=1, max_length=MAX_TEXT)


class AppealPasswordIn(Strict):
    """`totp_code` or `recovery_code` is needed when no operator reviewed the appeal and TOTP is enabled."""

    # Passwords are taken exactly as typed (no whitespace stripping). The "at most one code" validator
    # below is stated in /openapi.json (a null counts as absent).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {
        "properties": {"totp_code": {"type": "string"}, "recovery_code": {"type": "string"}},
        "required": ["totp_code", "recovery_code"],
    }})

    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    totp_code: str | None = Field(default=None, min_length=6, max_length=8, pattern=r"^[0-9]+$")
    recovery_code: str | None = Field(default=None, min_length=1, max_length=MAX_CODE)

    @model_validator(mode="after")
    def _at_most_one_code(self) -> Self:
        if self.totp_code is not None and self.recovery_code is not None:
            raise ValueError("give at most one of 'totp_code' and 'recovery_code'")
        return self


class TotpCodeIn(Strict):
    code: str = Field(min_length=6, max_length=8, pattern=r"^[0-9]+$")


class CaseOut(BaseModel):
    reference: str = Field(description="The lock's case reference")
    reason: str = Field(description="Why the account is locked, for the user")
    details: list[str] = Field(description="The specific reasons behind the lock")


class VerificationDoneOut(BaseModel):
    method: str
    verified_at: dt.datetime


class NeededOut(BaseModel):
    next_step: Literal["verify", "review", "actions", "none"]
    verifications: list[list[str]] = Field(description="Each inner list: any one of these methods")
    approvals_required: int | None = None
    approvals_given: int | None = None
    actions: list[str] = Field(description="Required actions left before the lock is released")


class MessageOut(BaseModel):
    author: Literal["user", "operator", "system"]
    body: str
    created_at: dt.datetime


class DecisionOut(BaseModel):
    outcome: Literal["approved", "rejected"]
    reason: str | None
    decided_at: dt.datetime


class AppealOut(BaseModel):
    appeal_id: uuid.UUID
    state: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = Field(description="Until when verification must be completed")
    notice: str | None = Field(description="Shown until the first verification succeeds")
    case: CaseOut | None = Field(description="The lock, once the contact code proved possession")
    verifications: list[VerificationDoneOut]
    needed: NeededOut
    messages: list[MessageOut]
    decision: DecisionOut | None


class TotpEnrollmentOut(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class FreezeCodeIn(Strict):
    identifier: Annotated[str, UNSTRIPPED] = Field(min_length=1, max_length=MAX_IDENTIFIER)


class AcceptedOut(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


# "Exactly one of password and code", stated in /openapi.json (a null counts as absent, as in the validator).
_PROOFS = ("password", "code")
_EXACTLY_ONE_PROOF: dict[str, Any] = {
    "anyOf": [{"properties": {name: {"type": "string"}}, "required": [name]} for name in _PROOFS],
    "not": {"properties": {name: {"type": "string"} for name in _PROOFS}, "required": list(_PROOFS)},
}


class FreezeIn(Strict):
    """Prove possession with exactly one of `password` and `code` (from `POST /v1/freeze/codes`)."""

    # Passwords are taken exactly as typed (no whitespace stripping).
    model_config = ConfigDict(extra="forbid", json_schema_extra=_EXACTLY_ONE_PROOF)

    identifier: Annotated[str, UNSTRIPPED] = Field(min_length=1, max_length=MAX_IDENTIFIER)
    password: str | None = Field(default=None, min_length=1, max_length=MAX_PASSWORD)
    code: str | None = Field(default=None, min_length=1, max_length=MAX_CODE)
    reason: str | None = Field(default=None, max_length=MAX_TEXT)

    @model_validator(mode="after")
    def _one_proof(self) -> Self:
        if (self.password is None) == (self.code is None):
            raise ValueError("give exactly one of 'password' and 'code'")
        return self


class FreezeOut(BaseModel):
    status: Literal["frozen"] = "frozen"
    reference: str = Field(description="Case reference of the lock; use it to appeal later")
