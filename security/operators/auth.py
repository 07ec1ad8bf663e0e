"""Who the operator is, and the ONE place operator permissions are checked.

``authorize`` is called by both front doors: :class:`OperatorBearer` (the ``@operation`` authenticator
of the ``/v1/review/...`` JSON API) and :func:`console_page` (the console's page decorator, which also
checks the session's CSRF token on every state-changing request).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from security.clients.auth import bearer_token
from security.crypto import constant_time_equals
from security.errors import Forbidden, Unauthenticated
from security.operators.models import Operator, OperatorSession, SessionKind
from security.operators.policy import Permission, allowed
from security.operators.services import API_TOKEN_PREFIX, OperatorService, actor_of
from security.operators.settings import OperatorSettings
from security.web.deps import Deps, deps

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
SETTINGS_KEY = "operators.settings"


class PermissionDenied(Forbidden):
    code = "permission_denied"
    title = "Your role does not allow this action"


class CsrfRejected(Forbidden):
    code = "csrf_rejected"
    title = "The form is stale or was not sent from the console; reload the page and try again"


def operator_settings(d: Deps) -> OperatorSettings:
    """The validated ``[operators]`` section (parsed once per app, kept with the runtime)."""
    cached: OperatorSettings | None = d.runtime.extras.get(SETTINGS_KEY)
    if cached is None:
        cached = OperatorSettings.from_settings(d.settings)
        d.runtime.extras[SETTINGS_KEY] = cached
    return cached


def operator_service(d: Deps) -> OperatorService:
    return OperatorService(
        d.session,
        clock=d.clock,
        entropy=d.entropy,
        audit=d.audit,
        hasher=d.passwords,
        policy=d.password_policy,
        secret_box=d.secret_box,
        settings=operator_settings(d),
    )


def authorize(operator: Operator, permission: Permission) -> None:
    """Raise :class:`PermissionDenied` unless ``operator``'s role grants ``permission``."""
    if not allowed(operator.role, permission):
        raise PermissionDenied(f"This action needs the permission '{permission}'.")


def _bind(operator: Operator) -> str:
    g.operator = operator
    g.actor = actor_of(operator)
    return actor_of(operator)


def current_operator() -> Operator:
    """The signed-in operator of this request (only inside an operator-authenticated view)."""
    operator: Operator = g.operator
    return operator


def can(permission: Permission) -> bool:
    """Whether the current operator holds ``permission`` (templates use it to hide what they cannot do)."""
    operator: Operator | None = g.get("operator")
    return operator is not None and allowed(operator.role, permission)


class OperatorBearer:
    """``Authorization: Bearer fgo_...`` (from ``POST /v1/review/tokens``) holding ``permission``."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    def authenticate(self) -> str:
        token = bearer_token()
        if token is None or not token.startswith(API_TOKEN_PREFIX):
            raise Unauthenticated("Send an operator token as 'Authorization: Bearer <token>'.")
        resolved = operator_service(deps()).resolve(token, SessionKind.API)
        if resolved is None:
            raise Unauthenticated("The operator token is not valid, was revoked or has expired.")
        _session, operator = resolved
        authorize(operator, self.permission)
        g.operator_token = token
        return _bind(operator)

    def openapi_security(self) -> list[dict[str, list[str]]]:
        return [{"operatorToken": [str(self.permission)]}]

    def describe(self) -> str:
        return f"operator token with permission {self.permission}"


def session_cookie_name(settings: OperatorSettings) -> str:
    """``__Host-`` pins the cookie to this host and path ``/``; browsers only accept it when Secure."""
    return "__Host-fg_session" if settings.secure_cookies else "fg_session"


def current_console_session() -> OperatorSession:
    row: OperatorSession = g.console_session
    return row


def check_csrf(expected: str | None) -> None:
    """Compare the form's synchronizer token with the one bound to the session (constant time)."""
    sent = request.form.get(CSRF_FIELD, "")
    if not expected or not sent or not constant_time_equals(sent, expected):
        raise CsrfRejected("The form's security token is missing or does not match your session.")


def console_page(permission: Permission) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a console view: signed-in session required (else sign-in), CSRF on posts, ``permission``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Any:
            d = deps()
            token = request.cookies.get(session_cookie_name(operator_settings(d)))
            resolved = operator_service(d).resolve(token, SessionKind.CONSOLE) if token else None
            if resolved is None:
                if request.method in SAFE_METHODS:
                    target: BaseResponse = redirect(url_for("console.sign_in", next=request.path), code=303)
                    return target
                raise Unauthenticated("Your session has ended; sign in again.")
            row, operator = resolved
            g.console_session = row
            g.console_token = token
            if request.method not in SAFE_METHODS:
                check_csrf(row.csrf_token)
            _bind(operator)
            authorize(operator, permission)
            return fn(**kwargs)

        return view

    return decorator
