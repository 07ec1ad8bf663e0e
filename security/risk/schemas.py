"""Request and response models of the login check and event ingestion (validated and in /openapi.json)."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from security.types import ACCOUNT_ID_PATTERN
from security.web.openapi import AnyJson, Trimmed

#: Decimal strings only: amounts are never floats. Up to 20 integer and 18 fractional digits.
DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$"
MAX_BATCH = 500

AccountIdField = Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN)]
EventIdField = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
CountryField = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")]
DecimalString = Annotated[str, Field(pattern=DECIMAL_PATTERN, examples=["125.50"])]
#: The same, greater than zero (the look-ahead refuses 0, 0.0, 00.000 ...): the rule of ``_positive``
#: stated in /openapi.json. Look-ahead needs Python's regex engine (see TransactionEventIn).
POSITIVE_DECIMAL_PATTERN = r"^(?!0(\.0+)?$)(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$"
PositiveDecimalString = Annotated[str, Field(pattern=POSITIVE_DECIMAL_PATTERN, examples=["125.50"])]
IP_FORMATS: dict[str, Any] = {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
#: Event times are years 1900-2999 (written in the sender's own offset): anything else is a client bug,
#: and year 1 or 9999 with an offset would not even convert to UTC. The pattern states it in /openapi.json.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999
EVENT_TIME_PATTERN = r"^(19|2[0-9])[0-9]{2}-"


def _plausible_year(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"the year must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


EventTime = Annotated[
    AwareDatetime, AfterValidator(_plausible_year), Field(json_schema_extra={"pattern": EVENT_TIME_PATTERN})
]


class _In(BaseModel):
    # Values are taken as sent: a field with a pattern is checked against exactly what the document states;
    # free text is Trimmed (``openapi.Trimmed``).
    model_config = ConfigDict(extra="forbid")


class ContextIn(_In):
    """Where the event came from."""

    # The lat/lon rule of ``_both_coordinates``, stated in /openapi.json (null counts as absent).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}, "required": ["lat", "lon"]},
        {"properties": {"lat": {"type": "null"}, "lon": {"type": "null"}}},
    ]})

    # The formats state in /openapi.json what the validator below enforces.
    ip: Annotated[str, Field(max_length=45, json_schema_extra=IP_FORMATS)] | None = None
    device_id: Annotated[str, Trimmed(128, min_length=1)] | None = None
    user_agent: Annotated[str, Trimmed(1024)] | None = None
    country: CountryField | None = None
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None
    asn: Annotated[str | None, Field(max_length=16, pattern=r"^(AS|as)?[0-9]{1,10}$")] = None
    occurred_at: EventTime | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("not an IPv4 or IPv6 address") from None

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _both_coordinates(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together")
        return self


class LoginCheckIn(_In):
    """``POST /v1/logins``: verify the credentials and score the attempt."""

    account_id: AccountIdField
    # Taken exactly as typed: " pw " is not "pw", as when it was set.
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    totp_code: Annotated[str, Trimmed(16)] | None = None
    recovery_code: Annotated[str, Trimmed(64)] | None = None
    context: ContextIn = ContextIn()


class LoginEventIn(_In):
    """``POST /v1/events/login``: a login the backend authenticated itself (SSO, passkey)."""

    event_id: EventIdField
    account_id: AccountIdField
    occurred_at: EventTime
    outcome: Literal["success", "failure"]
    method: Annotated[str, Trimmed(32)] | None = None
    context: ContextIn = ContextIn()


class DestinationIn(_In):
    """Where the money goes."""

    address: Annotated[str, Trimmed(128, min_length=1)]
    country: CountryField | None = None
    label: Annotated[str, Trimmed(128)] | None = None

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class TransactionEventIn(_In):
    """``POST /v1/events/transaction``: an outgoing transaction to assess before it executes."""

    model_config = ConfigDict(regex_engine="python-re")

    event_id: EventIdField
    account_id: AccountIdField
    amount: PositiveDecimalString
    currency: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{2,12}$")]
    destination: DestinationIn
    occurred_at: EventTime
    balance_before: DecimalString | None = None
    context: ContextIn = ContextIn()

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: str) -> str:
        if Decimal(value) <= 0:
            raise ValueError("the amount must be greater than zero")
        return value

    @field_validator("currency")
    @classmethod
    def _currency_upper(cls, value: str) -> str:
        return value.upper()


class ChangeKind(StrEnum):
    """Account changes the backend reports."""

    EMAIL = "email"
    PHONE = "phone"
    PASSWORD = "password"  # noqa: S105 - a label, not a secret
    MFA_ENABLED = "mfa_enabled"
    MFA_DISABLED = "mfa_disabled"
    DEVICE_ADDED = "device_added"


class AccountChangeEventIn(_In):
    """``POST /v1/events/account-change``."""

    event_id: EventIdField
    account_id: AccountIdField
    change: ChangeKind
    occurred_at: EventTime
    context: ContextIn = ContextIn()


class BatchIn(BaseModel):
    """``POST /v1/events:batch``: items are validated one by one so one bad item fails alone."""

    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[AnyJson], Field(min_length=1, max_length=MAX_BATCH)]


class RiskOut(BaseModel):
    score: int
    band: str


class ReasonOut(BaseModel):
    rule: str
    points: int
    detail: str


class AccountStateOut(BaseModel):
    status: str


class LockOut(BaseModel):
    reference: str
    kind: str
    expires_at: datetime | None


class DecisionOut(BaseModel):
    """Every answer: decision, risk, reasons, the account's status (and its lock, if any)."""

    decision: str
    risk: RiskOut
    reasons: list[ReasonOut]
    account: AccountStateOut
    lock: LockOut | None = None
    assessment_id: str | None = None


class EventDecisionOut(DecisionOut):
    event_id: str


class BatchError(BaseModel):
    status: int
    code: str
    detail: str
    errors: list[dict[str, Any]] | None = None


class BatchItemOut(BaseModel):
    index: int
    event_id: str | None
    type: str | None
    ok: bool
    result: EventDecisionOut | None = None
    error: BatchError | None = None


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemOut]
