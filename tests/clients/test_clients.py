from __future__ import annotations

import re

from sqlalchemy import select

from security.clients.models import ServiceClient
from security.permissions import Scope
from tests.conftest import ApiClient, issue_key

KEY = re.compile(r"^fg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def test_cli_create_prints_key_once_and_stores_only_its_hash(app, db_session):
    result = app.test_cli_runner().invoke(args=["clients", "create", "backend", "--scopes", "accounts:read"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert KEY.match(key)
    client = db_session.scalars(select(ServiceClient).where(ServiceClient.name == "backend")).one()
    assert key not in (client.key_hash, client.key_prefix)
    assert client.scopes == ["accounts:read"]
    listing = app.test_cli_runner().invoke(args=["clients", "list"])
    assert "backend" in listing.output
    assert key not in listing.output


def test_cli_rejects_unknown_scope_and_duplicate_name(app):
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["clients", "create", "x", "--scopes", "everything"])
    assert bad.exit_code != 0
    assert "Unknown scope" in bad.output
    assert runner.invoke(args=["clients", "create", "dup", "--scopes", "accounts:read"]).exit_code == 0
    again = runner.invoke(args=["clients", "create", "dup", "--scopes", "accounts:read"])
    assert again.exit_code != 0
    assert "exists already" in again.output


def test_key_works_until_revoked(app, client, db_session, clock):
    key = issue_key(db_session, clock, "temp", [Scope.ACCOUNTS_WRITE, Scope.ACCOUNTS_READ])
    api = ApiClient(client, key)
    assert api.put("/v1/accounts/a1", json={}).status_code == 201
    result = app.test_cli_runner().invoke(args=["clients", "revoke", "temp"])
    assert result.exit_code == 0, result.output
    response = api.get("/v1/accounts/a1")
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthenticated"


def test_tampered_key_is_401(client, service_key):
    tampered = service_key[:-1] + ("A" if service_key[-1] != "A" else "B")
    assert ApiClient(client, tampered).get("/v1/accounts/a1").status_code == 401


def test_missing_scope_is_403_and_names_the_scope(client, db_session, clock):
    key = issue_key(db_session, clock, "reader", [Scope.ACCOUNTS_READ])
    response = ApiClient(client, key).put("/v1/accounts/a1", json={})
    assert response.status_code == 403
    body = response.get_json()
    assert body["code"] == "insufficient_scope"
    assert "accounts:write" in body["detail"]


def test_revoke_unknown_client_fails_cleanly(app):
    result = app.test_cli_runner().invoke(args=["clients", "revoke", "nobody"])
    assert result.exit_code != 0
    assert "No client named" in result.output
