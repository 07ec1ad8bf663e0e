"""Appeals and freeze do not reveal whether an identifier names an account.

``POST /v1/appeals`` (always 202 with a fresh appeal id and token: those two values are masked, their
presence and type are compared), ``POST /v1/freeze/codes`` (always 202, same body) and ``POST /v1/freeze``
with a wrong password (one ``freeze_refused`` answer for an unknown identifier and a wrong password): same
status, headers and body, median latency within 10% over 200 tries each, on a really committing app.
"""

from __future__ import annotations

import pytest

from security import create_app
from security.accounts.models import Account
from security.locks.states import LockKind
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key, truncate_all
from tests.credentials.conftest import PROFILE, make_settings
from tests.proof.enumeration import mask_fields, probe_enumeration
from tests.proof.test_races import lock_service

PASSWORD = "violet-harbour-engine-42"
KNOWN = ["enum-ana", "enum-ana@example.com", "+4915100000001"]
UNKNOWN = ["enum-nobody", "enum-nobody@example.com", "+4915100000099"]
NO_LIMITS = {
    name: "100000 per hour"
    for name in ("appeals_per_identifier", "appeals_per_ip", "verifications_per_ip", "messages_per_ip",
                 "freeze_codes_per_identifier", "freeze_codes_per_ip", "freezes_per_identifier", "freezes_per_ip")
}


# Held-answer floors above each real-account branch's usual duration (appeal submission writes the most),
# short enough for 400 requests each. Production uses appeal_limits.min_response_ms (250 ms).
APPEAL_FLOOR_MS = 60
FREEZE_FLOOR_MS = 40


def flows_app(settings, engine, clock, floor_ms: int):
    truncate_all(engine)
    limits = NO_LIMITS | {"min_response_ms": floor_ms}
    app = create_app(make_settings(settings, appeal_limits=limits), clock=clock)
    with runtime(app).session_factory() as session:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
    api = ApiClient(app.test_client(), key)
    profile = {**PROFILE, "email": "enum-ana@example.com", "phone": "+4915100000001"}
    assert api.put("/v1/accounts/enum-ana", json=profile).status_code == 201
    assert api.put("/v1/accounts/enum-ana/password", json={"password": PASSWORD}).status_code == 204
    with runtime(app).session_factory() as session:
        account = session.get(Account, "enum-ana")
        lock_service(app, session, clock).place(account, kind=LockKind.RISK, reasons=[{"rule": "test"}],
                                                actor="test")
        session.commit()
    return app


@pytest.fixture
def appeal_app(settings, engine, clock):
    app = flows_app(settings, engine, clock, APPEAL_FLOOR_MS)
    yield app
    app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)


@pytest.fixture
def freeze_app(settings, engine, clock):
    app = flows_app(settings, engine, clock, FREEZE_FLOOR_MS)
    yield app
    app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)


def report_for(app, path: str, body_of, **kw):
    client = app.test_client()
    report = probe_enumeration(lambda identifier: client.post(path, json=body_of(identifier)),
                               known=KNOWN, unknown=UNKNOWN, **kw)
    print(f"{path}: known {report.known_median * 1000:.2f} ms, unknown {report.unknown_median * 1000:.2f} ms")
    return report


def test_appeal_submission_known_vs_unknown(appeal_app):
    report = report_for(appeal_app, "/v1/appeals", lambda i: {"identifier": i, "statement": "It was not me."},
                        normalize=mask_fields("appeal_id", "appeal_token"))
    report.assert_indistinguishable()


def test_freeze_code_request_known_vs_unknown(freeze_app):
    report_for(freeze_app, "/v1/freeze/codes", lambda i: {"identifier": i}).assert_indistinguishable()


def test_freeze_with_a_wrong_password_known_vs_unknown(freeze_app):
    report_for(freeze_app, "/v1/freeze", lambda i: {"identifier": i, "password": "wrong-password-123"},
               normalize=mask_fields("request_id")).assert_indistinguishable()
