"""Secrets never reach the logs.

A run at DEBUG level exercises the happy paths and the failure paths that are most likely to log what
they were given (bad keys, weak passwords, invalid and malformed bodies, unknown fields, query strings);
the captured JSON log lines are then searched for every secret used in the run, and for the parts of
each one a careless formatter might print (the key's secret half, a normalised document number).
"""

from __future__ import annotations

import json
import logging

import pytest

from security import create_app
from security.crypto import normalize_document_number
from security.permissions import ALL_SCOPES
from tests.conftest import issue_key, joined_session

PASSWORD = "violet-harbour-engine-42"
WEAK_PASSWORD = "Password1!"
WRONG_KEY = "fg_deadbeefdead_ThisIsNotAValidKeyButStillASecret0000000000"
DOCUMENT = "QX 7731-0042"


@pytest.fixture
def debug_app(settings, connection, clock):
    verbose = settings.model_copy(update={"app": settings.app.model_copy(update={"log_level": "DEBUG"})})
    return create_app(verbose, clock=clock, session_factory=lambda: joined_session(connection))


def exercise(client, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    profile = {"email": "vera@example.com", "phone": "+4915112345678", "identity_document": DOCUMENT}
    assert client.put("/v1/accounts/vera", json=profile, headers=auth).status_code == 201
    assert client.put("/v1/accounts/vera/password", json={"password": PASSWORD}, headers=auth).status_code == 204
    assert client.put("/v1/accounts/vera/password", json={"password": WEAK_PASSWORD}, headers=auth).status_code == 422
    # A secret next to an unknown field, in malformed JSON, in a wrong type, in a query string.
    bad = client.put("/v1/accounts/vera/password", json={"password": PASSWORD, "x": 1}, headers=auth)
    assert bad.status_code == 422
    malformed = client.put("/v1/accounts/vera/password", data=f'{{"password": "{PASSWORD}"', headers=auth,
                           content_type="application/json")
    assert malformed.status_code == 400
    wrong_type = client.put("/v1/accounts/vera", json={"identity_document": [DOCUMENT]}, headers=auth)
    assert wrong_type.status_code == 422
    assert client.get(f"/v1/accounts/vera?token={PASSWORD}", headers=auth).status_code == 200
    # Bad credentials: a wrong key, the right key under the wrong scheme, a key in the query string.
    assert client.get("/v1/accounts/vera", headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 401
    assert client.get("/v1/accounts/vera", headers={"Authorization": f"Basic {key}"}).status_code == 401
    assert client.get(f"/v1/accounts/vera?api_key={key}").status_code == 401


def test_no_secret_in_the_logs(debug_app, db_session, clock, capsys):
    key = issue_key(db_session, clock, "log-test", ALL_SCOPES)
    capsys.readouterr()  # only what the requests log
    exercise(debug_app.test_client(), key)
    captured = capsys.readouterr()
    logs = captured.err + captured.out
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(records) >= 10, "the run must actually have been logged"
    assert all(record.get("request_id") for record in records if record.get("message") == "request")
    secrets = {
        "API key": key,
        "API key secret half": key.rsplit("_", 1)[-1],
        "wrong API key": WRONG_KEY,
        "password": PASSWORD,
        "weak password": WEAK_PASSWORD,
        "identity document": DOCUMENT,
        "normalised identity document": normalize_document_number(DOCUMENT),
    }
    leaked = {name for name, value in secrets.items() if value in logs}
    assert not leaked, f"secrets in the logs: {sorted(leaked)}"

    # The control: the same capture does see what the service's loggers write.
    logging.getLogger("security.web").warning("canary %s", "c4n4ry-0123")
    assert "c4n4ry-0123" in capsys.readouterr().err
