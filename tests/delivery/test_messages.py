"""Plain-text templates per message kind."""

from __future__ import annotations

import pytest

from security.delivery.messages import (
    KIND_SPECS,
    LINK_REMOVED,
    MAX_UNTRUSTED_CHARS,
    REDACTED,
    MessageChannel,
    MessageKind,
    MessageTemplateError,
    flatten_untrusted,
    prepare_context,
    redact,
    render,
)

CONTEXTS = {
    MessageKind.CONTACT_CODE: {"code": "493027", "expires_minutes": 10, "case_reference": "LCK-7"},
    MessageKind.PASSWORD_RESET: {
        "reset_url": "https://wallet.example/reset?token=s3cr3t-token-value",
        "expires_minutes": 30,
    },
    MessageKind.LOCK_NOTICE: {
        "case_reference": "LCK-7",
        "reason": "Unusual withdrawal after an e-mail change",
        "appeal_url": "https://wallet.example/appeal",
    },
    MessageKind.APPEAL_DECISION: {
        "case_reference": "LCK-7",
        "decision": "rejected",
        "note": "Documents mismatch",
    },
    MessageKind.NEW_DEVICE_LOGIN: {
        "occurred_at": "2026-11-25 02:00 UTC",
        "device": "Firefox on Linux",
        "location": "Germany",
        "freeze_url": "https://wallet.example/freeze",
    },
}


def test_every_kind_has_a_spec_and_a_test_context() -> None:
    assert set(KIND_SPECS) == set(MessageKind) == set(CONTEXTS)


@pytest.mark.parametrize("kind", list(MessageKind))
@pytest.mark.parametrize("channel", list(MessageChannel))
def test_every_kind_renders_with_every_required_value(kind: MessageKind, channel: MessageChannel) -> None:
    message = render(kind, channel, CONTEXTS[kind])
    assert message.kind is kind
    for name in KIND_SPECS[kind].required:
        # SMS texts are short; the e-mail must carry every required field.
        if channel is MessageChannel.EMAIL or name in {"code", "reset_url", "case_reference"}:
            assert str(CONTEXTS[kind][name]) in message.text
    if channel is MessageChannel.EMAIL:
        assert message.subject
        assert "\n" not in message.subject
        assert "{{" not in message.text
        assert message.text.endswith("\n")
    else:
        assert message.subject == ""
        assert len(message.text) <= 160  # one SMS segment


@pytest.mark.parametrize("kind", list(MessageKind))
def test_missing_required_field_is_an_error(kind: MessageKind) -> None:
    for name in KIND_SPECS[kind].required:
        context = {k: v for k, v in CONTEXTS[kind].items() if k != name}
        with pytest.raises(MessageTemplateError, match=name):
            render(kind, MessageChannel.EMAIL, context)


def test_unknown_kind_or_channel_is_an_error() -> None:
    with pytest.raises(MessageTemplateError):
        render("birthday_greeting", "email", {})
    with pytest.raises(MessageTemplateError):
        render(MessageKind.CONTACT_CODE, "carrier_pigeon", CONTEXTS[MessageKind.CONTACT_CODE])


def test_contact_code_marks_the_code_sensitive_and_redacts_it() -> None:
    message = render(MessageKind.CONTACT_CODE, "email", CONTEXTS[MessageKind.CONTACT_CODE])
    assert message.sensitive == ("493027",)
    assert "493027" in message.text
    assert "493027" not in message.redacted_text()
    assert REDACTED in message.redacted_text()
    assert "LCK-7" in message.redacted_text()  # case references are not secrets


def test_reset_link_is_sensitive() -> None:
    message = render(MessageKind.PASSWORD_RESET, "sms", CONTEXTS[MessageKind.PASSWORD_RESET])
    assert "s3cr3t-token-value" not in message.redacted_text()
    assert "30 min" in message.redacted_text()


def test_optional_sentences_appear_only_when_given() -> None:
    without = render(MessageKind.CONTACT_CODE, "email", {"code": "1", "expires_minutes": 5})
    assert "case" not in without.text
    with_expiry = render(MessageKind.LOCK_NOTICE, "email", {**CONTEXTS[MessageKind.LOCK_NOTICE], "expires_at": "03:00"})
    assert "ends automatically at 03:00" in with_expiry.text
    assert "ends automatically" not in render(MessageKind.LOCK_NOTICE, "email", CONTEXTS[MessageKind.LOCK_NOTICE]).text


def test_appeal_decision_wording_follows_the_decision() -> None:
    approved = render(
        MessageKind.APPEAL_DECISION,
        "email",
        {"case_reference": "LCK-7", "decision": "approved", "next_steps": "reset your password"},
    )
    rejected = render(MessageKind.APPEAL_DECISION, "email", CONTEXTS[MessageKind.APPEAL_DECISION])
    assert "has been approved" in approved.text
    assert "reset your password" in approved.text
    assert "rejected" not in approved.text
    assert "has been rejected" in rejected.text
    assert "Documents mismatch" in rejected.text


def test_redact_replaces_longest_secret_first_and_ignores_empty() -> None:
    assert redact("abc abcdef", ("abc", "abcdef", "")) == f"{REDACTED} {REDACTED}"


def test_prepare_context_builds_links_resolves_aliases_and_keeps_sender_values() -> None:
    values = prepare_context(
        {"account_id": "acc_1", "ttl_minutes": 30}, {"token": "a/b+c"}, base_url="https://wallet.example/"
    )
    assert values["expires_minutes"] == 30
    # URL-encoded, in the fragment (never sent to a server), base URL without a double slash.
    assert values["reset_url"] == "https://wallet.example/reset-password#token=a%2Fb%2Bc"
    assert values["appeal_url"] == "https://wallet.example/appeal"
    without_token = prepare_context({}, {}, base_url="https://w")
    assert "reset_url" not in without_token
    own = prepare_context({"freeze_url": "https://elsewhere/f"}, {}, base_url="https://w")
    assert own["freeze_url"] == "https://elsewhere/f"
    custom = prepare_context({}, {"token": "t"}, links={"reset_url": "{base_url}/r/{token}"}, base_url="https://w")
    assert custom["reset_url"] == "https://w/r/t"


def test_password_reset_as_the_credentials_slice_queues_it() -> None:
    # security/credentials: template "password_reset", context {account_id, expires_at, ttl_minutes},
    # sealed secret {"token": ...}.
    context = {"account_id": "acc_1", "expires_at": "2026-03-02T09:30:00+00:00", "ttl_minutes": 30}
    values = prepare_context(context, {"token": "Zx9-secret-token"}, base_url="https://wallet.example")
    for channel in MessageChannel:
        message = render(MessageKind.PASSWORD_RESET, channel, values)
        assert "https://wallet.example/reset-password#token=Zx9-secret-token" in message.text
        assert "30 min" in message.text
        assert "Zx9-secret-token" not in message.redacted_text()


CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def test_attacker_controlled_device_names_cannot_carry_links_or_extra_lines() -> None:
    # The "device" of a new-device mail is the user agent of whoever logged in.
    hostile = "Firefox\n\nURGENT: your wallet is at risk, verify at https://evil.example/login or evil-wallet.com/x"
    message = render(
        MessageKind.NEW_DEVICE_LOGIN, "email", {**CONTEXTS[MessageKind.NEW_DEVICE_LOGIN], "device": hostile}
    )
    device_line = next(line for line in message.text.splitlines() if line.startswith("Device:"))
    assert "evil" not in message.text
    assert device_line.startswith(f"Device: Firefox URGENT: your wallet is at risk, verify at {LINK_REMOVED}")
    assert len(device_line) <= len("Device: ") + MAX_UNTRUSTED_CHARS
    assert "https://wallet.example/freeze" in message.text  # our own link is untouched


def test_ordinary_user_agents_survive_flattening() -> None:
    assert flatten_untrusted("Firefox on Linux") == "Firefox on Linux"
    flat = flatten_untrusted(CHROME_UA)
    assert LINK_REMOVED not in flat
    assert flat.startswith("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36")
    assert len(flat) == MAX_UNTRUSTED_CHARS
    assert flat.endswith("\u2026")
