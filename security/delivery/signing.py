"""Standard Webhooks signatures (symmetric scheme, ``v1`` = HMAC-SHA256).

The scheme (https://www.standardwebhooks.com, spec 1.0.0):

* the signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"`` where the timestamp is an
  integer number of Unix seconds and ``body`` is the exact request body bytes;
* the signature is ``v1,<base64(HMAC-SHA256(secret, content))>``;
* secrets are shown as ``whsec_<base64(secret bytes)>``, 24 to 64 random bytes;
* the ``webhook-signature`` header is a *space separated* list of signatures, so during a secret
  rotation the sender signs with the new and the old secret and the receiver accepts either;
* the receiver rejects timestamps outside a tolerance window (replay protection) and uses the
  ``webhook-id`` as an idempotency key (delivery is at-least-once).

Pure module: no Flask, no SQLAlchemy, no wall clock (the time is always passed in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from security.entropy import Entropy

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret
SIGNATURE_VERSION = "v1"
# The spec asks for at least 24 random bytes and allows up to 64.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
GENERATED_SECRET_BYTES = 32
# Five minutes either way, the tolerance used by the reference libraries.
DEFAULT_TOLERANCE = timedelta(minutes=5)
# A signature header with more entries than this is not a rotation, it is an attack on our CPU.
MAX_SIGNATURES_CHECKED = 10


class WebhookVerificationError(ValueError):
    """A webhook could not be verified. The message is safe to log; it never contains secrets."""


class MissingWebhookHeadersError(WebhookVerificationError):
    """One of ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` is absent or empty."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(f"missing webhook header(s): {', '.join(missing)}")
        self.missing = tuple(missing)


class InvalidWebhookTimestampError(WebhookVerificationError):
    """``webhook-timestamp`` is not an integer number of seconds."""

    def __init__(self) -> None:
        super().__init__("webhook-timestamp is not an integer Unix time")


class WebhookTimestampOutsideToleranceError(WebhookVerificationError):
    """The timestamp is too old (possible replay) or too far in the future."""

    def __init__(self, skew: timedelta) -> None:
        direction = "old" if skew < timedelta(0) else "new"
        super().__init__(f"webhook timestamp too {direction} ({abs(skew.total_seconds()):.0f} s skew)")
        self.skew = skew


class NoMatchingSignatureError(WebhookVerificationError):
    """No ``v1`` signature in the header matches any of the accepted secrets."""

    def __init__(self) -> None:
        super().__init__("no matching webhook signature")


class InvalidWebhookSecretError(ValueError):
    """A configured secret is not ``whsec_<base64>`` of 24-64 bytes."""


@dataclass(frozen=True)
class WebhookSecret:
    """A symmetric signing secret. ``repr`` never shows the key."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not MIN_SECRET_BYTES <= len(self.key) <= MAX_SECRET_BYTES:
            raise InvalidWebhookSecretError(
                f"a webhook secret must be {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, got {len(self.key)}"
            )

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        """Parse ``whsec_<base64>`` (the ``whsec_`` prefix is optional, padding may be omitted)."""
        encoded = text.strip()
        if encoded.startswith(SECRET_PREFIX):
            encoded = encoded[len(SECRET_PREFIX) :]
        if not encoded:
            raise InvalidWebhookSecretError("a webhook secret may not be empty")
        # Accept unpadded base64 as the reference libraries do.
        padded = encoded + "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidWebhookSecretError("a webhook secret must be base64 after the whsec_ prefix") from exc
        return cls(key)

    @classmethod
    def generate(cls, entropy: Entropy, nbytes: int = GENERATED_SECRET_BYTES) -> WebhookSecret:
        """Draw a fresh random secret from ``entropy``."""
        return cls(entropy.token_bytes(nbytes))

    def serialize(self) -> str:
        """Return the ``whsec_<base64>`` form to hand to the receiver."""
        return SECRET_PREFIX + base64.b64encode(self.key).decode("ascii")


def parse_secrets(values: Iterable[str | WebhookSecret]) -> tuple[WebhookSecret, ...]:
    """Parse a list of configured secrets (current first, then the ones being rotated out)."""
    parsed = tuple(v if isinstance(v, WebhookSecret) else WebhookSecret.parse(v) for v in values)
    if not parsed:
        raise InvalidWebhookSecretError("at least one webhook secret is required")
    return parsed


def unix_seconds(at: datetime) -> int:
    """Whole Unix seconds of an aware datetime (the header carries integer seconds)."""
    if at.tzinfo is None:
        raise ValueError("webhook timestamps need a timezone-aware datetime")
    return int(at.timestamp())


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _check_msg_id(msg_id: str) -> None:
    # The spec: the id must not contain "." or a crafted id could shift the signed boundaries.
    if not msg_id or "." in msg_id or any(ch.isspace() for ch in msg_id):
        raise ValueError("a webhook id must be non-empty without '.' or whitespace")


def sign(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one ``v1,<base64>`` signature of ``body`` for ``msg_id`` at Unix second ``timestamp``."""
    _check_msg_id(msg_id)
    digest = hmac.new(secret.key, _content(msg_id, timestamp, body), hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[WebhookSecret], msg_id: str, timestamp: int, body: bytes) -> str:
    """Sign with every secret (rotation) and join the signatures with spaces."""
    if not secrets:
        raise InvalidWebhookSecretError("at least one webhook secret is required")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def signed_headers(secrets: Sequence[WebhookSecret], msg_id: str, body: bytes, *, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt made at ``at``."""
    timestamp = unix_seconds(at)
    return {
        WEBHOOK_ID_HEADER: msg_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: signature_header(secrets, msg_id, timestamp, body),
    }


def _candidate_signatures(header: str) -> list[bytes]:
    found: list[bytes] = []
    for token in header.split()[:MAX_SIGNATURES_CHECKED]:
        version, sep, encoded = token.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue  # other schemes (v1a, future versions) are not ours to judge
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secrets: Sequence[WebhookSecret],
    headers: Mapping[str, str],
    body: bytes,
    *,
    at: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> str:
    """Check a received webhook; return its ``webhook-id`` or raise :class:`WebhookVerificationError`.

    ``headers`` are matched case-insensitively. ``body`` must be the raw bytes as received (never a
    re-serialised JSON document). ``at`` is the receiver's current time. Every candidate signature
    is compared in constant time against every accepted secret.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    names = (WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER)
    missing = [name for name in names if not lowered.get(name)]
    if missing:
        raise MissingWebhookHeadersError(missing)
    msg_id = lowered[WEBHOOK_ID_HEADER]
    raw_timestamp = lowered[WEBHOOK_TIMESTAMP_HEADER].strip()
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit():
        raise InvalidWebhookTimestampError()
    timestamp = int(raw_timestamp)
    skew = timedelta(seconds=timestamp - unix_seconds(at))
    if abs(skew) > tolerance:
        raise WebhookTimestampOutsideToleranceError(skew)
    try:
        _check_msg_id(msg_id)
    except ValueError as exc:
        raise NoMatchingSignatureError() from exc
    candidates = _candidate_signatures(lowered[WEBHOOK_SIGNATURE_HEADER])
    content = _content(msg_id, timestamp, body)
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.key, content, hashlib.sha256).digest()
        for candidate in candidates:
            # No early exit: the work done does not depend on which secret matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise NoMatchingSignatureError()
    return msg_id


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    at: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> Any:
    """Helper for backend developers: verify and return the parsed JSON envelope.

    ``secrets`` are the ``whsec_...`` strings the backend was given (during a rotation, both).
    Raises :class:`WebhookVerificationError` on any failure; deduplicate on ``envelope["id"]`` or
    the ``webhook-id`` header, since a message may arrive more than once.
    """
    verify(parse_secrets(secrets), headers, body, at=at, tolerance=tolerance)
    return json.loads(body)
