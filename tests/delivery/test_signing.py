"""Standard Webhooks signing and verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from security.delivery import signing
from security.delivery.signing import (
    InvalidWebhookSecretError,
    InvalidWebhookTimestampError,
    MissingWebhookHeadersError,
    NoMatchingSignatureError,
    WebhookSecret,
    WebhookTimestampOutsideToleranceError,
    parse_secrets,
    sign,
    signed_headers,
    verify,
    verify_webhook,
)
from security.entropy import SeededEntropy

AT = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)
BODY = b'{"id":"msg_1","type":"account.locked","timestamp":"2026-11-25T03:00:00Z","data":{"account_id":"a1"}}'
SECRET_A = WebhookSecret(bytes(range(32)))
SECRET_B = WebhookSecret(bytes(range(100, 132)))


def independent_signature(secret_b64: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The scheme written out by hand from the spec text, sharing no code with the module."""
    key = base64.b64decode(secret_b64.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id.encode() + b"." + str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_known_answer_vector_from_the_reference_library() -> None:
    # Published test vector of the standard-webhooks reference libraries (test_sign_function).
    secret = WebhookSecret.parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_an_independent_computation() -> None:
    secret = WebhookSecret.generate(SeededEntropy(7))
    headers = signed_headers([secret], "msg_abc", BODY, at=AT)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == str(int(AT.timestamp()))
    assert headers["webhook-signature"] == independent_signature(
        secret.serialize(), "msg_abc", int(AT.timestamp()), BODY
    )


def test_round_trip_verifies_and_returns_the_id() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    assert verify([SECRET_A], headers, BODY, at=AT + timedelta(seconds=3)) == "msg_42"


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in signed_headers([SECRET_A], "msg_42", BODY, at=AT).items()}
    assert verify([SECRET_A], headers, BODY, at=AT) == "msg_42"


def test_tampered_body_fails() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    tampered = BODY.replace(b'"a1"', b'"a2"')
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_A], headers, tampered, at=AT)


def test_reserialised_json_fails_because_bytes_differ() -> None:
    # The classic receiver mistake: parse then dump again (spaces) before verifying.
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_A], headers, json.dumps(json.loads(BODY)).encode(), at=AT)


def test_tampered_id_or_timestamp_fails() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_A], {**headers, "webhook-id": "msg_43"}, BODY, at=AT)
    shifted = str(int(AT.timestamp()) + 1)
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_A], {**headers, "webhook-timestamp": shifted}, BODY, at=AT)


def test_old_timestamp_fails_even_with_a_valid_signature() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    assert verify([SECRET_A], headers, BODY, at=AT + timedelta(minutes=5)) == "msg_42"
    with pytest.raises(WebhookTimestampOutsideToleranceError, match="too old"):
        verify([SECRET_A], headers, BODY, at=AT + timedelta(minutes=5, seconds=1))


def test_future_timestamp_fails() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT + timedelta(minutes=6))
    with pytest.raises(WebhookTimestampOutsideToleranceError, match="too new"):
        verify([SECRET_A], headers, BODY, at=AT)


def test_custom_tolerance() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    with pytest.raises(WebhookTimestampOutsideToleranceError):
        verify([SECRET_A], headers, BODY, at=AT + timedelta(seconds=31), tolerance=timedelta(seconds=30))


def test_wrong_secret_fails() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_B], headers, BODY, at=AT)


def test_rotation_sender_signs_with_both_and_either_receiver_accepts() -> None:
    headers = signed_headers([SECRET_B, SECRET_A], "msg_42", BODY, at=AT)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert verify([SECRET_A], headers, BODY, at=AT) == "msg_42"  # receiver not yet rotated
    assert verify([SECRET_B], headers, BODY, at=AT) == "msg_42"  # receiver already rotated
    with pytest.raises(NoMatchingSignatureError):
        verify([WebhookSecret(b"\x07" * 32)], headers, BODY, at=AT)


def test_rotation_receiver_accepts_old_and_new_secret() -> None:
    old_only = signed_headers([SECRET_A], "msg_1", BODY, at=AT)
    new_only = signed_headers([SECRET_B], "msg_2", BODY, at=AT)
    assert verify([SECRET_B, SECRET_A], old_only, BODY, at=AT) == "msg_1"
    assert verify([SECRET_B, SECRET_A], new_only, BODY, at=AT) == "msg_2"


def test_unknown_signature_versions_and_garbage_are_ignored() -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    good = headers["webhook-signature"]
    noisy = f"v1a,AAAA v2,{good[3:]} v1,not-base64!! junk {good}"
    assert verify([SECRET_A], {**headers, "webhook-signature": noisy}, BODY, at=AT) == "msg_42"
    # The valid signature under an unknown version label does not count.
    with pytest.raises(NoMatchingSignatureError):
        verify([SECRET_A], {**headers, "webhook-signature": f"v2,{good[3:]}"}, BODY, at=AT)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(name: str) -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    del headers[name]
    with pytest.raises(MissingWebhookHeadersError) as info:
        verify([SECRET_A], headers, BODY, at=AT)
    assert info.value.missing == (name,)


@pytest.mark.parametrize("value", ["hello", "1.5", "-5", "1e9", "١٢٣"])
def test_non_integer_timestamp_fails(value: str) -> None:
    headers = signed_headers([SECRET_A], "msg_42", BODY, at=AT)
    with pytest.raises(InvalidWebhookTimestampError):
        verify([SECRET_A], {**headers, "webhook-timestamp": value}, BODY, at=AT)


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1"])
def test_message_ids_with_separators_cannot_be_signed(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(SECRET_A, msg_id, 1, BODY)


def test_secret_parsing_accepts_prefix_optional_and_unpadded() -> None:
    key = bytes(range(25))  # 25 bytes -> base64 with padding "=="
    encoded = base64.b64encode(key).decode()
    assert encoded.endswith("=")
    for text in (encoded, "whsec_" + encoded, "whsec_" + encoded.rstrip("="), f"  whsec_{encoded}\n"):
        assert WebhookSecret.parse(text).key == key
    assert WebhookSecret(key).serialize() == "whsec_" + encoded


@pytest.mark.parametrize(
    "text",
    [
        "",
        "whsec_",
        "whsec_!!!notbase64!!!",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_bad_secrets_are_rejected(text: str) -> None:
    with pytest.raises(InvalidWebhookSecretError):
        WebhookSecret.parse(text)


def test_parse_secrets_needs_at_least_one() -> None:
    with pytest.raises(InvalidWebhookSecretError):
        parse_secrets([])
    assert parse_secrets([SECRET_A.serialize(), SECRET_B]) == (SECRET_A, SECRET_B)


def test_secret_repr_hides_the_key() -> None:
    secret = WebhookSecret(b"\xab" * 32)
    assert "ab" not in repr(secret).lower().replace("webhooksecret", "")
    assert secret.serialize()[6:] not in repr(secret)


def test_generated_secrets_are_long_enough_and_differ() -> None:
    entropy = SeededEntropy(1)
    first, second = WebhookSecret.generate(entropy), WebhookSecret.generate(entropy)
    assert len(first.key) == signing.GENERATED_SECRET_BYTES
    assert first != second
    assert WebhookSecret.parse(first.serialize()) == first


def test_verify_webhook_helper_returns_the_parsed_envelope() -> None:
    headers = signed_headers([SECRET_A], "msg_1", BODY, at=AT)
    envelope = verify_webhook(BODY, headers, [SECRET_B.serialize(), SECRET_A.serialize()], at=AT)
    assert envelope["type"] == "account.locked"
    assert envelope["data"] == {"account_id": "a1"}
    with pytest.raises(signing.WebhookVerificationError):
        verify_webhook(BODY + b" ", headers, [SECRET_A.serialize()], at=AT)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        signed_headers([SECRET_A], "msg_1", BODY, at=datetime(2026, 1, 1))
