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
    """Event types announced to the wallet backend."""

    ACCOUNT_LOCKED = "account.locked"
    ACCOUNT_RESTRICTED = "account.restricted"
    ACCOUNT_UNLOCKED = "account.unlocked"
    TRANSACTION_BLOCKED = "transaction.blocked"
    TRANSACTION_REVIEW = "transaction.review"
    LOGIN_NEW_DEVICE = "login.new_device"
    PASSWORD_RESET_REQUESTED = "password.reset_requested"  # noqa: S105 - an event name
    PASSWORD_CHANGED = "password.changed"  # noqa: S105 - an event name
    MFA_ENABLED = "mfa.enabled"
    MFA_DISABLED = "mfa.disabled"
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    APPEAL_SUBMITTED = "appeal.submitted"
    APPEAL_DECIDED = "appeal.decided"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")

    account_id: str = Field(description="The wallet's account id.")


class Reason(BaseModel):
    """One human-readable reason behind a decision."""

    model_config = ConfigDict(extra="allow")

    rule: str = Field(description="Rule or reason code, e.g. `login:velocity:account`.")
    detail: str | None = Field(default=None, description="Explanation for humans.")
    points: int | None = Field(default=None, description="Risk points the rule contributed, if any.")


class AccountLocked(_Payload):
    """The account is locked: deny logins and outgoing transactions until `account.unlocked`."""

    lock_id: str = Field(description="Lock id, shown to the user as the case reference.")
    kind: Literal["brute_force", "risk", "operator", "user_reported"]
    reasons: list[Reason] = Field(default_factory=list)
    expires_at: datetime | None = Field(default=None, description="End of a temporary lock, else null.")
    required_actions: list[Literal["reset_password", "enroll_totp"]] = Field(default_factory=list)
    status: Literal["locked"] = "locked"


class AccountRestricted(_Payload):
    """Logins allowed, outgoing transactions must be held."""

    lock_id: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    status: Literal["restricted"] = "restricted"


class AccountUnlocked(_Payload):
    """A lock or restriction was released; `status` is the account's status now."""

    lock_id: str | None = None
    resolution: str | None = Field(default=None, description="e.g. expired, appeal_approved, operator.")
    status: Literal["active", "restricted", "locked"] = "active"


class TransactionAssessed(_Payload):
    """A transaction event was blocked (or sent to review)."""

    event_id: str = Field(description="The backend's idempotency key of the transaction event.")
    decision: Literal["allow", "review", "block"]
    score: int = Field(ge=0, le=100)
    band: str
    reasons: list[Reason] = Field(default_factory=list)


class LoginNewDevice(_Payload):
    """A successful login from a device never seen for this account."""

    device_id: str | None = None
    ip: str | None = None
    country: str | None = None
    user_agent: str | None = None
    occurred_at: datetime


class AccountOnly(_Payload):
    """Only the account id (password reset requested, password changed)."""


class MfaChanged(_Payload):
    """A second factor was enabled or disabled."""

    method: Literal["totp"] = "totp"


class RecoveryCodeUsed(_Payload):
    """A single-use recovery code was consumed."""

    remaining: int = Field(ge=0, description="Recovery codes left.")


class AppealSubmitted(_Payload):
    """An appeal against a lock was opened (only for existing accounts)."""

    appeal_id: str
    lock_id: str | None = None


class AppealDecided(_Payload):
    """An operator decided an appeal."""

    appeal_id: str
    lock_id: str | None = None
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(default=None, description="The reason shown to the user.")


EVENT_SCHEMAS: Mapping[WebhookEvent, type[BaseModel]] = {
    WebhookEvent.ACCOUNT_LOCKED: AccountLocked,
    WebhookEvent.ACCOUNT_RESTRICTED: AccountRestricted,
    WebhookEvent.ACCOUNT_UNLOCKED: AccountUnlocked,
    WebhookEvent.TRANSACTION_BLOCKED: TransactionAssessed,
    WebhookEvent.TRANSACTION_REVIEW: TransactionAssessed,
    WebhookEvent.LOGIN_NEW_DEVICE: LoginNewDevice,
    WebhookEvent.PASSWORD_RESET_REQUESTED: AccountOnly,
    WebhookEvent.PASSWORD_CHANGED: AccountOnly,
    WebhookEvent.MFA_ENABLED: MfaChanged,
    WebhookEvent.MFA_DISABLED: MfaChanged,
    WebhookEvent.MFA_RECOVERY_CODE_USED: RecoveryCodeUsed,
    WebhookEvent.APPEAL_SUBMITTED: AppealSubmitted,
    WebhookEvent.APPEAL_DECIDED: AppealDecided,
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
