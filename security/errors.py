"""Domain errors. Raised anywhere, turned into HTTP in exactly one place (``security.web.problems``).

Each class carries the status and a stable machine-readable ``code`` that becomes the problem ``type``.
Raising means "nothing happened": the request's transaction is rolled back.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FoxguardError(Exception):
    """Base of every error that reaches a client with a specific status."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, errors: list[dict[str, Any]] | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.extra = extra


class BadRequest(FoxguardError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class InvalidInput(FoxguardError):
    status = 422
    code = "invalid_input"
    title = "The request body or parameters are not valid"


class Unauthenticated(FoxguardError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(FoxguardError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(FoxguardError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(FoxguardError):
    status = 409
    code = "conflict"
    title = "Conflict with the current state"


class PayloadTooLarge(FoxguardError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class TooManyRequests(FoxguardError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **extra: Any):
        super().__init__(detail, **extra)
        self.retry_after = max(1, int(retry_after))


class Unavailable(FoxguardError):
    status = 503
    code = "unavailable"
    title = "Service temporarily unavailable"


class WeakPassword(InvalidInput):
    code = "weak_password"
    title = "The password does not meet the password policy"


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "No such account"


class StaleVersion(Conflict):
    code = "stale_version"
    title = "The resource was changed by someone else; reload and retry"
