"""TOTP (RFC 6238) verification and enrollment helpers. Pure: no Flask, no SQLAlchemy, no clock.

Verification returns the matched *time step* instead of a boolean: the caller stores the last
accepted step and passes it back in, so a code (or any earlier code) is never accepted twice
(replay protection, as SecureDrop and warehouse do). Time is always an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno

from security.entropy import Entropy

DIGITS = 6
"""Code length users type (RFC 6238 allows 6-8; authenticator apps default to 6)."""
PERIOD_SECONDS = 30
"""Length of one time step (RFC 6238 recommended default)."""
WINDOW_STEPS = 1
"""Steps accepted either side of the current one, to absorb clock drift and typing time."""
SECRET_BYTES = 20
"""160-bit secrets: the HMAC-SHA1 block-friendly length RFC 4226 recommends."""
DIGEST = hashlib.sha1  # RFC 6238 default; the only algorithm every authenticator app supports.
MAX_DIGITS = 8
"""Upper bound accepted by :func:`verify` (RFC 6238 test vectors use 8 digits)."""
QR_ERROR_CORRECTION = "m"
"""Medium error correction: robust on screens without making the symbol needlessly dense."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What a user needs to add the secret to an authenticator app."""

    secret: str
    """Base32 secret (no padding); shown for manual entry."""
    otpauth_uri: str
    """``otpauth://totp/...`` provisioning URI carrying the issuer."""
    qr_svg: str
    """The URI as an inline SVG QR code."""


def _aware_timestamp(at: datetime) -> int:
    if at.tzinfo is None:
        # A naive datetime would be read as local time by .timestamp(): refuse instead of guessing.
        raise ValueError("TOTP needs a timezone-aware datetime")
    return int(at.timestamp())


def time_step(at: datetime, *, period: int = PERIOD_SECONDS) -> int:
    """Return the RFC 6238 time step ``floor(unix_time / period)`` for an aware datetime."""
    return _aware_timestamp(at) // period


def is_valid_secret(secret: str) -> bool:
    """Tell whether ``secret`` is base32 text decoding to at least 80 bits (RFC 4226 minimum)."""
    try:
        raw = base64.b32decode(_pad_base32(secret), casefold=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) * 8 >= 80


def _pad_base32(secret: str) -> str:
    return secret + "=" * (-len(secret) % 8)


def code_for_step(secret: str, step: int, *, digits: int = DIGITS) -> str:
    """Return the code for time step ``step`` (HOTP over the step counter, RFC 6238 section 4)."""
    return pyotp.TOTP(secret, digits=digits, digest=DIGEST, interval=PERIOD_SECONDS).generate_otp(step)


def code_at(secret: str, at: datetime, *, digits: int = DIGITS) -> str:
    """Return the code valid at instant ``at``."""
    return code_for_step(secret, time_step(at), digits=digits)


def normalize_code(code: str, *, digits: int = DIGITS) -> str | None:
    """Strip the spaces users type ("123 456"); return ``None`` unless exactly ``digits`` ASCII digits."""
    cleaned = "".join(code.split())
    if len(cleaned) != digits or not (cleaned.isascii() and cleaned.isdigit()):
        return None
    return cleaned


def verify(
    secret: str,
    code: str,
    *,
    at: datetime,
    last_step: int | None,
    window: int = WINDOW_STEPS,
    digits: int = DIGITS,
) -> int | None:
    """Check ``code`` at instant ``at``; return the matched time step, or ``None``.

    Steps within ``window`` of the current one are accepted. A step ``<= last_step`` is refused
    even when the code matches: that code (or an older one) was already used, so accepting it
    would allow replay of an observed code. Every candidate step is compared in constant time and
    the loop does not stop early, so timing does not reveal which step matched.
    """
    if not 1 <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be between 1 and {MAX_DIGITS}")
    if window < 0:
        raise ValueError("window must not be negative")
    normalized = normalize_code(code, digits=digits)
    if normalized is None:
        return None
    current = time_step(at)
    matched: int | None = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        expected = code_for_step(secret, step, digits=digits)
        fresh = last_step is None or step > last_step
        if hmac.compare_digest(expected.encode(), normalized.encode()) and fresh and matched is None:
            matched = step
    return matched


def new_secret(entropy: Entropy) -> str:
    """Draw a fresh 160-bit secret and return it as unpadded base32 (what authenticator apps expect)."""
    return base64.b32encode(entropy.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def provisioning_uri(secret: str, *, account_name: str, issuer: str) -> str:
    """Return the ``otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER`` URI (Key Uri Format)."""
    if not issuer or ":" in issuer:
        # A colon would be read as the label separator and split the issuer wrongly in apps.
        raise ValueError("issuer must be non-empty and contain no colon")
    if not account_name:
        raise ValueError("account_name must be non-empty")
    totp = pyotp.TOTP(secret, digits=DIGITS, digest=DIGEST, interval=PERIOD_SECONDS)
    return totp.provisioning_uri(name=account_name, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """Render ``uri`` as an inline SVG QR code (no XML declaration, ready to embed in HTML)."""
    return str(segno.make(uri, error=QR_ERROR_CORRECTION, micro=False).svg_inline(scale=4))


def start_enrollment(entropy: Entropy, *, account_name: str, issuer: str) -> Enrollment:
    """Create a new secret and everything the user needs to register it."""
    secret = new_secret(entropy)
    uri = provisioning_uri(secret, account_name=account_name, issuer=issuer)
    return Enrollment(secret=secret, otpauth_uri=uri, qr_svg=qr_svg(uri))
