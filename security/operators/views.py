"""HTTP: operator bearer tokens and who-am-I (``/v1/review/...``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, g

from security.credentials.ratelimit import KeyedRateLimits, client_ip
from security.credentials.views import LIMITS_KEY
from security.errors import Unauthenticated
from security.operators import cli
from security.operators.auth import (
    SETTINGS_KEY,
    OperatorBearer,
    current_operator,
    operator_service,
    operator_settings,
)
from security.operators.models import SessionKind
from security.operators.policy import Permission
from security.operators.schemas import OperatorList, OperatorOut, TokenIn, TokenOut
from security.operators.settings import OperatorSettings
from security.runtime import runtime
from security.web import openapi
from security.web.api import operation
from security.web.deps import deps
from security.web.problems import from_error

bp = Blueprint("review_auth", __name__)


class SignInFailed(Unauthenticated):
    code = "sign_in_failed"
    title = "Sign-in failed"


SIGN_IN_FAILED_DETAIL = "The name, password or code is not correct, or the operator cannot sign in now."
"""The same words for every cause: never say which factor failed or whether the operator exists."""


SIGN_IN_IP_SCOPE = "operator-sign-in:ip"
"""One counter per client IP for the console sign-in and the token request together."""


def limit_sign_in_attempts() -> None:
    """Count this sign-in attempt against its IP; 429 with ``Retry-After`` when over ``sign_ins_per_ip``.

    Counted in the ``limits`` storage (Redis when configured, shared by every worker) through the credentials
    slice's keyed limiter, like the other public credential endpoints. Checked before any password work.
    """
    limits: KeyedRateLimits = runtime().extras[LIMITS_KEY]
    limits.hit(operator_settings(deps()).sign_ins_per_ip, scope=SIGN_IN_IP_SCOPE, key=client_ip())


def sign_in_failed() -> Response:
    """The 401 for a refused sign-in, *returned* (not raised) so the failure counter is committed."""
    return from_error(SignInFailed(SIGN_IN_FAILED_DETAIL))


@operation(
    bp, "/v1/review/tokens", method="POST", body=TokenIn, response=TokenOut, status=201,
    summary="Exchange an operator's password and TOTP code for a bearer token", tags=["review"],
    errors={401: "Sign-in failed (the cause is never told)", 429: "Too many sign-in attempts from this address"},
)
def create_token(body: TokenIn) -> TokenOut | Response:
    """Failed attempts count toward the operator's lockout; a TOTP code is accepted once only. Attempts
    from one address are also limited across operator names (429 with Retry-After)."""
    limit_sign_in_attempts()
    service = operator_service(deps())
    result = service.sign_in(body.name, body.password, body.totp_code)
    if not result.ok or result.operator is None:
        return sign_in_failed()
    issued = service.start_session(result.operator, SessionKind.API)
    return TokenOut(token=issued.token, expires_at=issued.session.expires_at, operator=OperatorOut.of(result.operator))


@operation(
    bp, "/v1/review/tokens/current", method="DELETE", status=204, auth=OperatorBearer(Permission.CASES_READ),
    summary="Revoke the bearer token of this request", tags=["review"],
)
def revoke_token() -> None:
    operator_service(deps()).end_session(g.operator_token)


@operation(
    bp, "/v1/review/me", response=OperatorOut, auth=OperatorBearer(Permission.CASES_READ),
    summary="The operator the token belongs to, with their permissions", tags=["review"],
)
def me() -> OperatorOut:
    return OperatorOut.of(current_operator())


@operation(
    bp, "/v1/review/operators", response=OperatorList, auth=OperatorBearer(Permission.OPERATORS_MANAGE),
    summary="List operators (admins)", tags=["review"],
)
def list_operators() -> OperatorList:
    return OperatorList(operators=[OperatorOut.of(o) for o in operator_service(deps()).list()])


def _operator_token_scheme(document: dict[str, Any]) -> None:
    document["components"]["securitySchemes"]["operatorToken"] = {
        "type": "http", "scheme": "bearer",
        "description": "Operator token from POST /v1/review/tokens (password + TOTP); expires",
    }


openapi.EXTRA_SECTIONS.append(_operator_token_scheme)


def init_app(app: Flask) -> None:
    rt = runtime(app)
    # An invalid [operators] section (e.g. a malformed rate) fails at start, not at the first sign-in.
    rt.extras[SETTINGS_KEY] = OperatorSettings.from_settings(rt.settings)
    app.register_blueprint(bp)
    app.cli.add_command(cli.operators_cli)
