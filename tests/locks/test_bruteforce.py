"""Keycloak-like brute-force policy: windows, backoff, indefinite locks, per-IP throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from security.locks.bruteforce import (
    FailureState,
    failures_in_window,
    ip_throttle,
    lock_duration,
    register_failure,
    register_success,
)
from security.risk.rules import BruteForceConfig

CONFIG = BruteForceConfig(
    max_failures=5, failure_window_seconds=900, base_lock_seconds=60, backoff_multiplier=2.0,
    max_lock_seconds=300, max_temporary_locks=3, temporary_lock_memory_seconds=86400,
    ip_max_failures=20, ip_window_seconds=600,
)
T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def fail(state: FailureState, times: int, start: datetime, step: timedelta = timedelta(seconds=1)):
    outcomes = []
    for i in range(times):
        outcome = register_failure(CONFIG, state, start + i * step)
        state = outcome.state
        outcomes.append(outcome)
    return state, outcomes


def test_fifth_failure_in_window_locks() -> None:
    state, outcomes = fail(FailureState(), 5, T0)
    assert [o.lock is not None for o in outcomes] == [False, False, False, False, True]
    assert [o.failures_in_window for o in outcomes] == [1, 2, 3, 4, 5]
    lock = outcomes[-1].lock
    assert lock is not None
    assert lock.duration == timedelta(seconds=60)
    assert lock.expires_at(T0) == T0 + timedelta(seconds=60)
    assert state == FailureState(failures=0, window_started_at=None, temporary_locks=1,
                                 last_lock_at=T0 + timedelta(seconds=4))


def test_failures_outside_window_do_not_add_up() -> None:
    # Four failures, then the window (15 min from the first) passes: counting starts over.
    state, _ = fail(FailureState(), 4, T0)
    outcome = register_failure(CONFIG, state, T0 + timedelta(seconds=900))
    assert outcome.lock is None
    assert outcome.failures_in_window == 1
    # Boundary: one second before the window closes, the fifth failure still counts.
    state, _ = fail(FailureState(), 4, T0)
    assert register_failure(CONFIG, state, T0 + timedelta(seconds=899)).lock is not None


def test_success_resets_count_but_not_lock_history() -> None:
    state, _ = fail(FailureState(temporary_locks=2, last_lock_at=T0), 4, T0)
    state = register_success(state)
    assert state.failures == 0
    assert state.temporary_locks == 2
    assert failures_in_window(CONFIG, state, T0) == 0


def test_backoff_doubles_to_cap_then_indefinite() -> None:
    state = FailureState()
    durations = []
    at = T0
    for _ in range(4):
        state, outcomes = fail(state, 5, at)
        lock = outcomes[-1].lock
        assert lock is not None
        durations.append(lock.duration)
        at += timedelta(hours=1)
    assert durations[:3] == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=240)]
    assert durations[3] is None  # the 4th lock after 3 temporary ones is indefinite
    assert state.temporary_locks == 4


def test_lock_duration_cap() -> None:
    assert lock_duration(CONFIG, 3) == timedelta(seconds=240)
    assert lock_duration(CONFIG, 4) == timedelta(seconds=300)  # capped
    assert lock_duration(CONFIG, 30) == timedelta(seconds=300)
    with pytest.raises(ValueError, match="starts at 1"):
        lock_duration(CONFIG, 0)


def test_old_temporary_locks_are_forgotten() -> None:
    state = FailureState(temporary_locks=3, last_lock_at=T0)
    _, outcomes = fail(state, 5, T0 + timedelta(days=1))
    lock = outcomes[-1].lock
    assert lock is not None
    assert lock.duration == timedelta(seconds=60)
    assert lock.temporary_lock_number == 1
    # One second earlier the history still counts: indefinite.
    _, outcomes = fail(state, 5, T0 + timedelta(days=1) - timedelta(seconds=10))
    assert outcomes[-1].lock is not None
    assert outcomes[-1].lock.indefinite


def test_ip_throttle_at_threshold_with_retry_after() -> None:
    failures = [T0 + timedelta(seconds=10 * i) for i in range(19)]
    at = T0 + timedelta(seconds=200)
    assert ip_throttle(CONFIG, failures, at).throttled is False
    failures.append(T0 + timedelta(seconds=195))
    verdict = ip_throttle(CONFIG, failures, at)
    assert verdict.throttled
    assert verdict.failures_in_window == 20
    # The oldest of the 20 (T0) leaves the 600 s window at T0 + 600: 400 s from now.
    assert verdict.retry_after_seconds == 400
    later = ip_throttle(CONFIG, failures, T0 + timedelta(seconds=600))
    assert later.throttled is False


def test_ip_throttle_ignores_old_failures_and_rounds_up() -> None:
    old = [T0 - timedelta(seconds=601 + i) for i in range(50)]
    assert not ip_throttle(CONFIG, old, T0).throttled
    recent = [T0 - timedelta(seconds=0.5 * i) for i in range(25)]
    verdict = ip_throttle(CONFIG, recent, T0)
    # 20th newest is 9.5 s old: 590.5 s left, rounded up.
    assert (verdict.throttled, verdict.retry_after_seconds) == (True, 591)
