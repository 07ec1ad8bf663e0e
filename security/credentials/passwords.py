"""Password policy and hashing (pure: no Flask, no SQLAlchemy).

Policy follows NIST SP 800-63B / OWASP ASVS V2.1: length 8-128 (12+ recommended), no composition rules,
reject known-common passwords and ones derived from the account's own identifiers, and require a minimum
zxcvbn strength score. Hashing is argon2id (argon2-cffi) with parameters from config; a stored hash made with
older parameters is transparently upgraded on the next successful verification.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

# zxcvbn refuses longer inputs; the strength of the first 72 characters is a lower bound for the rest.
ZXCVBN_MAX_INPUT = 72
RECOMMENDED_LENGTH = 12
STRENGTH_LABELS = ("too guessable", "very guessable", "somewhat guessable", "safely unguessable", "very unguessable")


@dataclass(frozen=True)
class PolicyViolation:
    """One reason a password is refused, with a message meant for the end user."""

    code: str
    message: str


def normalize_password(password: str) -> str:
    """NFKC-normalise, so the same password typed on different keyboards hashes the same (NIST 5.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of 30,000 common passwords, lower-cased."""
    text = resources.files("security.credentials").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line and not line.startswith("#"))


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must satisfy."""

    min_length: int = 8
    max_length: int = 128
    min_strength: int = 2

    def violations(self, password: str, *, user_inputs: Iterable[str | None] = ()) -> list[PolicyViolation]:
        """Every reason ``password`` is refused (empty when acceptable).

        ``user_inputs`` are the account's own identifiers (id, e-mail, phone): the password may not equal
        them, and zxcvbn penalises passwords built from them.
        """
        password = normalize_password(password)
        length = len(password)
        if length < self.min_length:
            return [PolicyViolation("too_short", f"Use at least {self.min_length} characters "
                                                  f"({RECOMMENDED_LENGTH} or more recommended).")]
        if length > self.max_length:
            return [PolicyViolation("too_long", f"Use at most {self.max_length} characters.")]
        found: list[PolicyViolation] = []
        lowered = password.lower()
        if lowered in common_passwords():
            found.append(PolicyViolation("common", "This password is on a list of commonly used passwords."))
        inputs = [value for value in user_inputs if value]
        derived = {value.lower() for value in inputs} | {v.split("@", 1)[0].lower() for v in inputs if "@" in v}
        if lowered in derived:
            found.append(PolicyViolation("matches_identifier", "The password must not be your account id, "
                                                               "e-mail address or phone number."))
        if not found:
            result = zxcvbn(password[:ZXCVBN_MAX_INPUT], user_inputs=inputs)
            if result["score"] < self.min_strength:
                hint = result["feedback"].get("warning") or ""
                suggestions = " ".join(result["feedback"].get("suggestions") or [])
                message = f"This password is {STRENGTH_LABELS[result['score']]}. {hint} {suggestions}".strip()
                found.append(PolicyViolation("too_weak", " ".join(message.split())))
        return found


@dataclass(frozen=True)
class Verification:
    """Outcome of checking a password against a stored hash."""

    ok: bool
    # A fresh hash to store when the stored one used outdated parameters (only when ok).
    new_hash: str | None = None


class PasswordHasher:
    """argon2id hashing with transparent rehash on parameter change.

    ``max_concurrent``: at most this many hashes run at once in this process (0: no limit). argon2 is
    memory-hard (19 MiB per hash at OWASP strength): more hashes at once than the process has cores only
    take turns on them, each evicting the others' memory from the CPU caches, so every hash costs more
    CPU (measured in ``bench/README.md``). Waiting threads use no CPU; other requests' work goes on.
    """

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int, max_concurrent: int = 0) -> None:
        self._hasher = Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None
        # A hash to verify against when the account has none, so unknown and known accounts cost the same.
        self._dummy = self._hasher.hash("foxguard-timing-equaliser")

    def hash(self, password: str) -> str:
        """Hash a (policy-checked) password."""
        with self._slot():
            return self._hasher.hash(normalize_password(password))

    def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check ``password``; with no stored hash, spend the same time and fail."""
        candidate = normalize_password(password)
        if not stored_hash:
            self._verify_quietly(self._dummy, candidate)
            return Verification(ok=False)
        if not self._verify_quietly(stored_hash, candidate):
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            with self._slot():
                return Verification(ok=True, new_hash=self._hasher.hash(candidate))
        return Verification(ok=True)

    def burn(self, password: str) -> None:
        """Spend one verification's worth of time (equalise timing where the answer is already known)."""
        self._verify_quietly(self._dummy, normalize_password(password))

    def _slot(self) -> AbstractContextManager[object]:
        return self._slots if self._slots is not None else nullcontext()

    def _verify_quietly(self, stored_hash: str, password: str) -> bool:
        try:
            with self._slot():
                return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def user_inputs_for(*values: str | None) -> Sequence[str]:
    """The identifiers a password must not be built from."""
    return [value for value in values if value]
