"""The operator console (``/console``): sign-in, dashboard, service clients.

Views only parse the form, call a service and render a template. Permissions and CSRF are checked by
``security.operators.auth.console_page`` (the same ``authorize`` the JSON API uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from flask import Blueprint, Flask, Response, g, redirect, render_template, request, url_for
from markupsafe import Markup
from pydantic import BaseModel
from werkzeug.wrappers import Response as BaseResponse

from security.clients.services import ClientService
from security.console.charts import bar_chart_svg
from security.console.dashboard import build_dashboard
from security.console.formatting import humanize_age, utc
from security.crypto import constant_time_equals
from security.errors import FoxguardError, InvalidInput
from security.operators.auth import (
    CSRF_FIELD,
    SAFE_METHODS,
    CsrfRejected,
    can,
    console_page,
    current_console_session,
    current_operator,
    operator_service,
    operator_settings,
    session_cookie_name,
)
from security.operators.models import SessionKind
from security.operators.policy import Permission
from security.operators.services import actor_of
from security.operators.views import SIGN_IN_FAILED_DETAIL, limit_sign_in_attempts
from security.permissions import ALL_SCOPES
from security.web.api import validate
from security.web.deps import deps
from security.web.transaction import abandon_request_session

bp = Blueprint(
    "console", __name__, url_prefix="/console", template_folder="templates",
    static_folder="static", static_url_path="/static",
)

# A script-free console: no inline or external scripts at all, styles only from our own CSS file.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"
"""Two years (the hstspreload.org minimum is one); sent only over https, where it means something."""
SIGN_IN_CSRF_BYTES = 32
MAX_FIELD_CHARS = 1024
"""Longer form fields are cut (they are wrong anyway); bounds the work spent on hashing a 'password'."""


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    permission: Permission


# The case pages (queue, timeline, appeals, deny lists) add their entries here.
NAV_ITEMS: list[NavItem] = [
    NavItem("console.dashboard", "Dashboard", Permission.CASES_READ),
    NavItem("console.clients", "Service clients", Permission.CLIENTS_MANAGE),
]


def _sign_in_cookie_name() -> str:
    return "__Host-fg_signin" if operator_settings(deps()).secure_cookies else "fg_signin"


def _field(name: str) -> str:
    return request.form.get(name, "")[:MAX_FIELD_CHARS]


Query = TypeVar("Query", bound=BaseModel)


def filter_query(model: type[Query]) -> tuple[Query, dict[str, str]]:
    """The GET filter form's fields as ``model``, and those fields without ``page`` (for the page links).

    An empty field means "no filter", and white space typed around a value is dropped (the JSON API takes
    values as sent).
    """
    args = {k: v.strip() for k, v in request.args.items() if v.strip()}
    query = validate(model, args, "query")
    assert isinstance(query, model)  # noqa: S101 - validate returns the model it was given
    return query, {k: v for k, v in args.items() if k != "page"}


def safe_next(target: str | None, default: str | None = None) -> str:
    """Only redirect to console paths (never to another site: no open redirect)."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return default or url_for("console.dashboard")


def _set_cookie(response: BaseResponse, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path="/", secure=operator_settings(deps()).secure_cookies, httponly=True, samesite="Strict"
    )


@bp.get("/sign-in")
def sign_in() -> Response:
    token = request.cookies.get(_sign_in_cookie_name()) or deps().entropy.token_urlsafe(SIGN_IN_CSRF_BYTES)
    response = Response(render_template("console/sign_in.html", signin_csrf=token, next=request.args.get("next")))
    _set_cookie(response, _sign_in_cookie_name(), token)
    return response


@bp.post("/sign-in")
def sign_in_submit() -> BaseResponse:
    # Login CSRF: before there is a session, the token is double-submitted (cookie + field).
    expected = request.cookies.get(_sign_in_cookie_name(), "")
    sent = request.form.get(CSRF_FIELD, "")
    if not expected or not sent or not constant_time_equals(expected, sent):
        raise CsrfRejected("The sign-in form's security token is missing or does not match.")
    limit_sign_in_attempts()
    d = deps()
    service = operator_service(d)
    result = service.sign_in(_field("name"), _field("password"), _field("totp_code"))
    if not result.ok or result.operator is None:
        # Returned, not raised: the failed attempt and the lockout counter are committed.
        page = render_template(
            "console/sign_in.html", signin_csrf=expected, next=request.form.get("next"), error=SIGN_IN_FAILED_DETAIL,
            name=_field("name")[:64],
        )
        return Response(page, status=401)
    cookie = session_cookie_name(operator_settings(d))
    issued = service.start_session(result.operator, SessionKind.CONSOLE, replacing=request.cookies.get(cookie))
    response = redirect(safe_next(request.form.get("next")), code=303)
    _set_cookie(response, cookie, issued.token)
    response.delete_cookie(_sign_in_cookie_name(), path="/", secure=operator_settings(d).secure_cookies)
    return response


@bp.post("/sign-out")
@console_page(Permission.CASES_READ)
def sign_out() -> BaseResponse:
    d = deps()
    operator_service(d).end_session(g.console_token)
    response = redirect(url_for("console.sign_in"), code=303)
    response.delete_cookie(session_cookie_name(operator_settings(d)), path="/",
                           secure=operator_settings(d).secure_cookies, httponly=True, samesite="Strict")
    return response


@bp.get("/")
@console_page(Permission.CASES_READ)
def dashboard() -> str:
    d = deps()
    charts = [(chart, Markup(bar_chart_svg(chart, element_id=f"chart-{chart.key}")))  # noqa: S704 - escaped
              for chart in build_dashboard(d.session, now=d.clock.now())]
    return render_template("console/dashboard.html", charts=charts)


def _client_service() -> ClientService:
    d = deps()
    return ClientService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit)


@bp.get("/clients")
@console_page(Permission.CLIENTS_MANAGE)
def clients() -> str:
    return render_template("console/clients.html", clients=_client_service().list(), scopes=ALL_SCOPES)


@bp.post("/clients")
@console_page(Permission.CLIENTS_MANAGE)
def clients_create() -> tuple[str, int]:
    name = _field("name").strip()
    scopes = request.form.getlist("scopes")
    try:
        issued = _client_service().create(name, scopes, actor=actor_of(current_operator()))
    except FoxguardError as error:
        # Validation happens before anything is written, so re-showing the form loses nothing.
        abandon_request_session()
        page = render_template(
            "console/clients.html", clients=_client_service().list(), scopes=ALL_SCOPES, error=error.detail,
            name=name, chosen=scopes,
        )
        return page, error.status
    return render_template("console/client_created.html", issued=issued), 201


@bp.post("/clients/<name>/revoke")
@console_page(Permission.CLIENTS_MANAGE)
def clients_revoke(name: str) -> BaseResponse:
    _client_service().revoke(name, actor=actor_of(current_operator()))
    return redirect(url_for("console.clients"), code=303)


NUL = "\x00"


@bp.before_request
def _refuse_nul_characters() -> None:
    """PostgreSQL text cannot hold U+0000: refuse it in any form field or query parameter (422, not 500)."""
    for source in (request.args, request.form):
        for key, value in source.items(multi=True):
            if NUL in key or NUL in value:
                raise InvalidInput("Form fields and parameters may not contain NUL characters.")


@bp.errorhandler(FoxguardError)
def _render_error(error: FoxguardError) -> Response:
    """Console errors as pages (the JSON API keeps problem+json); the transaction is rolled back first."""
    abandon_request_session()
    response = Response(render_template("console/error.html", error=error), status=error.status)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:  # 429 and 503 say when to come back, as the JSON API does
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.after_request
def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
    if request.endpoint != "console.static":
        # Pages show account data and one-time API keys: never store them in any cache.
        headers["Cache-Control"] = "no-store"
    if request.is_secure:
        headers["Strict-Transport-Security"] = HSTS
    return response


@bp.context_processor
def _template_context() -> dict[str, object]:
    operator = g.get("operator")
    csrf = current_console_session().csrf_token if g.get("console_session") is not None else None
    nav = [item for item in NAV_ITEMS if can(item.permission)] if operator is not None else []
    return {"operator": operator, "csrf_token": csrf, "nav": nav, "can": can, "Permission": Permission,
            "csrf_field": CSRF_FIELD, "age": humanize_age, "utc": utc}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


# The case pages register their routes on ``bp``; imported last because they use the names above.
from security.console import appeals, cases, denylist  # noqa: E402

__all__ = ["NAV_ITEMS", "SAFE_METHODS", "NavItem", "appeals", "bp", "cases", "denylist", "init_app", "safe_next"]
