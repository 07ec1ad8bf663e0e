"""Retry schedule with jitter, then dead-letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from security.delivery.backoff import (
    DEFAULT_RETRY_DELAYS,
    MAX_RETRY_AFTER,
    BackoffPolicy,
    DeadLetter,
    RetryAt,
)
from security.entropy import SeededEntropy

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
EXPECTED = [
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
]


class FixedEntropy(SeededEntropy):
    """Always returns the same randbelow value so jitter is an exact, known offset."""

    def __init__(self, value: int | None) -> None:
        super().__init__(0)
        self.value = value
        self.uppers: list[int] = []

    def randbelow(self, upper: int) -> int:
        self.uppers.append(upper)
        return upper - 1 if self.value is None else self.value


def test_default_schedule_is_the_documented_one() -> None:
    assert list(DEFAULT_RETRY_DELAYS) == EXPECTED
    assert BackoffPolicy().max_attempts == 7


def test_without_jitter_each_failure_maps_to_its_delay_then_dead() -> None:
    policy = BackoffPolicy(jitter_ratio=0.0)
    for attempts, delay in enumerate(EXPECTED, start=1):
        decision = policy.after_failure(attempts, now=NOW, entropy=SeededEntropy(1))
        assert decision == RetryAt(at=NOW + delay, delay=delay)
    assert policy.after_failure(7, now=NOW, entropy=SeededEntropy(1)) == DeadLetter(attempts=7)


def test_jitter_extremes_are_plus_minus_ten_percent() -> None:
    policy = BackoffPolicy()
    lowest = policy.after_failure(3, now=NOW, entropy=FixedEntropy(0))
    highest_entropy = FixedEntropy(None)
    highest = policy.after_failure(3, now=NOW, entropy=highest_entropy)
    assert isinstance(lowest, RetryAt)
    assert isinstance(highest, RetryAt)
    assert lowest.delay == timedelta(minutes=27)
    assert highest.delay == timedelta(minutes=33)
    # 30 min = 1_800_000 ms; +-10 % = 180_000 ms either side, inclusive.
    assert highest_entropy.uppers == [2 * 180_000 + 1]


def test_jitter_spreads_retries_of_messages_that_failed_together() -> None:
    policy = BackoffPolicy()
    entropy = SeededEntropy(42)
    delays = []
    for _ in range(200):
        decision = policy.after_failure(2, now=NOW, entropy=entropy)
        assert isinstance(decision, RetryAt)
        assert timedelta(minutes=4, seconds=30) <= decision.delay <= timedelta(minutes=5, seconds=30)
        delays.append(decision.delay)
    assert len(set(delays)) > 150  # not all at the same instant


def test_retry_after_can_only_lengthen_and_is_capped() -> None:
    policy = BackoffPolicy(jitter_ratio=0.0)
    short = policy.after_failure(2, now=NOW, entropy=SeededEntropy(1), retry_after=timedelta(seconds=10))
    assert isinstance(short, RetryAt)
    assert short.delay == timedelta(minutes=5)
    longer = policy.after_failure(2, now=NOW, entropy=SeededEntropy(1), retry_after=timedelta(hours=1))
    assert isinstance(longer, RetryAt)
    assert longer.delay == timedelta(hours=1)
    huge = policy.after_failure(1, now=NOW, entropy=SeededEntropy(1), retry_after=timedelta(days=30))
    assert isinstance(huge, RetryAt)
    assert huge.delay == MAX_RETRY_AFTER


def test_retry_after_does_not_revive_a_dead_message() -> None:
    policy = BackoffPolicy(delays=(timedelta(seconds=1),))
    decision = policy.after_failure(2, now=NOW, entropy=SeededEntropy(1), retry_after=timedelta(seconds=5))
    assert decision == DeadLetter(attempts=2)


def test_custom_short_schedule_for_tests_and_dev() -> None:
    policy = BackoffPolicy(delays=(timedelta(0), timedelta(0)), jitter_ratio=0.5)
    first = policy.after_failure(1, now=NOW, entropy=SeededEntropy(3))
    assert first == RetryAt(at=NOW, delay=timedelta(0))
    assert isinstance(policy.after_failure(3, now=NOW, entropy=SeededEntropy(3)), DeadLetter)


@pytest.mark.parametrize(
    "kwargs", [{"delays": (timedelta(seconds=-1),)}, {"jitter_ratio": 1.0}, {"jitter_ratio": -0.1}]
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        BackoffPolicy().after_failure(0, now=NOW, entropy=SeededEntropy(1))
