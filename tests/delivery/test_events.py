"""Webhook event vocabulary and payload schemas: code, docs and OpenAPI agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from security.delivery.events import EVENT_SCHEMAS, WebhookEvent, schema_problems, webhook_schemas

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def test_every_event_type_has_a_schema_and_a_row_in_the_docs() -> None:
    assert set(EVENT_SCHEMAS) == set(WebhookEvent)
    doc = DOC.read_text()
    for event in WebhookEvent:
        assert f"`{event.value}`" in doc, f"{event.value} is not documented in docs/webhooks.md"


# The payloads as the slices emit them (security/locks, risk, credentials, accounts, appeals services).
EMITTED = {
    "account.locked": {
        "lock_id": "0b7f5a2c-0000-4000-8000-000000000001",
        "reference": "FG-1",
        "account_id": "acc_1",
        "kind": "brute_force",
        "status": "active",
        "expires_at": "2026-03-02T09:05:00+00:00",
        "required_actions": [],
        "locked_at": "2026-03-02T09:00:00+00:00",
        "reasons": [{"rule": "login:brute_force", "detail": "5 failures in 15 min"}],
    },
    "account.unlocked": {
        "account_id": "acc_1",
        "lock_id": "0b7f",
        "reference": "FG-1",
        "resolution": "expired",
        "unlocked_at": "2026-03-02T09:05:00+00:00",
        "status": "active",
    },
    "account.restricted": {"account_id": "acc_1", "restricted_at": "2026-03-02T09:00:00+00:00", "reasons": [],
                           "expires_at": "2026-03-02T15:00:00+00:00"},
    "transaction.blocked": {
        "account_id": "acc_1",
        "event_id": "tx-1",
        "amount": "950.00",
        "currency": "EUR",
        "destination": {"address": "bc1q...", "country": "DE", "label": None},
        "risk": {"score": 91, "band": "high"},
        "reasons": [{"rule": "tx:amount", "detail": "12x usual"}],
    },
    "login.new_device": {
        "account_id": "acc_1",
        "device_id": "d-1",
        "ip": "203.0.113.9",
        "country": "DE",
        "user_agent": "Firefox",
        "occurred_at": "2026-03-02T09:00:00+00:00",
    },
    "password.reset_requested": {"account_id": "acc_1", "channel": "email", "expires_at": "2026-03-02T09:30:00+00:00"},
    "password.changed": {"account_id": "acc_1", "changed_at": "2026-03-02T09:00:00+00:00", "reason": "reset"},
    "mfa.enabled": {"account_id": "acc_1", "method": "totp", "enabled_at": "2026-03-02T09:00:00+00:00"},
    "mfa.disabled": {"account_id": "acc_1", "method": "totp", "disabled_at": "2026-03-02T09:00:00+00:00"},
    "mfa.recovery_code_used": {"account_id": "acc_1", "used_at": "2026-03-02T09:00:00+00:00", "remaining": 9},
    "mfa.recovery_codes_regenerated": {"account_id": "acc_1", "regenerated_at": "2026-03-02T09:00:00+00:00"},
    "appeal.decided": {
        "account_id": "acc_1",
        "appeal_id": "ap-1",
        "lock_id": None,
        "decision": "approved",
        "reason": None,
        "automatic": True,
        "required_actions": ["reset_password"],
        "decided_at": "2026-03-02T09:00:00+00:00",
    },
    "operator.alert": {"alert": "lock_guard", "raised_at": "2026-03-02T09:00:00+00:00", "locks": 51},
}


def test_the_payloads_the_slices_emit_match_the_documented_schemas() -> None:
    assert set(EMITTED) == {event.value for event in WebhookEvent}
    for event_type, data in EMITTED.items():
        assert schema_problems(event_type, data) == [], event_type


def test_a_documented_payload_has_no_problems() -> None:
    data = {
        "account_id": "acc_1",
        "lock_id": "L-1",
        "kind": "risk",
        "reasons": [{"rule": "tx:amount", "detail": "10x usual", "points": 30}],
        "expires_at": None,
        "required_actions": ["reset_password"],
        "extra_field_for_the_future": True,
    }
    assert schema_problems("account.locked", data) == []


def test_schema_problems_name_the_missing_or_wrong_fields() -> None:
    problems = schema_problems("account.locked", {"account_id": "acc_1", "kind": "bored"})
    assert any(p.startswith("lock_id:") for p in problems)
    assert any(p.startswith("kind:") for p in problems)
    assert schema_problems("mfa.recovery_code_used", {"account_id": "a", "remaining": -1}) == [
        "remaining: Input should be greater than or equal to 0"
    ]


def test_undocumented_event_types_are_reported() -> None:
    assert schema_problems("account.teleported", {"account_id": "a"}) == [
        "undocumented event type 'account.teleported'"
    ]


@pytest.mark.parametrize("event", list(WebhookEvent))
def test_every_envelope_references_an_emitted_component(event: WebhookEvent) -> None:
    envelopes, components = webhook_schemas()
    ref = envelopes[event.value]["properties"]["data"]["$ref"]
    assert ref.startswith("#/components/schemas/Webhook")
    assert ref.rsplit("/", 1)[1] in components
    account_scoped = event is not WebhookEvent.OPERATOR_ALERT
    assert ("account_id" in components[ref.rsplit("/", 1)[1]]["required"]) is account_scoped
