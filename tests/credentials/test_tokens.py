"""Unit tests for security.credentials.tokens (password-reset tokens)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from security.credentials import tokens
from security.entropy import SeededEntropy, SystemEntropy

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def test_issued_token_has_256_bits_and_is_url_safe() -> None:
    issued = tokens.issue(SystemEntropy(), at=NOW)
    assert len(issued.token) == tokens.TOKEN_LENGTH
    assert tokens.is_well_formed(issued.token)
    raw = base64.urlsafe_b64decode(issued.token + "=")
    assert len(raw) * 8 == 256


def test_only_the_digest_is_derived_for_storage() -> None:
    issued = tokens.issue(SeededEntropy(1), at=NOW)
    assert issued.digest == tokens.digest(issued.token)
    assert issued.token not in issued.digest
    assert len(issued.digest) == 64
    # Domain-separated: not the bare SHA-256 of the token.
    assert issued.digest != hashlib.sha256(issued.token.encode()).hexdigest()


def test_tokens_come_from_the_injected_entropy() -> None:
    assert tokens.issue(SeededEntropy(2), at=NOW).token == tokens.issue(SeededEntropy(2), at=NOW).token
    assert tokens.issue(SeededEntropy(2), at=NOW).token != tokens.issue(SeededEntropy(3), at=NOW).token


def test_expiry_is_thirty_minutes() -> None:
    assert tokens.issue(SeededEntropy(4), at=NOW).expires_at == NOW + timedelta(minutes=30)


def test_issue_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        tokens.issue(SeededEntropy(4), at=datetime(2026, 1, 1))  # noqa: DTZ001


def test_tampered_token_has_a_different_digest() -> None:
    issued = tokens.issue(SeededEntropy(5), at=NOW)
    flipped = ("A" if issued.token[0] != "A" else "B") + issued.token[1:]
    assert not tokens.digests_equal(tokens.digest(flipped), issued.digest)
    assert tokens.digests_equal(tokens.digest(issued.token), issued.digest)


@pytest.mark.parametrize("bad", ["", "short", "x" * 42, "x" * 44, "+" * 43, "/" * 43, "=" * 43])
def test_malformed_tokens_are_recognised(bad: str) -> None:
    assert not tokens.is_well_formed(bad)


def test_digest_of_huge_input_is_bounded() -> None:
    # Only the first MAX_INPUT_CHARS count; the rest cannot change the (non-matching) digest.
    assert tokens.digest("a" * 10_000) == tokens.digest("a" * tokens.MAX_INPUT_CHARS)


@pytest.mark.parametrize(
    ("used", "voided", "at", "usable"),
    [
        (None, None, NOW, True),
        (None, None, NOW + timedelta(minutes=29, seconds=59), True),
        (None, None, NOW + timedelta(minutes=30), False),
        (NOW, None, NOW, False),
        (None, NOW, NOW, False),
    ],
)
def test_is_usable(used: datetime | None, voided: datetime | None, at: datetime, usable: bool) -> None:
    expires_at = NOW + tokens.RESET_TOKEN_TTL
    assert tokens.is_usable(expires_at=expires_at, used_at=used, voided_at=voided, at=at) is usable
