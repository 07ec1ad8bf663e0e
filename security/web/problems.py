"""The one place where errors become HTTP responses (RFC 9457 problem+json)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from security.errors import Conflict, FoxguardError, StaleVersion, Unavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://foxguard.dev/problems/"
log = logging.getLogger("security.web")

# Stable codes for the HTTP errors Werkzeug raises itself (routing, body size, methods).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """Build a problem+json response; ``extra`` members are added to the body."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


#: deadlock_detected, serialization_failure: the database aborted the loser of a concurrent change.
CONCURRENCY_SQLSTATES = frozenset({"40P01", "40001"})


def from_error(error: FoxguardError) -> Response:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="foxguard"'
    return problem(
        error.status, error.code, error.title, error.detail, headers=headers, errors=error.errors, **error.extra
    )


def from_exception(exc: BaseException) -> Response:
    """Map any exception to a problem response (also used when a commit fails)."""
    if isinstance(exc, FoxguardError):
        return from_error(exc)
    if isinstance(exc, StaleDataError):
        return from_error(StaleVersion())
    if isinstance(exc, IntegrityError):
        log.info("integrity conflict", extra={"error": exc.orig.__class__.__name__})
        return from_error(Conflict("The change conflicts with existing data (it may have been made already)."))
    if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) in CONCURRENCY_SQLSTATES:
        # PostgreSQL aborted this transaction to let a concurrent one win: a conflict, not an outage.
        log.info("concurrent change", extra={"error": exc.orig.__class__.__name__})
        return from_error(Conflict("The record was changed concurrently; nothing was changed. Reload and retry."))
    if isinstance(exc, OperationalError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.warning("database unavailable", extra={"error": exc.__class__.__name__})
        return from_error(Unavailable("The database is unavailable; nothing was changed. Retry later."))
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        headers = {}
        if status == 429 and exc.response is not None and "Retry-After" in exc.response.headers:
            headers["Retry-After"] = exc.response.headers["Retry-After"]
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem(status, HTTP_CODES.get(status, f"http_{status}"), exc.name, exc.description, headers=headers)
    log.exception("unhandled error")
    return problem(500, "internal_error", "Internal error", "An unexpected error occurred; quote the request id.")


def init_app(app: Flask) -> None:
    """Route every error through :func:`from_exception`, after rolling the request's transaction back."""
    from security.web.transaction import abandon_request_session

    def handle(exc: BaseException) -> Response:
        abandon_request_session()
        return from_exception(exc)

    app.register_error_handler(Exception, handle)
    app.register_error_handler(HTTPException, handle)
