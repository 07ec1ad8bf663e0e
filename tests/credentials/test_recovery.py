"""Unit tests for security.credentials.recovery."""

from __future__ import annotations

import hashlib
import re

import pytest

from security.credentials import recovery
from security.entropy import SeededEntropy, SystemEntropy

CODE_SHAPE = re.compile(r"[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}")


def test_generate_gives_ten_distinct_well_formed_codes_and_matching_hashes() -> None:
    codes = recovery.generate(SystemEntropy())
    assert len(codes.plaintext) == recovery.CODE_COUNT == 10
    assert len(set(codes.plaintext)) == 10
    for code, stored in zip(codes.plaintext, codes.hashes, strict=True):
        assert CODE_SHAPE.fullmatch(code), code
        assert stored == recovery.hash_code(code)
        assert code not in stored  # only a digest is kept


def test_codes_carry_eighty_bits() -> None:
    assert recovery.ENTROPY_BITS == 80
    assert len(recovery.ALPHABET) == 32
    assert len(set(recovery.ALPHABET)) == 32


def test_generation_uses_injected_entropy() -> None:
    assert recovery.generate(SeededEntropy(3)) == recovery.generate(SeededEntropy(3))
    assert recovery.generate(SeededEntropy(3)).plaintext != recovery.generate(SeededEntropy(4)).plaintext


def test_hash_is_domain_separated_sha256() -> None:
    code = recovery.new_code(SeededEntropy(5))
    assert recovery.hash_code(code) != hashlib.sha256(code.encode()).hexdigest()
    assert len(recovery.hash_code(code)) == 64


def test_match_finds_the_index_of_the_code() -> None:
    codes = recovery.generate(SeededEntropy(11))
    assert recovery.match(codes.plaintext[6], codes.hashes) == 6


@pytest.mark.parametrize(
    "transform",
    [str.upper, lambda c: c.replace("-", ""), lambda c: " ".join(c.split("-")), lambda c: f"  {c}\n"],
)
def test_match_tolerates_case_spaces_and_hyphens(transform) -> None:  # type: ignore[no-untyped-def]
    codes = recovery.generate(SeededEntropy(12))
    assert recovery.match(transform(codes.plaintext[0]), codes.hashes) == 0


def test_look_alike_letters_are_read_as_digits() -> None:
    code = "1111-0000-abcd-efgh"
    typed = "iLlI-oOoO-ABCD-EFGH"
    assert recovery.normalize(typed) == code
    assert recovery.match(typed, [recovery.hash_code(code)]) == 0


def test_used_code_no_longer_matches_once_removed_from_the_unused_set() -> None:
    codes = recovery.generate(SeededEntropy(13))
    used = recovery.match(codes.plaintext[2], codes.hashes)
    assert used == 2
    remaining = [h for i, h in enumerate(codes.hashes) if i != used]
    assert recovery.match(codes.plaintext[2], remaining) is None


def test_code_from_another_set_does_not_match() -> None:
    mine = recovery.generate(SeededEntropy(14))
    other = recovery.generate(SeededEntropy(15))
    assert recovery.match(other.plaintext[0], mine.hashes) is None


@pytest.mark.parametrize(
    "bad", ["", "abcd", "abcd-efgh-jkmn-pqr", "abcd-efgh-jkmn-pqrst", "abcd-efgh-jkmn-pqr!"]
)
def test_malformed_codes_never_match(bad: str) -> None:
    assert recovery.normalize(bad) is None
    assert recovery.match(bad, [recovery.hash_code("abcd-efgh-jkmn-pqrs")]) is None


def test_malformed_input_hash_differs_from_any_real_code_hash() -> None:
    # "u" is not in the alphabet: malformed; its hash must not equal the canonical code's.
    assert recovery.hash_code("abcd-efgh-jkmn-pqru") != recovery.hash_code("abcd-efgh-jkmn-pqrs")
