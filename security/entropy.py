"""The only place that draws randomness.

Services receive an :class:`Entropy`; tests may pass a seeded one to make tokens predictable.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol


class Entropy(Protocol):
    """A source of unpredictable values."""

    def token_bytes(self, nbytes: int) -> bytes:
        """Return ``nbytes`` random bytes."""
        ...

    def token_urlsafe(self, nbytes: int) -> str:
        """Return a URL-safe text token carrying ``nbytes`` of randomness."""
        ...

    def digits(self, length: int) -> str:
        """Return ``length`` random decimal digits (one-time codes)."""
        ...

    def randbelow(self, upper: int) -> int:
        """Return a random integer in ``[0, upper)``."""
        ...


class SystemEntropy:
    """Cryptographically secure randomness from :mod:`secrets`."""

    def token_bytes(self, nbytes: int) -> bytes:
        return secrets.token_bytes(nbytes)

    def token_urlsafe(self, nbytes: int) -> str:
        return secrets.token_urlsafe(nbytes)

    def digits(self, length: int) -> str:
        return "".join(str(secrets.randbelow(10)) for _ in range(length))

    def randbelow(self, upper: int) -> int:
        return secrets.randbelow(upper)


class SeededEntropy:
    """Deterministic randomness for tests and the demo data generator. Never for production."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - deliberately predictable, test/demo only

    def token_bytes(self, nbytes: int) -> bytes:
        return self._rng.randbytes(nbytes)

    def token_urlsafe(self, nbytes: int) -> str:
        import base64

        return base64.urlsafe_b64encode(self.token_bytes(nbytes)).rstrip(b"=").decode()

    def digits(self, length: int) -> str:
        return "".join(str(self._rng.randrange(10)) for _ in range(length))

    def randbelow(self, upper: int) -> int:
        return self._rng.randrange(upper)
