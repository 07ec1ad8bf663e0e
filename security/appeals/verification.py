"""Pure identity checks for appeals and freezes (no Flask, no SQLAlchemy; time and randomness are inputs).

- Contact codes: short numeric codes sent to the registered e-mail/phone. Because a 6-digit code has
  only a million values, a plain hash would be reversed offline in a moment: codes are stored as a
  *keyed* HMAC bound to their purpose and owner (appeal or freeze request), compared in constant time,
  and are only good until they expire and while attempts remain.
- Recent transaction (knowledge): the amount within a relative tolerance and the calendar day (UTC) of
  one of the account's last N transactions. Amounts are :class:`~decimal.Decimal`, never floats.
- Identity document: the keyed HMAC of the normalised number, compared with the one on record.
- Flow tokens (appeal token): 256 bits, stored as SHA-256 (high entropy: a slow hash adds nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from security.crypto import constant_time_equals, keyed_hash, normalize_document_number, sha256_hex
from security.entropy import Entropy

#: Domain separation of contact-code hashes (never equal to any other keyed hash of the same digits).
CODE_HASH_DOMAIN: Final = "foxguard:contact-code:v1"
#: Bytes of randomness in an appeal token (256 bits).
TOKEN_BYTES: Final = 32
#: Length bounds of a token as sent back by a client (urlsafe base64 of 32 bytes is 43 characters).
TOKEN_MIN_LENGTH: Final = 32
TOKEN_MAX_LENGTH: Final = 128
#: NIST SP 800-63B minimum length of an out-of-band code (the policy enforces it too).
MIN_CODE_DIGITS: Final = 6
#: A document number shorter than this after normalisation is not a document number.
MIN_DOCUMENT_LENGTH: Final = 4


class CodeCheck(StrEnum):
    """Outcome of one contact-code attempt."""

    ACCEPTED = "accepted"
    WRONG = "wrong"  # well-formed but not the code (counts as an attempt)
    MALFORMED = "malformed"  # not N digits (still counts: it is a guess at the code)
    EXPIRED = "expired"  # past expires_at, or already used
    EXHAUSTED = "exhausted"  # no attempts left on this code


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A freshly drawn code (sent to the user) and what is stored of it."""

    code: str
    code_hash: str


def contact_code_hash(key: str, purpose: str, owner_id: str, code: str) -> str:
    """Return the stored form of ``code`` for ``owner_id`` (keyed, bound to ``purpose`` and owner).

    Binding the owner means a code issued for one appeal never matches another appeal's stored hash.
    """
    return keyed_hash(key, f"{CODE_HASH_DOMAIN}:{purpose}:{owner_id}:{code}")


def issue_contact_code(entropy: Entropy, *, key: str, purpose: str, owner_id: str, digits: int) -> IssuedCode:
    """Draw a ``digits``-long numeric code and its stored hash."""
    if digits < MIN_CODE_DIGITS:
        raise ValueError("contact codes need at least 6 digits")
    code = entropy.digits(digits)
    return IssuedCode(code=code, code_hash=contact_code_hash(key, purpose, owner_id, code))


def normalize_code(submitted: str) -> str:
    """Strip the spaces and dashes people type into codes ("123 456", "123-456")."""
    return "".join(ch for ch in submitted if ch not in " -\t")


def check_contact_code(
    submitted: str,
    *,
    stored_hash: str,
    key: str,
    purpose: str,
    owner_id: str,
    digits: int,
    expires_at: datetime,
    used: bool,
    attempts: int,
    max_attempts: int,
    at: datetime,
) -> CodeCheck:
    """Check one attempt at a contact code.

    ``attempts`` counts the attempts already made on this code (before this one). The order of checks
    means an exhausted or expired code never reveals whether the guess would have been right. The
    comparison is always done in constant time, including for malformed input.
    """
    if attempts >= max_attempts:
        return CodeCheck.EXHAUSTED
    if used or at >= expires_at:
        return CodeCheck.EXPIRED
    code = normalize_code(submitted)
    well_formed = len(code) == digits and code.isascii() and code.isdigit()
    # Hash even a malformed guess so the timing does not tell the two cases apart.
    matches = constant_time_equals(contact_code_hash(key, purpose, owner_id, code), stored_hash)
    if not well_formed:
        return CodeCheck.MALFORMED
    return CodeCheck.ACCEPTED if matches else CodeCheck.WRONG


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """What the recent-transaction check needs to know about one stored transaction."""

    amount: Decimal
    occurred_at: datetime


def recent_transactions(records: Iterable[TransactionRecord], count: int) -> list[TransactionRecord]:
    """Return the ``count`` most recent records, newest first."""
    return sorted(records, key=lambda r: r.occurred_at, reverse=True)[:count]


def amount_within(claimed: Decimal, actual: Decimal, tolerance: Decimal) -> bool:
    """Return whether ``claimed`` is within ``tolerance`` (relative, e.g. 0.01) of ``actual``."""
    if not claimed.is_finite() or not actual.is_finite() or claimed <= 0:
        return False
    return abs(claimed - actual) <= abs(actual) * tolerance


def matches_recent_transaction(
    claimed_amount: Decimal,
    claimed_day: date,
    records: Iterable[TransactionRecord],
    *,
    count: int,
    tolerance: Decimal,
) -> bool:
    """Return whether the claim matches one of the ``count`` most recent transactions.

    A match needs the amount within ``tolerance`` (relative) and the same calendar day in UTC. All
    candidates are compared (no early return) so the time taken does not reveal which one matched.
    """
    matched = False
    for record in recent_transactions(records, count):
        same_day = record.occurred_at.astimezone(UTC).date() == claimed_day
        close = amount_within(claimed_amount, record.amount, tolerance)
        matched = (same_day and close) or matched
    return matched


def document_hmac(key: str, document_number: str) -> str:
    """Return the keyed hash an identity-document number is stored as (same as the accounts slice)."""
    return keyed_hash(key, normalize_document_number(document_number))


def document_matches(submitted: str, *, stored_hmac: str | None, key: str) -> bool:
    """Return whether ``submitted`` is the document number on record (keyed HMAC, constant time).

    An account with no document on record never matches, but the hash is still computed so the
    timing is the same.
    """
    normalized = normalize_document_number(submitted)
    candidate = keyed_hash(key, normalized)
    if stored_hmac is None or len(normalized) < MIN_DOCUMENT_LENGTH:
        constant_time_equals(candidate, candidate)
        return False
    return constant_time_equals(candidate, stored_hmac)


def new_flow_token(entropy: Entropy) -> tuple[str, str]:
    """Return ``(token, stored_digest)`` for a new 256-bit flow token (appeal token)."""
    token = entropy.token_urlsafe(TOKEN_BYTES)
    return token, sha256_hex(token)


def token_matches(presented: str, stored_digest: str) -> bool:
    """Return whether ``presented`` is the token whose digest is ``stored_digest`` (constant time)."""
    if not TOKEN_MIN_LENGTH <= len(presented) <= TOKEN_MAX_LENGTH:
        constant_time_equals(sha256_hex(presented), stored_digest)
        return False
    return constant_time_equals(sha256_hex(presented), stored_digest)
