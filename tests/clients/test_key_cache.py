"""The per-process key cache: a remembered key saves its lookup, never its revocation check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from security.clients.auth import key_cache
from security.clients.services import KeyCache
from security.crypto import sha256_hex
from security.permissions import Scope
from security.risk.models import RiskEvent
from tests.conftest import ApiClient, issue_key
from tests.risk.conftest import BERLIN, PASSWORD, Flows


@pytest.fixture
def statements(connection: Any) -> Iterator[list[str]]:
    """Every SQL statement the app runs from now on (the test's connection is the app's)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    yield seen
    event.remove(connection, "before_cursor_execute", record)


def _transaction(flows: Flows, event_id: str, account_id: str = "acc-1", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "account_id": account_id, "amount": "10.00", "currency": "EUR",
            "destination": {"address": "0xabc", "country": "DE"}, "occurred_at": flows.clock.now().isoformat(),
            "context": dict(BERLIN), **extra}


def _revoke(app: Any, name: str) -> None:
    result = app.test_cli_runner().invoke(args=["clients", "revoke", name])
    assert result.exit_code == 0, result.output


@pytest.fixture
def backend(app: Any, client: Any, db_session: Any, clock: Any) -> tuple[ApiClient, Flows]:
    """A client with every scope, its key already in the cache, and an account with a password."""
    key = issue_key(db_session, clock, "backend-2", list(Scope))
    api = ApiClient(client, key)
    flows = Flows(api, clock)
    flows.account()
    assert key_cache(app).get(sha256_hex(key)) is not None
    return api, flows


def test_cache_keeps_valid_keys_only_and_is_bounded(app, client, service_key):
    cache = KeyCache(size=2)
    from security.clients.services import AuthenticatedClient

    for n in range(3):
        cache.put(f"h{n}", AuthenticatedClient(id=None, name=f"c{n}", scopes=frozenset()))  # type: ignore[arg-type]
    assert cache.get("h0") is None
    assert cache.get("h2") is not None
    assert ApiClient(client, service_key[:-1] + "x").get("/v1/accounts/a1").status_code == 401
    assert key_cache(app).get(sha256_hex(service_key[:-1] + "x")) is None


@pytest.mark.parametrize("path", ["/v1/events/transaction", "/v1/events/login", "/v1/logins",
                                  "/v1/events/account-change"])
def test_revoked_key_is_refused_by_the_hot_operations_at_once(app, backend, db_session, path):
    api, flows = backend
    assert flows.transaction(event_id="warm").status_code == 200
    _revoke(app, "backend-2")
    bodies = {
        "/v1/events/transaction": _transaction(flows, "after"),
        "/v1/events/login": {"event_id": "after", "account_id": "acc-1", "outcome": "success",
                             "occurred_at": flows.clock.now().isoformat(), "context": dict(BERLIN)},
        "/v1/logins": {"account_id": "acc-1", "password": PASSWORD, "context": dict(BERLIN)},
        "/v1/events/account-change": {"event_id": "after", "account_id": "acc-1", "change": "email",
                                      "occurred_at": flows.clock.now().isoformat(), "context": dict(BERLIN)},
    }
    before = db_session.scalar(select(func.count()).select_from(RiskEvent))
    response = api.post(path, json=bodies[path])
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["code"] == "unauthenticated"
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == before  # nothing stored
    # The key left the cache: the next request looks it up again (and is refused again).
    assert api.post(path, json=bodies[path]).status_code == 401


@pytest.mark.parametrize(("body", "why"), [
    ({"event_id": "x"}, "invalid body"),
    ("replay", "replay of a stored event"),
    ("unknown-account", "unknown account"),
    ("other-kind", "event id used by another kind"),
])
def test_revoked_key_hears_401_before_any_other_answer(app, backend, body, why):
    api, flows = backend
    assert flows.transaction(event_id="stored").status_code == 200
    assert api.post("/v1/events/login", json={
        "event_id": "login-1", "account_id": "acc-1", "outcome": "success",
        "occurred_at": flows.clock.now().isoformat(), "context": dict(BERLIN)}).status_code == 200
    payload: Any = {
        "replay": _transaction(flows, "stored"),
        "unknown-account": _transaction(flows, "new", account_id="nobody"),
        "other-kind": _transaction(flows, "login-1"),
    }.get(body, body) if isinstance(body, str) else body
    _revoke(app, "backend-2")
    response = api.post("/v1/events/transaction", json=payload)
    assert response.status_code == 401, (why, response.get_json())


def test_revoked_key_on_a_login_check_for_an_unknown_account_or_a_missing_scope(app, backend, db_session, clock):
    api, _ = backend
    reader = issue_key(db_session, clock, "reader-2", [Scope.ACCOUNTS_READ])
    reader_api = ApiClient(api.client, reader)
    assert reader_api.get("/v1/accounts/acc-1").status_code == 200
    _revoke(app, "backend-2")
    _revoke(app, "reader-2")
    check = {"account_id": "nobody", "password": PASSWORD, "context": dict(BERLIN)}
    assert api.post("/v1/logins", json=check).status_code == 401
    # A cached key without the scope: 401 (revoked), not 403 naming the scope.
    response = reader_api.post("/v1/events/transaction", json={})
    assert response.status_code == 401


def test_non_hot_operations_check_a_cached_key_at_once(app, backend):
    api, _ = backend
    assert api.get("/v1/accounts/acc-1").status_code == 200
    _revoke(app, "backend-2")
    assert api.get("/v1/accounts/acc-1").status_code == 401


def test_cached_key_costs_no_lookup_and_a_transaction_reads_once(backend, statements):
    api, flows = backend
    assert flows.transaction(event_id="first").status_code == 200
    statements.clear()
    assert api.post("/v1/events/transaction", json=_transaction(flows, "second")).status_code == 200
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The account's row lock (with the client's revocation check) and the feature probe (with the
    # idempotency lookup): no key lookup, no lookup of the event id of its own.
    assert len(reads) == 2, reads
    assert "service_clients" in reads[0] and "accounts" in reads[0]
    assert "client_id" in reads[1] and "event_id" in reads[1]
    replay = api.post("/v1/events/transaction", json=_transaction(flows, "second"))
    assert replay.status_code == 200
    assert replay.get_json()["event_id"] == "second"


def _login_event(flows: Flows, event_id: str, outcome: str = "success") -> dict[str, Any]:
    return {"event_id": event_id, "account_id": "acc-1", "outcome": outcome,
            "occurred_at": flows.clock.now().isoformat(), "context": dict(BERLIN)}


def test_login_event_reads_in_three_round_trips(backend, statements):
    api, flows = backend
    assert api.post("/v1/events/login", json=_login_event(flows, "l-1")).status_code == 200
    statements.clear()
    assert api.post("/v1/events/login", json=_login_event(flows, "l-2")).status_code == 200
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The account's row lock (with the client's revocation check), the feature probe (with the
    # idempotency lookup, the IP's failed logins and the familiarity counters) and the failure counter
    # (locked by a statement of its own: one that waited for the account's lock must see what the
    # previous holder wrote).
    assert len(reads) == 3, reads
    assert "accounts" in reads[0] and "service_clients" in reads[0]
    assert all(part in reads[1] for part in ("event_id", "ip_failures", "risk_familiarity_counts")), reads[1]
    assert "login_failure_counters" in reads[2]


def test_replayed_failed_login_event_counts_once(backend, db_session):
    from security.locks.models import LoginFailureCounter

    api, flows = backend
    first = api.post("/v1/events/login", json=_login_event(flows, "f-1", "failure"))
    again = api.post("/v1/events/login", json=_login_event(flows, "f-1", "failure"))
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    failures = select(LoginFailureCounter.failures).where(LoginFailureCounter.account_id == "acc-1")
    assert db_session.scalar(failures) == 1
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == 1
    changed = api.post("/v1/events/login", json=_login_event(flows, "f-1", "success"))
    assert changed.status_code == 409
    assert db_session.scalar(failures) == 1
