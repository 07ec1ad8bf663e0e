"""The password-reset request does not reveal whether an identifier names an account.

Known and unknown identifiers (account id, e-mail, phone) get the same status, headers and body, and the
median latency over 200 tries each differs by at most 10% (the app really commits, as in production).
The rate limits count known and unknown identifiers alike, so the first 429 does not tell them apart
either.
"""

from __future__ import annotations

import pytest

from security import create_app
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key, truncate_all
from tests.credentials.conftest import PROFILE, make_settings
from tests.proof.enumeration import probe_enumeration
from tests.proof.test_races import NO_LIMITS

PASSWORD = "violet-harbour-engine-42"
KNOWN = ["enum-ana", "enum-ana@example.com", "+4915100000001"]
UNKNOWN = ["enum-nobody", "enum-nobody@example.com", "+4915100000099"]
PER_IDENTIFIER_LIMIT = 5
# Above the real-account branch's usual duration (a few ms; tens under heavy CI load), yet short enough
# for 400 requests per backend. Production uses the default (250 ms).
TIMING_FLOOR_MS = 40


def live(settings, engine, clock, credentials):
    truncate_all(engine)
    app = create_app(make_settings(settings, credentials=credentials), clock=clock)
    with runtime(app).session_factory() as session:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
    api = ApiClient(app.test_client(), key)
    profile = {**PROFILE, "email": "enum-ana@example.com", "phone": "+4915100000001"}
    assert api.put("/v1/accounts/enum-ana", json=profile).status_code == 201
    assert api.put("/v1/accounts/enum-ana/password", json={"password": PASSWORD}).status_code == 204
    return app


@pytest.fixture
def reset_app(settings, engine, clock):
    app = live(settings, engine, clock, NO_LIMITS | {"reset_min_response_ms": TIMING_FLOOR_MS})
    yield app
    app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)


@pytest.fixture
def limited_app(settings, engine, clock):
    app = live(settings, engine, clock, {"reset_requests_per_identifier": f"{PER_IDENTIFIER_LIMIT} per hour"})
    yield app
    app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)


def test_reset_request_known_vs_unknown(reset_app):
    client = reset_app.test_client()
    report = probe_enumeration(
        lambda identifier: client.post("/v1/password-resets", json={"identifier": identifier}),
        known=KNOWN, unknown=UNKNOWN,
    )
    print(f"reset request: known {report.known_median * 1000:.2f} ms, unknown {report.unknown_median * 1000:.2f} ms")
    report.assert_indistinguishable()
    assert {answer[0] for answer in report.known_answers} == {202}


def test_rate_limit_counts_known_and_unknown_alike(limited_app):
    def statuses(identifier: str) -> list[int]:
        # A different client address per request: only the per-identifier limit is in play.
        return [
            limited_app.test_client().post(
                "/v1/password-resets", json={"identifier": identifier},
                environ_base={"REMOTE_ADDR": f"203.0.113.{n + 1}"},
            ).status_code
            for n in range(PER_IDENTIFIER_LIMIT + 2)
        ]

    known, unknown = statuses("enum-ana@example.com"), statuses("enum-nobody@example.com")
    assert known == unknown == [202] * PER_IDENTIFIER_LIMIT + [429, 429]
