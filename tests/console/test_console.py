from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from security import create_app
from security.audit.models import AuditEntry
from security.clients.models import ServiceClient
from security.config import load_settings
from security.console.dashboard import CHART_SOURCES
from security.operators.models import OperatorSession
from security.operators.views import SIGN_IN_FAILED_DETAIL
from tests.conftest import joined_session

STEP = timedelta(seconds=30)
SESSION_COOKIE = "__Host-fg_session"
SIGNIN_COOKIE = "__Host-fg_signin"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client, op, clock, *, code=None, password=None, csrf=True, next_path=None):
    client.get("/console/sign-in")
    form = {"name": op.name, "password": password or op.password, "totp_code": code or op.code(clock.now())}
    if csrf:
        form["csrf_token"] = client.get_cookie(SIGNIN_COOKIE).value
    if next_path:
        form["next"] = next_path
    return client.post("/console/sign-in", data=form)


def page_csrf(client, path="/console/"):
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def test_pages_carry_security_headers(client):
    response = client.get("/console/sign-in")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # default-src 'none' forbids every script
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers
    secure = client.get("/console/sign-in", base_url="https://console.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_css_is_served_from_the_package(client):
    with client.get("/console/static/console.css") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/css"
        assert "svg.chart .bar" in response.get_data(as_text=True)
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_need_a_session(client):
    response = client.get("/console/")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/console/sign-in?next=/console/")


def test_sign_in_sets_a_strict_session_cookie_and_redirects(client, clock, new_operator, db_session):
    op = new_operator("alice", "reviewer")
    response = sign_in(client, op, clock)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/"
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(SESSION_COOKIE + "="))
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= flags
    assert "SameSite=Strict" in cookie
    token = client.get_cookie(SESSION_COOKIE).value
    assert token not in db_session.scalars(select(OperatorSession.token_hash)).all()
    dashboard = client.get("/console/")
    assert dashboard.status_code == 200
    assert "alice" in dashboard.get_data(as_text=True)


def test_failures_show_one_generic_message(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    wrong_code = "000000" if op.code(clock.now()) != "000000" else "111111"
    responses = [
        sign_in(client, op, clock, code=wrong_code),
        sign_in(client, op, clock, password="wrong-password-entirely"),
    ]
    client.get("/console/sign-in")
    responses.append(client.post("/console/sign-in", data={
        "name": "nobody", "password": "whatever", "totp_code": "123456",
        "csrf_token": client.get_cookie(SIGNIN_COOKIE).value,
    }))
    for response in responses:
        assert response.status_code == 401
        assert SIGN_IN_FAILED_DETAIL in response.get_data(as_text=True)
        assert client.get_cookie(SESSION_COOKIE) is None


def test_sign_in_without_the_form_token_is_refused(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    response = sign_in(client, op, clock, csrf=False)
    assert response.status_code == 403
    assert client.get_cookie(SESSION_COOKIE) is None


def test_sign_in_rotates_the_session(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    sign_in(client, op, clock)
    first = client.get_cookie(SESSION_COOKIE).value
    clock.advance(STEP)
    sign_in(client, op, clock)
    second = client.get_cookie(SESSION_COOKIE).value
    assert first != second
    client.set_cookie(SESSION_COOKIE, first)
    assert client.get("/console/").status_code == 303  # the old session was revoked


def test_idle_timeout(client, clock, new_operator):
    op = new_operator("alice", "viewer")
    sign_in(client, op, clock)
    clock.advance(minutes=14)
    assert client.get("/console/").status_code == 200  # activity extends the idle window
    clock.advance(minutes=14)
    assert client.get("/console/").status_code == 200
    clock.advance(minutes=15)
    assert client.get("/console/").status_code == 303


def test_absolute_timeout(client, clock, new_operator):
    op = new_operator("alice", "viewer")
    sign_in(client, op, clock)
    for _ in range(47):  # 47 x 10 min = 7 h 50 min of steady use
        clock.advance(minutes=10)
        assert client.get("/console/").status_code == 200
    clock.advance(minutes=10)
    assert client.get("/console/").status_code == 303


def test_viewer_sees_no_admin_pages_and_forged_posts_are_refused(client, clock, new_operator, db_session):
    op = new_operator("vera", "viewer")
    sign_in(client, op, clock)
    page = client.get("/console/").get_data(as_text=True)
    assert "Service clients" not in page
    assert client.get("/console/clients").status_code == 403
    forged = client.post("/console/clients", data={
        "name": "evil", "scopes": "accounts:read", "csrf_token": page_csrf(client),
    })
    assert forged.status_code == 403
    assert "permission" in forged.get_data(as_text=True).lower()
    assert db_session.scalars(select(ServiceClient)).all() == []


def test_posts_without_the_session_csrf_token_are_refused(client, clock, new_operator, db_session):
    op = new_operator("adam", "admin")
    sign_in(client, op, clock)
    for data in ({"name": "x", "scopes": "accounts:read"},
                 {"name": "x", "scopes": "accounts:read", "csrf_token": "forged"}):
        response = client.post("/console/clients", data=data)
        assert response.status_code == 403
    assert db_session.scalars(select(ServiceClient)).all() == []


def test_a_token_from_another_session_is_refused(app, clock, new_operator, db_session):
    op = new_operator("adam", "admin")
    first, second = app.test_client(), app.test_client()
    sign_in(first, op, clock)
    clock.advance(STEP)
    sign_in(second, op, clock)
    response = first.post("/console/clients", data={
        "name": "x", "scopes": "accounts:read", "csrf_token": page_csrf(second, "/console/clients"),
    })
    assert response.status_code == 403
    assert db_session.scalars(select(ServiceClient)).all() == []


def test_admin_creates_and_revokes_a_client(client, clock, new_operator, db_session):
    op = new_operator("adam", "admin")
    sign_in(client, op, clock)
    csrf = page_csrf(client, "/console/clients")
    created = client.post("/console/clients", data={
        "name": "wallet", "scopes": ["accounts:read", "events:write"], "csrf_token": csrf,
    })
    assert created.status_code == 201
    key = re.search(r'id="api-key">([^<]+)<', created.get_data(as_text=True)).group(1)
    assert key.startswith("fg_")
    assert client.get("/v1/accounts/a1", headers={"Authorization": f"Bearer {key}"}).status_code == 404
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "client:key:created")).one()
    assert entry.actor == f"operator:{op.id}"
    listing = client.get("/console/clients").get_data(as_text=True)
    assert key not in listing
    revoked = client.post("/console/clients/wallet/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    assert client.get("/v1/accounts/a1", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_invalid_client_form_is_shown_again_with_the_reason(client, clock, new_operator, db_session):
    op = new_operator("adam", "admin")
    sign_in(client, op, clock)
    response = client.post("/console/clients", data={"name": "wallet", "csrf_token": page_csrf(client)})
    assert response.status_code == 422
    assert "at least one scope" in response.get_data(as_text=True)
    assert db_session.scalars(select(ServiceClient)).all() == []


def test_sign_out_ends_the_session(client, clock, new_operator, db_session):
    op = new_operator("alice", "viewer")
    sign_in(client, op, clock)
    token_cookie = client.get_cookie(SESSION_COOKIE).value
    response = client.post("/console/sign-out", data={"csrf_token": page_csrf(client)})
    assert response.status_code == 303
    assert client.get_cookie(SESSION_COOKIE) is None
    client.set_cookie(SESSION_COOKIE, token_cookie)
    assert client.get("/console/").status_code == 303
    ended = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "operator:session:ended")).one()
    assert ended.actor == f"operator:{op.id}"


def test_sign_in_only_redirects_inside_the_console(client, clock, new_operator):
    op = new_operator("alice", "admin")
    assert sign_in(client, op, clock, next_path="/console/clients").headers["Location"] == "/console/clients"
    clock.advance(STEP)
    for evil in ("https://evil.example/", "//evil.example/console", "/console/..\\\\evil"):
        clock.advance(STEP)
        assert sign_in(client, op, clock, next_path=evil).headers["Location"] == "/console/"


def test_dashboard_draws_charts_from_the_audit_log(client, clock, new_operator):
    op = new_operator("alice", "viewer")
    sign_in(client, op, clock)
    page = client.get("/console/").get_data(as_text=True)
    assert page.count('<svg class="chart"') == len(CHART_SOURCES)
    # Creating the operator and signing in wrote audit entries today: today's bar is not empty.
    assert re.search(r"<title>2026-03-02: [1-9][0-9]* entries</title>", page)


@pytest.fixture
def http_app(database_url, connection, clock):
    settings = load_settings(
        "testing", {"database": {"url": database_url, "auto_migrate": False},
                    "operators": {"secure_cookies": False}}, environ={},
    )
    return create_app(settings, clock=clock, session_factory=lambda: joined_session(connection))


def test_plain_http_development_mode_drops_secure_and_the_host_prefix(http_app, clock, db_session):
    from tests.operators.factories import make_operator

    op = make_operator(http_app, db_session, clock, "alice", "viewer")
    client = http_app.test_client()
    client.get("/console/sign-in")
    response = client.post("/console/sign-in", data={
        "name": "alice", "password": op.password, "totp_code": op.code(clock.now()),
        "csrf_token": client.get_cookie("fg_signin").value,
    })
    assert response.status_code == 303
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("fg_session="))
    assert "Secure" not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_console_sessions_and_api_tokens_are_not_interchangeable(client, clock, new_operator):
    op = new_operator("alice", "admin")
    sign_in(client, op, clock)
    console_token = client.get_cookie(SESSION_COOKIE).value
    assert client.get("/v1/review/me", headers={"Authorization": f"Bearer {console_token}"}).status_code == 401
    clock.advance(STEP)
    api_token = client.post("/v1/review/tokens", json={
        "name": "alice", "password": op.password, "totp_code": op.code(clock.now())}).get_json()["token"]
    client.set_cookie(SESSION_COOKIE, api_token)
    assert client.get("/console/").status_code == 303


def test_nul_characters_are_refused_not_crashed_on(client, clock, new_operator):
    client.get("/console/sign-in")
    response = client.post("/console/sign-in", data={
        "name": "al\x00ice", "password": "x", "totp_code": "123456",
        "csrf_token": client.get_cookie(SIGNIN_COOKIE).value})
    assert response.status_code == 422
    api = client.post("/v1/review/tokens", json={"name": "al\x00ice", "password": "x", "totp_code": "123456"})
    assert api.status_code == 422
