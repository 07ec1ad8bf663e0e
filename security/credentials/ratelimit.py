"""Keyed rate limits for the public credential endpoints, on the ``limits`` library.

``limits`` supplies the storage (Redis when ``FOXGUARD_REDIS_URL`` is set, so every worker and host
shares the counters; process memory otherwise) and the moving-window strategy. The keys are ours: the
client IP, and a digest of the submitted identifier (never the e-mail or phone itself), which a
route decorator could not see before the body is validated. (Flask-Limiter, which wraps the same
library, was used for that alone; its per-request hooks ran on every request and checked nothing.) A breach raises
:class:`~security.errors.TooManyRequests`, so the 429 comes out of the one error mapping with its
``Retry-After``.
"""

from __future__ import annotations

import math

from flask import request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from redis.exceptions import RedisError

from security.clock import SystemClock
from security.crypto import sha256_hex
from security.errors import TooManyRequests, Unavailable

MEMORY_STORAGE = "memory://"
#: The address of a request without one (a test client, a UNIX socket).
UNKNOWN_ADDRESS = "127.0.0.1"
KEY_DIGEST_DOMAIN = "foxguard:rate-key:v1:"
RETRY_WHEN_STORAGE_DOWN_S = 30


class RateLimitExceeded(TooManyRequests):
    code = "rate_limited"
    title = "Too many requests"


class RateLimiterUnavailable(Unavailable):
    code = "rate_limiter_unavailable"
    title = "Rate limiting is temporarily unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # sent as Retry-After by the one error mapping


class KeyedRateLimits:
    """Check-and-count hits per (scope, key) against a rate like ``"5 per hour"``."""

    def __init__(self, limiter: RateLimiter, *, key_prefix: str) -> None:
        self._limiter = limiter
        # Every key starts with this namespace (several apps or environments can share one Redis).
        self._prefix = key_prefix
        # Window arithmetic happens in the storage's own time (Redis TTLs), i.e. the wall clock.
        self._wall_clock = SystemClock()

    def hit(self, rate: str, *, scope: str, key: str) -> None:
        """Count one hit; raise :class:`RateLimitExceeded` (with ``retry_after``) when over the limit."""
        item = parse(rate)
        strategy = self._limiter
        try:
            if strategy.hit(item, self._prefix, scope, key):
                return
            stats = strategy.get_window_stats(item, self._prefix, scope, key)
        except (RedisError, OSError) as exc:
            # Fail closed: without the shared counters these endpoints would be open to enumeration
            # and token-guessing at full speed. 503 tells the client to come back.
            raise RateLimiterUnavailable("Try again shortly.", retry_after=RETRY_WHEN_STORAGE_DOWN_S) from exc
        retry_after = math.ceil(stats.reset_time - self._wall_clock.now().timestamp())
        raise RateLimitExceeded("Too many requests; retry later.", retry_after=max(1, retry_after))


def client_ip() -> str:
    """The caller's address (``ProxyFix`` has already applied the trusted-proxy setting)."""
    return request.remote_addr or UNKNOWN_ADDRESS


def identifier_key(identifier: str) -> str:
    """Rate-limit key of a submitted identifier: normalised, then hashed so no contact data is stored."""
    return sha256_hex(KEY_DIGEST_DOMAIN + identifier.strip().lower())


def make_limiter(*, redis_url: str | None, key_prefix: str) -> KeyedRateLimits:
    """Keyed moving-window limits on Redis (``redis_url``) or, without it, this process's memory."""
    storage = storage_from_string(redis_url or MEMORY_STORAGE)
    return KeyedRateLimits(MovingWindowRateLimiter(storage), key_prefix=key_prefix)
