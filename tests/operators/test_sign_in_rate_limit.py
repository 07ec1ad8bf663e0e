"""Operator sign-in is limited per client IP (console and token request together), besides the lockout."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from security import create_app
from security.audit.models import AuditEntry
from security.operators.models import Operator
from tests.conftest import joined_session
from tests.credentials.conftest import make_settings
from tests.operators.factories import make_operator

STEP = timedelta(seconds=30)
OTHER_IP = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.fixture
def limited_app(settings, connection, clock):
    """An app allowing ``rate`` sign-in attempts per IP (optionally with more settings changed)."""

    def build(rate: str = "3 per hour", **overrides):
        return create_app(make_settings(settings, operators={"sign_ins_per_ip": rate}, **overrides),
                          clock=clock, session_factory=lambda: joined_session(connection))

    return build


def token_request(client, op, clock, *, password=None, **kwargs):
    clock.advance(STEP)
    return client.post("/v1/review/tokens", json={
        "name": op.name, "password": password or op.password, "totp_code": op.code(clock.now())}, **kwargs)


def console_sign_in(client, op, clock):
    clock.advance(STEP)
    client.get("/console/sign-in")
    return client.post("/console/sign-in", data={
        "name": op.name, "password": op.password, "totp_code": op.code(clock.now()),
        "csrf_token": client.get_cookie("__Host-fg_signin").value,
    })


def sign_in_audit_count(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action.like("operator:signin:%"))) or 0


def test_token_requests_over_the_ip_limit_get_429_with_retry_after(limited_app, db_session, clock):
    app = limited_app("3 per hour")
    client = app.test_client()
    alice = make_operator(app, db_session, clock, "alice", "reviewer")
    bob = make_operator(app, db_session, clock, "bob", "reviewer")
    # Wrong passwords for different names count together: the limit is per address, not per operator.
    assert token_request(client, alice, clock, password="not-it").status_code == 401
    assert token_request(client, bob, clock, password="not-it").status_code == 401
    assert token_request(client, alice, clock).status_code == 201
    audited = sign_in_audit_count(db_session)

    limited = token_request(client, bob, clock)  # right password and code: still refused
    assert limited.status_code == 429
    assert limited.mimetype == "application/problem+json"
    assert limited.get_json()["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    # Refused before any work: no sign-in recorded, the operator's failure counter untouched.
    db_session.expire_all()
    assert sign_in_audit_count(db_session) == audited
    assert db_session.scalar(select(Operator.failed_sign_ins).where(Operator.name == "bob")) == 1
    # Another address is not affected.
    assert token_request(client, bob, clock, environ_base=OTHER_IP).status_code == 201


def test_console_and_api_sign_ins_share_the_counter(limited_app, db_session, clock):
    app = limited_app("2 per hour")
    client = app.test_client()
    rita = make_operator(app, db_session, clock, "rita", "reviewer")
    assert console_sign_in(client, rita, clock).status_code == 303
    assert token_request(client, rita, clock).status_code == 201
    limited = console_sign_in(client, rita, clock)
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    assert "Too many requests" in limited.get_data(as_text=True)
    assert limited.mimetype == "text/html"
    assert token_request(client, rita, clock).status_code == 429


def test_the_default_limit_leaves_room_for_a_team(app, client, db_session, clock):
    """30 attempts per 15 minutes: an office behind one address signs in all day without meeting it."""
    ops = [make_operator(app, db_session, clock, f"op{n}", "viewer") for n in range(10)]
    assert [token_request(client, op, clock).status_code for op in ops] == [201] * 10


def test_an_invalid_limit_fails_at_start(limited_app):
    with pytest.raises(ValueError, match="not a rate limit"):
        limited_app("plenty")


def test_the_limit_is_shared_through_redis(limited_app, db_session, clock, redis_url):
    prefix = f"fg-test-{uuid.uuid4().hex}"  # fresh counters on every run
    overrides = {"redis": {"url": redis_url}, "credentials": {"rate_limit_key_prefix": prefix}}
    # Two apps = two workers: they share the counter only because the storage is Redis.
    first, second = limited_app("2 per hour", **overrides), limited_app("2 per hour", **overrides)
    op = make_operator(first, db_session, clock, "alice", "reviewer")
    assert token_request(first.test_client(), op, clock).status_code == 201
    assert token_request(second.test_client(), op, clock).status_code == 201
    assert token_request(first.test_client(), op, clock).status_code == 429
