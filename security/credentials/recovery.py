"""Recovery codes: generation, normalisation, hashing and matching. Pure: no Flask, no SQLAlchemy.

Why a plain (domain-separated) SHA-256 and not argon2: each code carries 80 bits of entropy from
``secrets``. A slow password hash exists to make guessing *low-entropy* human passwords
expensive; for an 80-bit random value an offline search of 2**80 SHA-256 evaluations is out of
reach (at 10**11 hashes/s that is ~380,000 years per code), so a slow hash adds nothing there.
It would cost a lot online, though: checking a submitted code against the ten stored ones would
take ten argon2 runs per attempt, an easy CPU-exhaustion lever on a login endpoint. No salt is
needed either: salts defeat precomputed tables, and no table over a 2**80 space can exist. The
same reasoning is what warehouse/GitHub apply to API tokens. Comparison is constant-time and
checks every stored hash, so timing reveals neither whether nor which code matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from security.entropy import Entropy

CODE_COUNT = 10
"""How many codes one enrollment (or regeneration) hands out."""
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
"""Crockford base32 (no i, l, o, u): no look-alike characters, case-insensitive, 5 bits each."""
GROUP_LENGTH = 4
GROUPS = 4
CODE_CHARS = GROUP_LENGTH * GROUPS
ENTROPY_BITS = CODE_CHARS * 5
"""80 bits per code (16 Crockford characters)."""
SEPARATOR = "-"
HASH_DOMAIN = b"foxguard:recovery-code:v1:"
"""Prefix so a recovery-code hash can never be confused with any other SHA-256 in the system."""
_ASCII_FOLD = str.maketrans({"i": "1", "l": "1", "o": "0"})
"""Crockford decoding: the excluded look-alikes are read as the digits users meant."""


@dataclass(frozen=True, slots=True)
class RecoveryCodes:
    """A freshly generated set: ``plaintext`` is shown once, only ``hashes`` are stored."""

    plaintext: tuple[str, ...]
    hashes: tuple[str, ...]


def _format(raw: str) -> str:
    return SEPARATOR.join(raw[i : i + GROUP_LENGTH] for i in range(0, CODE_CHARS, GROUP_LENGTH))


def new_code(entropy: Entropy) -> str:
    """Draw one code like ``7k3m-q9zx-2hcw-a4rt`` (80 bits, unbiased: 32 divides 2**5)."""
    return _format("".join(ALPHABET[entropy.randbelow(len(ALPHABET))] for _ in range(CODE_CHARS)))


def normalize(code: str) -> str | None:
    """Canonical form of a user-typed code, or ``None`` when it cannot be one.

    Case, spaces and hyphens are ignored and i/l/o are read as 1/1/0, so a code read aloud or
    retyped from paper still matches.
    """
    compact = "".join(code.split()).replace(SEPARATOR, "").lower().translate(_ASCII_FOLD)
    if len(compact) != CODE_CHARS or any(ch not in ALPHABET for ch in compact):
        return None
    return _format(compact)


def hash_code(code: str) -> str:
    """Return the hex SHA-256 stored for ``code`` (normalised first; malformed input still hashes)."""
    canonical = normalize(code)
    # Hash malformed input too (it can never equal a real code's hash): same work either way.
    material = canonical if canonical is not None else "\x00" + code[: CODE_CHARS * 2]
    return hashlib.sha256(HASH_DOMAIN + material.encode("utf-8")).hexdigest()


def generate(entropy: Entropy, *, count: int = CODE_COUNT) -> RecoveryCodes:
    """Generate ``count`` distinct codes and their hashes."""
    codes: list[str] = []
    while len(codes) < count:
        code = new_code(entropy)
        if code not in codes:  # a collision is ~2**-80 but costs nothing to rule out
            codes.append(code)
    return RecoveryCodes(plaintext=tuple(codes), hashes=tuple(hash_code(c) for c in codes))


def match(code: str, unused_hashes: Sequence[str]) -> int | None:
    """Return the index in ``unused_hashes`` whose code is ``code``, or ``None``.

    The caller passes only the codes not yet used and marks the matched one used in the same
    transaction (single use). Every entry is compared in constant time, without stopping early.
    """
    candidate = hash_code(code).encode("ascii")
    found: int | None = None
    for index, stored in enumerate(unused_hashes):
        if hmac.compare_digest(candidate, stored.encode("ascii")) and found is None:
            found = index
    if normalize(code) is None:
        return None
    return found
