"""Stored cryptography: encryption of secrets at rest and keyed hashes.

``SecretBox`` wraps Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) in a MultiFernet so keys rotate:
the first key encrypts, every listed key decrypts, and :meth:`SecretBox.rotate` re-encrypts under the first.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class UndecryptableSecret(Exception):
    """A stored ciphertext matches none of the configured keys (or was tampered with)."""


class SecretBox:
    """Encrypt and decrypt small secrets with rotating keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: bytes) -> str:
        """Encrypt under the newest key."""
        return self._fernet.encrypt(plaintext).decode()

    def decrypt(self, token: str) -> bytes:
        """Decrypt with whichever configured key made ``token``."""
        try:
            return self._fernet.decrypt(token.encode())
        except InvalidToken as exc:
            raise UndecryptableSecret("stored secret cannot be decrypted with the configured keys") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the newest key (keeps its original timestamp)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise UndecryptableSecret("stored secret cannot be decrypted with the configured keys") from exc


def keyed_hash(key: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, hex encoded."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def normalize_document_number(value: str) -> str:
    """Canonical form of an identity-document number: NFKC, upper case, letters and digits only.

    So that "ab 123-456" typed by the user matches "AB123456" on record.
    """
    value = unicodedata.normalize("NFKC", value).upper()
    return "".join(ch for ch in value if ch.isalnum())


def sha256_hex(value: str | bytes) -> str:
    """SHA-256 hex digest: for high-entropy secrets (API keys, tokens) where a slow hash adds nothing."""
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    """Compare two strings without leaking where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())
