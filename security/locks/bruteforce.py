"""Keycloak-like brute-force protection (pure: state and time are inputs).

Per account: failures are counted in a window that starts at the first failure. Reaching
``max_failures`` creates a temporary lock lasting ``base * multiplier^(n-1)`` (capped) for the n-th
recent temporary lock; after ``max_temporary_locks`` temporary locks the next one is indefinite and
needs an appeal. A successful login resets the failure count (not the temporary-lock history, which
fades after ``temporary_lock_memory_seconds``).

Per IP: failures across all accounts in a sliding window; at ``ip_max_failures`` the IP is throttled
(HTTP 429 + Retry-After) and the victim accounts are *not* locked, so an attacker guessing from one
address cannot lock people out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from security.risk.rules import BruteForceConfig


@dataclass(frozen=True)
class FailureState:
    """Per-account counters as stored in the database."""

    failures: int = 0
    window_started_at: datetime | None = None
    temporary_locks: int = 0
    last_lock_at: datetime | None = None


@dataclass(frozen=True)
class LockOrder:
    """A lock to create. ``duration`` None means indefinite (appeal needed)."""

    duration: timedelta | None
    temporary_lock_number: int  # 1 for the first recent temporary lock; past the max for indefinite

    @property
    def indefinite(self) -> bool:
        """Whether the lock has no expiry."""
        return self.duration is None

    def expires_at(self, at: datetime) -> datetime | None:
        """Return when the lock ends if it starts at ``at`` (None when indefinite)."""
        return None if self.duration is None else at + self.duration


@dataclass(frozen=True)
class FailureOutcome:
    """The new counter state and, when the threshold was reached, the lock to create."""

    state: FailureState
    lock: LockOrder | None
    failures_in_window: int


def lock_duration(config: BruteForceConfig, lock_number: int) -> timedelta:
    """Return the duration of the ``lock_number``-th (1-based) temporary lock: doubling to the cap."""
    if lock_number < 1:
        raise ValueError("lock_number starts at 1")
    seconds = config.base_lock_seconds * config.backoff_multiplier ** (lock_number - 1)
    return timedelta(seconds=min(seconds, config.max_lock_seconds))


def register_failure(config: BruteForceConfig, state: FailureState, at: datetime) -> FailureOutcome:
    """Count one failed login at ``at`` and decide whether to lock the account."""
    window_start = state.window_started_at
    failures = state.failures
    if window_start is None or at - window_start >= config.failure_window or failures == 0:
        window_start, failures = at, 0
    failures += 1
    temporary_locks = state.temporary_locks
    if state.last_lock_at is not None and at - state.last_lock_at >= timedelta(
        seconds=config.temporary_lock_memory_seconds
    ):
        temporary_locks = 0  # old locks are forgiven
    if failures < config.max_failures:
        counted = replace(
            state, failures=failures, window_started_at=window_start, temporary_locks=temporary_locks
        )
        return FailureOutcome(counted, None, failures)
    number = temporary_locks + 1
    duration = None if number > config.max_temporary_locks else lock_duration(config, number)
    new_state = FailureState(failures=0, window_started_at=None, temporary_locks=number, last_lock_at=at)
    return FailureOutcome(new_state, LockOrder(duration, number), failures)


def register_success(state: FailureState) -> FailureState:
    """Reset the failure count after a successful login (lock history is kept)."""
    return replace(state, failures=0, window_started_at=None)


def failures_in_window(config: BruteForceConfig, state: FailureState, at: datetime) -> int:
    """Return the failures that still count at ``at`` (0 once the window has passed)."""
    if state.window_started_at is None or at - state.window_started_at >= config.failure_window:
        return 0
    return state.failures


@dataclass(frozen=True)
class IpThrottle:
    """Whether an IP is throttled and for how many whole seconds."""

    throttled: bool
    retry_after_seconds: int
    failures_in_window: int


def ip_throttle(config: BruteForceConfig, recent_failures: Sequence[datetime], at: datetime) -> IpThrottle:
    """Decide whether an IP is throttled at ``at`` given its recent failure times (any order).

    Throttled while ``ip_max_failures`` or more failures lie in the sliding window; it ends when the
    oldest of the newest ``ip_max_failures`` failures leaves the window.
    """
    window = config.ip_window
    in_window = sorted((t for t in recent_failures if at - window < t <= at), reverse=True)
    if len(in_window) < config.ip_max_failures:
        return IpThrottle(False, 0, len(in_window))
    pivot = in_window[config.ip_max_failures - 1]
    retry_after = max(1, math.ceil((pivot + window - at).total_seconds()))
    return IpThrottle(True, retry_after, len(in_window))
