"""Keyed rate limits for the public credential endpoints, on Flask-Limiter's storage.

Flask-Limiter supplies the storage (Redis when ``FOXGUARD_REDIS_URL`` is set, so every worker and host
shares the counters; process memory otherwise) and the moving-window strategy. The keys are ours: the
client IP, and a digest of the submitted identifier (never the e-mail or phone itself), which a
route decorator could not see before the body is validated. A breach raises
:class:`~security.errors.TooManyRequests`, so the 429 comes out of the one error mapping with its
``Retry-After``.
"""

from __future__ import annotations

import math

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from redis.exceptions import RedisError

from security.clock import SystemClock
from security.crypto import sha256_hex
from security.errors import TooManyRequests, Unavailable

MEMORY_STORAGE = "memory://"
STRATEGY = "moving-window"
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

    def __init__(self, limiter: Limiter, *, key_prefix: str) -> None:
        self._limiter = limiter
        # Direct strategy calls bypass Flask-Limiter's own prefixing, so the namespace is added here.
        self._prefix = key_prefix
        # Window arithmetic happens in the storage's own time (Redis TTLs), i.e. the wall clock.
        self._wall_clock = SystemClock()

    def hit(self, rate: str, *, scope: str, key: str) -> None:
        """Count one hit; raise :class:`RateLimitExceeded` (with ``retry_after``) when over the limit."""
        item = parse(rate)
        strategy = self._limiter.limiter
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
    return get_remote_address()


def identifier_key(identifier: str) -> str:
    """Rate-limit key of a submitted identifier: normalised, then hashed so no contact data is stored."""
    return sha256_hex(KEY_DIGEST_DOMAIN + identifier.strip().lower())


def make_limiter(app: Flask, *, redis_url: str | None, key_prefix: str) -> KeyedRateLimits:
    """Attach a Flask-Limiter (no default limits) to ``app`` and wrap it for keyed checks."""
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=redis_url or MEMORY_STORAGE,
        strategy=STRATEGY,
        key_prefix=key_prefix,
        headers_enabled=False,
    )
    return KeyedRateLimits(limiter, key_prefix=key_prefix)
