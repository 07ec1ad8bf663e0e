"""Password-reset tokens: issuing, digesting and the usability rule. Pure: no Flask, no SQLAlchemy.

A token is 256 bits from the injected :class:`~security.entropy.Entropy`, URL-safe base64. Only
its SHA-256 is stored, so a database leak yields no usable token; a fast hash is right because
the token is uniformly random (no dictionary to search; 2**256 pre-images). Lookup is by digest:
the attacker controls the token but not its digest, so an indexed ``WHERE digest = ?`` leaks
nothing useful through timing, and :func:`digests_equal` confirms the row in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from security.entropy import Entropy

TOKEN_BYTES = 32
"""256 bits of randomness."""
TOKEN_LENGTH = 43
"""Length of 32 bytes in unpadded URL-safe base64."""
RESET_TOKEN_TTL = timedelta(minutes=30)
"""How long a reset link stays valid (DESIGN.md: 30 minutes)."""
HASH_DOMAIN = b"foxguard:password-reset:v1:"
"""Prefix so a reset-token digest can never be confused with another SHA-256 in the system."""
MAX_INPUT_CHARS = 256
"""Longer input is cut before hashing: it cannot be a token and must not cost unbounded work."""
_TOKEN_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``token`` goes to the user out of band, only ``digest`` is stored."""

    token: str
    digest: str
    expires_at: datetime


def is_well_formed(token: str) -> bool:
    """Tell whether ``token`` has the shape of a token this module issues."""
    return _TOKEN_SHAPE.fullmatch(token) is not None


def digest(token: str) -> str:
    """Return the hex SHA-256 stored for ``token``.

    Malformed input is hashed as well (it simply never matches a row), so the work done does not
    depend on whether the input looked plausible.
    """
    return hashlib.sha256(HASH_DOMAIN + token[:MAX_INPUT_CHARS].encode("utf-8")).hexdigest()


def digests_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(left.encode("ascii"), right.encode("ascii"))


def issue(entropy: Entropy, *, at: datetime, ttl: timedelta = RESET_TOKEN_TTL) -> IssuedToken:
    """Draw a new token issued at ``at``; it expires ``ttl`` later."""
    if at.tzinfo is None:
        raise ValueError("issue needs a timezone-aware datetime")
    token = entropy.token_urlsafe(TOKEN_BYTES)
    return IssuedToken(token=token, digest=digest(token), expires_at=at + ttl)


def is_usable(
    *,
    expires_at: datetime,
    used_at: datetime | None,
    voided_at: datetime | None,
    at: datetime,
) -> bool:
    """A token is usable once, before it expires, and only while no newer token has voided it.

    The caller must answer every ``False`` (and every unknown token) with the same error, so a
    client cannot tell an expired token from a used, voided, tampered or invented one.
    """
    return used_at is None and voided_at is None and at < expires_at
