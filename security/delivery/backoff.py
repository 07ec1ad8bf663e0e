"""Retry schedule for outbox deliveries: exponential-ish backoff with jitter, then dead-letter.

The default follows the Standard Webhooks example schedule, shortened to about 17.5 hours: the first
attempt is immediate, then retries after 5 s, 5 min, 30 min, 2 h, 5 h and 10 h; a message that
fails its seventh attempt is dead (kept, listed for operators, re-queued by ``outbox retry``).

Jitter spreads retries of messages that failed together (a receiver outage) so they do not all
come back in the same second. It is drawn from an injected :class:`Entropy` so tests can pin it.

Pure module: no Flask, no SQLAlchemy, no wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from security.entropy import Entropy

DEFAULT_RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
# Each delay is moved by up to +-10 %: enough to break up a thundering herd after an outage,
# small enough that the schedule stays recognisable to whoever reads the dead-letter list.
DEFAULT_JITTER_RATIO = 0.1
# Jitter is drawn in whole milliseconds.
_JITTER_RESOLUTION = timedelta(milliseconds=1)
# Never honour a receiver's Retry-After beyond this; it must not park a message for days.
MAX_RETRY_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class RetryAt:
    """Try again at ``at`` (``delay`` after the failed attempt, jitter included)."""

    at: datetime
    delay: timedelta


@dataclass(frozen=True)
class DeadLetter:
    """Give up: every scheduled attempt failed."""

    attempts: int


@dataclass(frozen=True)
class BackoffPolicy:
    """When to retry after the n-th failed attempt."""

    delays: tuple[timedelta, ...] = DEFAULT_RETRY_DELAYS
    jitter_ratio: float = DEFAULT_JITTER_RATIO

    def __post_init__(self) -> None:
        if any(delay < timedelta(0) for delay in self.delays):
            raise ValueError("retry delays must not be negative")
        if not 0.0 <= self.jitter_ratio < 1.0:
            raise ValueError("jitter_ratio must be in [0, 1)")

    @property
    def max_attempts(self) -> int:
        """Total attempts before a message is dead: the first one plus one per delay."""
        return len(self.delays) + 1

    def after_failure(
        self,
        attempts: int,
        *,
        now: datetime,
        entropy: Entropy,
        retry_after: timedelta | None = None,
    ) -> RetryAt | DeadLetter:
        """Decide what follows the failure of attempt number ``attempts`` (1-based) made at ``now``.

        A ``retry_after`` hint from the receiver (HTTP ``Retry-After``) can only lengthen the wait,
        capped at :data:`MAX_RETRY_AFTER`.
        """
        if attempts < 1:
            raise ValueError("attempts counts the attempt that just failed, so it starts at 1")
        if attempts > len(self.delays):
            return DeadLetter(attempts=attempts)
        delay = self._jittered(self.delays[attempts - 1], entropy)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return RetryAt(at=now + delay, delay=delay)

    def _jittered(self, base: timedelta, entropy: Entropy) -> timedelta:
        spread_units = int(base * self.jitter_ratio / _JITTER_RESOLUTION)
        if spread_units == 0:
            return base
        # Uniform in [-spread, +spread] milliseconds.
        offset_units = entropy.randbelow(2 * spread_units + 1) - spread_units
        return base + offset_units * _JITTER_RESOLUTION
