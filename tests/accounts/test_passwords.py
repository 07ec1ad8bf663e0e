from __future__ import annotations

import threading
import time

import pytest
from argon2 import extract_parameters

from security.accounts.services import AccountService, Profile
from security.audit.services import AuditLog
from security.credentials.passwords import PasswordHasher, PasswordPolicy, common_passwords
from security.crypto import SecretBox
from security.delivery.outbox import Outbox
from security.entropy import SystemEntropy

PASSWORD = "violet-harbour-engine-42"
KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZW5jcnlwdGlvbi1rZXk="


def service(session, clock, hasher: PasswordHasher) -> AccountService:
    return AccountService(
        session, clock=clock, audit=AuditLog(session, clock=clock),
        outbox=Outbox(session, clock=clock, entropy=SystemEntropy(), secret_box=SecretBox([KEY])),
        hasher=hasher, policy=PasswordPolicy(), identity_hmac_key="k" * 32,
    )


def test_outdated_hash_is_upgraded_on_successful_verification(db_session, clock):
    old = PasswordHasher(time_cost=1, memory_cost_kib=64, parallelism=1)
    new = PasswordHasher(time_cost=2, memory_cost_kib=128, parallelism=1)
    accounts = service(db_session, clock, old)
    accounts.upsert("acc-1", Profile("a@example.com", None, None, None), actor="test")
    accounts.set_password("acc-1", PASSWORD, actor="test")
    account = accounts.get("acc-1")
    assert extract_parameters(account.password_hash).memory_cost == 64

    upgraded = service(db_session, clock, new)
    assert upgraded.verify_password(account, "wrong password here") is False
    assert extract_parameters(account.password_hash).memory_cost == 64  # no rehash on failure
    assert upgraded.verify_password(account, PASSWORD) is True
    params = extract_parameters(account.password_hash)
    assert (params.memory_cost, params.time_cost) == (128, 2)
    assert upgraded.verify_password(account, PASSWORD) is True


def test_unknown_account_verification_fails_after_equal_work():
    hasher = PasswordHasher(time_cost=1, memory_cost_kib=64, parallelism=1)
    assert hasher.verify(None, PASSWORD).ok is False
    assert hasher.verify("not-a-hash", PASSWORD).ok is False


def test_bundled_common_list_is_large_and_lowercase():
    words = common_passwords()
    assert len(words) >= 10_000
    assert "password" in words
    assert all(w == w.lower() for w in list(words)[:1000])


def test_unicode_passwords_are_normalised():
    hasher = PasswordHasher(time_cost=1, memory_cost_kib=64, parallelism=1)
    composed = "caf\u00e9-harbour-engine"
    decomposed = "cafe\u0301-harbour-engine"
    assert hasher.verify(hasher.hash(composed), decomposed).ok is True
    assert PasswordPolicy().violations(decomposed) == []


class _CountingArgon2:
    """Stands in for argon2's hasher and records how many verifications ran at once."""

    def __init__(self, real: object) -> None:
        self._real = real
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def verify(self, stored: str, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)  # long enough for every thread to arrive while one is inside
        with self._lock:
            self.running -= 1
        return self._real.verify(stored, password)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


@pytest.mark.parametrize(("limit", "expected_most"), [(1, 1), (2, 2), (0, None)])
def test_hashes_at_once_are_capped_per_process(limit, expected_most):
    hasher = PasswordHasher(time_cost=1, memory_cost_kib=64, parallelism=1, max_concurrent=limit)
    stored = hasher.hash("violet-harbour-engine-42")
    counting = _CountingArgon2(hasher._hasher)
    hasher._hasher = counting  # type: ignore[assignment]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(hasher.verify(stored, "violet-harbour-engine-42").ok))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6
    if expected_most is None:  # no limit: the threads overlapped (so the capped cases measure the cap)
        assert counting.most > 2
    else:
        assert counting.most == expected_most
