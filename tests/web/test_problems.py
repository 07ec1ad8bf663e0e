"""Every bad request gets a clear problem+json answer, and nothing is half-written."""

from __future__ import annotations

import logging

import pytest
from flask import Blueprint
from sqlalchemy import select

from security import create_app
from security.accounts.models import Account
from security.clock import FrozenClock
from tests.conftest import START

PROFILE = {"email": "ana@example.com", "home_country": "DE"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["title"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


def test_malformed_json_is_400(api):
    response = api.put("/v1/accounts/a1", data=b'{"email": ', content_type="application/json")
    assert_problem(response, 400, "bad_request")


def test_nan_and_deeply_nested_json_are_400(api):
    assert_problem(api.put("/v1/accounts/a1", data=b'{"email": NaN}', content_type="application/json"),
                   400, "bad_request")
    nested = b"[" * 100_000 + b"]" * 100_000
    assert_problem(api.put("/v1/accounts/a1", data=nested, content_type="application/json"), 400, "bad_request")


def test_invalid_utf8_is_400(api):
    response = api.put("/v1/accounts/a1", data=b'{"email": "\xff"}', content_type="application/json")
    assert_problem(response, 400, "bad_request")


def test_non_json_media_type_is_415(api):
    response = api.put("/v1/accounts/a1", data="email=x", content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415, "unsupported_media_type")


def test_wrong_types_are_422_without_echoing_input(api):
    response = api.put("/v1/accounts/a1", json={"email": 42, "home_country": ["DE"]})
    body = assert_problem(response, 422, "invalid_input")
    assert {e["field"] for e in body["errors"]} == {"email", "home_country"}
    assert all("input" not in e for e in body["errors"])


def test_body_that_is_not_an_object_is_422(api):
    assert_problem(api.put("/v1/accounts/a1", json=[1, 2]), 422, "invalid_input")
    assert_problem(api.put("/v1/accounts/a1", json="x"), 422, "invalid_input")


def test_secret_input_is_not_echoed(api):
    api.put("/v1/accounts/a1", json=PROFILE)
    response = api.put("/v1/accounts/a1/password", json={"password": "hunter2-not-json", "extra": "x"})
    assert "hunter2" not in response.get_data(as_text=True)


def test_oversized_body_is_413(settings, connection, clock, service_key):
    from tests.conftest import joined_session

    small = settings.model_copy(update={"app": settings.app.model_copy(update={"max_body_bytes": 2048})})
    app = create_app(small, clock=clock, session_factory=lambda: joined_session(connection))
    response = app.test_client().put(
        "/v1/accounts/a1",
        json={"email": "a@example.com", "identity_document": "x" * 5000},
        headers={"Authorization": f"Bearer {service_key}"},
    )
    assert_problem(response, 413, "payload_too_large")


def test_unknown_route_and_method(client):
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    response = client.delete("/healthz")
    body = assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    assert body["detail"]


def test_unexpected_error_is_500_with_request_id_and_no_trace(app, client, caplog):
    bp = Blueprint("boom", __name__)

    @bp.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    app.register_blueprint(bp)
    with caplog.at_level(logging.ERROR, logger="security.web"):
        response = client.get("/boom", headers={"X-Request-Id": "trace-me-12345"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "trace-me-12345"
    text = response.get_data(as_text=True)
    assert "secret internal detail" not in text
    assert "Traceback" not in text
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


def test_error_after_writes_rolls_everything_back(app, client, service_key, db_session):
    """A view that writes and then fails leaves no partial write behind."""
    from security.accounts.services import Profile
    from security.accounts.views import account_service
    from security.errors import Conflict
    from security.web.deps import deps

    bp = Blueprint("half", __name__)

    @bp.post("/half")
    def half():
        account_service(deps()).upsert("half-1", Profile("h@example.com", None, None, None), actor="test")
        raise Conflict("changed my mind")

    app.register_blueprint(bp)
    assert_problem(client.post("/half"), 409, "conflict")
    assert db_session.scalar(select(Account).where(Account.id == "half-1")) is None


def test_database_outage_is_503(settings, service_key):
    down = settings.model_copy(update={"database": settings.database.model_copy(update={
        "url": "postgresql+psycopg://postgres@127.0.0.1:1/none", "connect_timeout_s": 1})})
    app = create_app(down, clock=FrozenClock(START))
    response = app.test_client().put(
        "/v1/accounts/a1", json=PROFILE, headers={"Authorization": f"Bearer {service_key}"}
    )
    body = assert_problem(response, 503, "unavailable")
    assert "nothing was changed" in body["detail"]


@pytest.mark.parametrize("header", ["", "Bearer", "Basic abc", "Bearer fg_nothing", "Bearer fg_0011223344ff_x"])
def test_missing_or_invalid_keys_are_401(client, header):
    response = client.get("/v1/accounts/a1", headers={"Authorization": header} if header else {})
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_rate_limit_error_carries_retry_after(app, client):
    from security.errors import TooManyRequests

    bp = Blueprint("limited", __name__)

    @bp.get("/limited")
    def limited():
        raise TooManyRequests("Slow down.", retry_after=42)

    app.register_blueprint(bp)
    response = client.get("/limited")
    assert_problem(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "42"


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("sqlstate", "status", "code"), [
    ("40P01", 409, "conflict"),  # deadlock_detected: the database let the concurrent change win
    ("40001", 409, "conflict"),  # serialization_failure
    ("08006", 503, "unavailable"),  # connection_failure: a real outage
    (None, 503, "unavailable"),
])
def test_aborted_concurrent_change_is_a_conflict_not_an_outage(app, sqlstate, status, code):
    from sqlalchemy.exc import OperationalError

    from security.web.problems import from_exception

    with app.test_request_context():
        response = from_exception(OperationalError("UPDATE appeals", {}, _DriverError(sqlstate)))
        assert response.status_code == status
        assert response.get_json()["code"] == code
