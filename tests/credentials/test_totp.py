"""Unit tests for security.credentials.totp (RFC 6238, replay protection, enrollment)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from security.credentials import totp
from security.entropy import SeededEntropy, SystemEntropy

# RFC 6238 Appendix B: the SHA1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_SHA1_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # a step boundary: 1795608000 % 30 == 0
STEP = timedelta(seconds=totp.PERIOD_SECONDS)


def at_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@pytest.fixture
def secret() -> str:
    return totp.new_secret(SeededEntropy(6238))


@pytest.mark.parametrize(("unix_time", "expected"), RFC_SHA1_VECTORS)
def test_rfc6238_sha1_vectors_verify(unix_time: int, expected: str) -> None:
    at = at_unix(unix_time)
    step = totp.verify(RFC_SECRET, expected, at=at, last_step=None, window=0, digits=8)
    assert step == unix_time // 30


@pytest.mark.parametrize(("unix_time", "expected"), RFC_SHA1_VECTORS)
def test_rfc6238_sha1_vectors_generate(unix_time: int, expected: str) -> None:
    assert totp.code_at(RFC_SECRET, at_unix(unix_time), digits=8) == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC_SHA1_VECTORS)
def test_rfc6238_vectors_with_one_digit_changed_are_refused(unix_time: int, expected: str) -> None:
    wrong = expected[:-1] + str((int(expected[-1]) + 1) % 10)
    assert totp.verify(RFC_SECRET, wrong, at=at_unix(unix_time), last_step=None, digits=8) is None


def test_six_digit_code_is_the_low_digits_of_the_eight_digit_one() -> None:
    # Dynamic truncation mod 10**d: the 6-digit code is the 8-digit code's last six digits.
    at = at_unix(1111111109)
    assert totp.code_at(RFC_SECRET, at) == "081804"
    assert totp.verify(RFC_SECRET, "081804", at=at, last_step=None) == 1111111109 // 30


def test_agrees_with_pyotp_reference_for_random_secret(secret: str) -> None:
    at = T0 + timedelta(seconds=17)
    assert totp.code_at(secret, at) == pyotp.TOTP(secret).at(at)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_adjacent_steps_are_accepted_and_return_the_code_step(secret: str, offset: int) -> None:
    code_step = totp.time_step(T0) + offset
    code = totp.code_for_step(secret, code_step)
    assert totp.verify(secret, code, at=T0, last_step=None) == code_step


@pytest.mark.parametrize("offset", [-2, 2, -3, 3])
def test_steps_outside_window_are_refused(secret: str, offset: int) -> None:
    code = totp.code_for_step(secret, totp.time_step(T0) + offset)
    # Guard against a coincidental collision with an in-window code, which would make the test lie.
    in_window = {totp.code_for_step(secret, totp.time_step(T0) + d) for d in (-1, 0, 1)}
    assert code not in in_window
    assert totp.verify(secret, code, at=T0, last_step=None) is None


def test_window_zero_accepts_only_the_current_step(secret: str) -> None:
    previous = totp.code_for_step(secret, totp.time_step(T0) - 1)
    current = totp.code_for_step(secret, totp.time_step(T0))
    assert totp.verify(secret, previous, at=T0, last_step=None, window=0) is None
    assert totp.verify(secret, current, at=T0, last_step=None, window=0) == totp.time_step(T0)


def test_replay_of_the_same_code_is_refused(secret: str) -> None:
    code = totp.code_at(secret, T0)
    first = totp.verify(secret, code, at=T0, last_step=None)
    assert first == totp.time_step(T0)
    # Same code, same instant and a little later (still inside the window): refused.
    assert totp.verify(secret, code, at=T0, last_step=first) is None
    assert totp.verify(secret, code, at=T0 + STEP, last_step=first) is None


def test_older_code_after_newer_one_is_refused(secret: str) -> None:
    newer_step = totp.time_step(T0) + 1
    older = totp.code_for_step(secret, totp.time_step(T0) - 1)
    assert totp.verify(secret, older, at=T0, last_step=newer_step) is None


def test_next_step_code_is_accepted_after_previous_use(secret: str) -> None:
    first = totp.verify(secret, totp.code_at(secret, T0), at=T0, last_step=None)
    assert first is not None
    later = T0 + STEP
    assert totp.verify(secret, totp.code_at(secret, later), at=later, last_step=first) == first + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5", "١٢٣٤٥٦", "123456\x00"])
def test_malformed_codes_are_refused(secret: str, code: str) -> None:
    assert totp.verify(secret, code, at=T0, last_step=None) is None


def test_spaces_in_code_are_ignored(secret: str) -> None:
    code = totp.code_at(secret, T0)
    spaced = f" {code[:3]} {code[3:]} "
    assert totp.verify(secret, spaced, at=T0, last_step=None) == totp.time_step(T0)


def test_naive_datetime_is_rejected(secret: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        totp.verify(secret, "123456", at=datetime(2026, 1, 1), last_step=None)  # noqa: DTZ001


def test_new_secret_has_160_bits_and_is_unpadded_base32() -> None:
    secret = totp.new_secret(SystemEntropy())
    assert len(secret) == 32
    assert "=" not in secret
    assert len(base64.b32decode(secret)) == totp.SECRET_BYTES
    assert totp.is_valid_secret(secret)


def test_new_secret_uses_the_injected_entropy() -> None:
    assert totp.new_secret(SeededEntropy(1)) == totp.new_secret(SeededEntropy(1))
    assert totp.new_secret(SeededEntropy(1)) != totp.new_secret(SeededEntropy(2))


@pytest.mark.parametrize("bad", ["not base32!", "AAAA", ""])
def test_is_valid_secret_refuses_short_or_invalid(bad: str) -> None:
    assert not totp.is_valid_secret(bad)


def test_provisioning_uri_carries_issuer_account_and_parameters(secret: str) -> None:
    uri = totp.provisioning_uri(secret, account_name="acct-42", issuer="Foxguard Wallet")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Foxguard Wallet:acct-42"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Foxguard Wallet"]
    # pyotp omits defaults (SHA1, 6 digits, 30 s); if present they must be the defaults.
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]


@pytest.mark.parametrize(("issuer", "account"), [("", "a"), ("Fox:guard", "a"), ("Foxguard", "")])
def test_provisioning_uri_refuses_bad_labels(secret: str, issuer: str, account: str) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        totp.provisioning_uri(secret, account_name=account, issuer=issuer)


def test_start_enrollment_returns_consistent_secret_uri_and_svg() -> None:
    enrollment = totp.start_enrollment(SeededEntropy(7), account_name="acct-7", issuer="Foxguard")
    assert enrollment.secret == totp.new_secret(SeededEntropy(7))
    assert f"secret={enrollment.secret}" in enrollment.otpauth_uri
    root = ET.fromstring(enrollment.qr_svg)  # noqa: S314 - our own generated SVG, not untrusted input
    assert root.tag.endswith("svg")
    # The SVG draws the symbol as a path: it must be non-trivial.
    paths = [el for el in root.iter() if el.tag.endswith("path")]
    assert paths
    assert len(paths[0].attrib["d"]) > 100
