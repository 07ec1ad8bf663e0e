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
    assert "account_id" in components[ref.rsplit("/", 1)[1]]["required"]
