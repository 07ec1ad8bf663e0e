"""Webhook event types, their payload schemas and the envelope every webhook body uses.

Body of every webhook (Standard Webhooks payload structure)::

    {"id": "msg_...", "type": "account.locked", "timestamp": "2026-11-25T01:02:03.456789Z",
     "data": {...schema of the event type...}}

``id`` equals the ``webhook-id`` header and stays the same across retries: receivers deduplicate on
it. ``timestamp`` is when the event happened (the outbox row was written), not when this attempt was
made (that is the ``webhook-timestamp`` header).

The schemas below are the contract with the wallet backend: documented in ``docs/webhooks.md`` and
published under ``webhooks`` in ``/openapi.json``. They allow extra fields, so adding a field is
backward compatible; removing or renaming one is not.

Pure module: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

COMPONENT_PREFIX = "Webhook"


class WebhookEvent(StrEnum):
    """Event types announced to the wallet backend (the slices emitting them use these values)."""

    ACCOUNT_LOCKED = "account.locked"
    ACCOUNT_RESTRICTED = "account.restricted"
    ACCOUNT_UNLOCKED = "account.unlocked"
    TRANSACTION_BLOCKED = "transaction.blocked"
    LOGIN_NEW_DEVICE = "login.new_device"
    PASSWORD_RESET_REQUESTED = "password.reset_requested"  # noqa: S105 - an event name
    PASSWORD_CHANGED = "password.changed"  # noqa: S105 - an event name
    MFA_ENABLED = "mfa.enabled"
    MFA_DISABLED = "mfa.disabled"
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    MFA_RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"
    APPEAL_DECIDED = "appeal.decided"
    OPERATOR_ALERT = "operator.alert"


class _Open(BaseModel):
    # Extra fields are allowed: adding one is backward compatible for receivers.
    model_config = ConfigDict(extra="allow")


class _Payload(_Open):
    account_id: str = Field(description="The wallet's account id.")


class Reason(_Open):
    """One human-readable reason behind a decision."""

    rule: str = Field(description="Rule or reason code, e.g. `login:velocity:account`.")
    detail: str | None = Field(default=None, description="Explanation for humans.")
    points: int | None = Field(default=None, description="Risk points the rule contributed, if any.")


class AccountLocked(_Payload):
    """The account is locked: deny logins and outgoing transactions until `account.unlocked`."""

    lock_id: str = Field(description="Lock id.")
    reference: str | None = Field(default=None, description="Case reference shown to the user.")
    kind: Literal["brute_force", "risk", "operator", "user_reported"]
    status: str | None = Field(default=None, description="Status of the lock (e.g. `active`).")
    reasons: list[Reason] = Field(default_factory=list)
    expires_at: datetime | None = Field(default=None, description="End of a temporary lock, else null.")
    required_actions: list[str] = Field(
        default_factory=list, description="Actions before release, e.g. `reset_password`, `enroll_totp`."
    )
    locked_at: datetime | None = None


class AccountRestricted(_Payload):
    """Logins allowed, outgoing transactions must be held."""

    reasons: list[Reason] = Field(default_factory=list)
    restricted_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="When the restriction lifts itself "
                                        "(`account.unlocked` with `restriction_expired`); null: until lifted by hand.")


class AccountUnlocked(_Payload):
    """A lock or restriction was released; `status` is the account's status now."""

    lock_id: str | None = None
    reference: str | None = None
    resolution: str | None = Field(
        default=None, description="e.g. `expired`, `restriction_lifted`, `restriction_expired`, ..."
    )
    status: Literal["active", "restricted", "locked"]
    unlocked_at: datetime | None = None


class Destination(_Open):
    """Where a transaction sends money."""

    address: str
    country: str | None = None
    label: str | None = None


class Risk(_Open):
    """The assessment's score and band."""

    score: int = Field(ge=0, le=100)
    band: str


class TransactionBlocked(_Payload):
    """A transaction event was assessed `block`: do not execute it."""

    event_id: str = Field(description="The backend's idempotency key of the transaction event.")
    amount: str = Field(description="Decimal string, as sent.")
    currency: str
    destination: Destination
    risk: Risk
    reasons: list[Reason] = Field(default_factory=list)


class LoginNewDevice(_Payload):
    """A successful login from a device never seen for this account."""

    device_id: str | None = None
    ip: str | None = None
    country: str | None = None
    user_agent: str | None = None
    occurred_at: datetime


class PasswordResetRequested(_Payload):
    """A reset token was sent to the user (`channel` = `email`, `sms` or `none`)."""

    channel: str
    expires_at: datetime


class PasswordChanged(_Payload):
    """The password was set or reset."""

    changed_at: datetime | None = None
    reason: str | None = Field(default=None, description="Why, e.g. `set`, `reset`.")


class MfaChanged(_Payload):
    """A second factor was enabled or disabled."""

    method: Literal["totp"] = "totp"
    enabled_at: datetime | None = None
    disabled_at: datetime | None = None


class RecoveryCodeUsed(_Payload):
    """A single-use recovery code was consumed."""

    remaining: int = Field(ge=0, description="Recovery codes left.")
    used_at: datetime | None = None


class RecoveryCodesRegenerated(_Payload):
    """A fresh set of recovery codes replaced the old one."""

    regenerated_at: datetime | None = None


class AppealDecided(_Payload):
    """An operator decided an appeal."""

    appeal_id: str
    lock_id: str | None = None
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(default=None, description="The reason shown to the user.")
    automatic: bool | None = Field(default=None, description="Decided by policy, without an operator.")
    required_actions: list[str] = Field(
        default_factory=list, description="Still to do before release, e.g. `reset_password`."
    )
    decided_at: datetime | None = None


class OperatorAlert(_Open):
    """Not about one account: e.g. the automatic-lock guard tripped and locks fall back to review."""

    alert: str = Field(description="Alert kind.")
    raised_at: datetime


EVENT_SCHEMAS: Mapping[WebhookEvent, type[BaseModel]] = {
    WebhookEvent.ACCOUNT_LOCKED: AccountLocked,
    WebhookEvent.ACCOUNT_RESTRICTED: AccountRestricted,
    WebhookEvent.ACCOUNT_UNLOCKED: AccountUnlocked,
    WebhookEvent.TRANSACTION_BLOCKED: TransactionBlocked,
    WebhookEvent.LOGIN_NEW_DEVICE: LoginNewDevice,
    WebhookEvent.PASSWORD_RESET_REQUESTED: PasswordResetRequested,
    WebhookEvent.PASSWORD_CHANGED: PasswordChanged,
    WebhookEvent.MFA_ENABLED: MfaChanged,
    WebhookEvent.MFA_DISABLED: MfaChanged,
    WebhookEvent.MFA_RECOVERY_CODE_USED: RecoveryCodeUsed,
    WebhookEvent.MFA_RECOVERY_CODES_REGENERATED: RecoveryCodesRegenerated,
    WebhookEvent.APPEAL_DECIDED: AppealDecided,
    WebhookEvent.OPERATOR_ALERT: OperatorAlert,
}


def schema_problems(event_type: str, data: Mapping[str, Any]) -> list[str]:
    """Why ``data`` does not match the documented payload of ``event_type`` (empty list: it does).

    The dispatcher logs these as warnings and still sends: the receiver ignores unknown fields, and a
    missing field is better reported than a security event withheld.
    """
    try:
        model = EVENT_SCHEMAS[WebhookEvent(event_type)]
    except ValueError:
        return [f"undocumented event type {event_type!r}"]
    try:
        model.model_validate(dict(data))
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return []


def envelope_body(msg_id: str, envelope: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: ``{"id", "type", "timestamp", "data"}`` as compact JSON.

    ``envelope`` is what the outbox stored (``type``, ``timestamp``, ``data``); ``id`` is the message's
    ``webhook-id`` so a receiver can deduplicate on the body alone.
    """
    document = {
        "id": msg_id,
        "type": envelope["type"],
        "timestamp": envelope["timestamp"],
        "data": dict(envelope.get("data") or {}),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def webhook_schemas(
    components_path: str = "#/components/schemas/",
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """JSON Schemas for ``/openapi.json``: (envelope per event type, shared component schemas).

    Payload models become components named ``Webhook<Model>`` (the prefix keeps them apart from
    the request/response schemas of the API); each envelope references its payload component.
    """
    ref_template = components_path + COMPONENT_PREFIX + "{model}"
    models = sorted(set(EVENT_SCHEMAS.values()), key=lambda m: m.__name__)
    refs, top = models_json_schema([(model, "validation") for model in models], ref_template=ref_template)
    components = {COMPONENT_PREFIX + name: schema for name, schema in top.get("$defs", {}).items()}
    envelopes: dict[str, dict[str, Any]] = {}
    for event, model in EVENT_SCHEMAS.items():
        envelopes[event.value] = {
            "type": "object",
            "required": ["id", "type", "timestamp", "data"],
            "properties": {
                "id": {"type": "string", "description": "Same as the webhook-id header; the dedup key."},
                "type": {"type": "string", "enum": [event.value]},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": refs[(model, "validation")],
            },
        }
    return envelopes, components
