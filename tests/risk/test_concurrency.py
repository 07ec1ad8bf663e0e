"""Races on a real PostgreSQL server: one lock from 50 simultaneous failures; one winner per release."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from security.audit.services import AuditLog
from security.crypto import SecretBox
from security.delivery.outbox import Outbox
from security.entropy import SystemEntropy
from security.locks.models import Lock, LoginFailureCounter
from security.locks.services import LockService
from security.locks.states import LockEvent, LockKind
from security.permissions import ALL_SCOPES
from security.risk.models import RiskEvent
from security.runtime import runtime
from tests.conftest import issue_key
from tests.risk.conftest import PASSWORD

ATTEMPTS = 50


@pytest.mark.postgres
def test_fifty_concurrent_failed_logins_make_exactly_one_lock(live_app, clock):
    factory = runtime(live_app).session_factory
    with factory() as session:
        key = issue_key(session, clock, "backend", ALL_SCOPES)
    headers = {"Authorization": f"Bearer {key}"}
    setup = live_app.test_client()
    assert setup.put("/v1/accounts/victim", json={"email": "v@example.com"}, headers=headers).status_code == 201
    assert setup.put("/v1/accounts/victim/password", json={"password": PASSWORD}, headers=headers).status_code == 204
    barrier = threading.Barrier(ATTEMPTS)

    def attempt(n: int) -> int:
        client = live_app.test_client()
        barrier.wait()
        # Distinct IPs: this is about the per-account counter, not the per-IP throttle.
        return client.post("/v1/logins", headers=headers, json={
            "account_id": "victim", "password": f"wrong-{n}", "context": {"ip": f"198.51.100.{n + 1}"},
        }).status_code

    with ThreadPoolExecutor(ATTEMPTS) as pool:
        statuses = list(pool.map(attempt, range(ATTEMPTS)))
    assert statuses == [200] * ATTEMPTS
    with factory() as session:
        locks = session.scalars(select(Lock)).all()
        assert len(locks) == 1
        assert locks[0].kind == "brute_force"
        counter = session.get(LoginFailureCounter, "victim")
        assert (counter.failures, counter.temporary_locks) == (0, 1)
        outcomes = dict(session.execute(
            select(RiskEvent.outcome, func.count()).group_by(RiskEvent.outcome)).all())
        # Exactly five attempts were checked and failed; the other 45 met a locked account.
        assert outcomes == {"failure": 5, "blocked": ATTEMPTS - 5}


@pytest.mark.postgres
def test_two_simultaneous_releases_one_wins(live_app, clock):
    rt = runtime(live_app)

    def service(session: Session) -> LockService:
        return LockService(session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(session, clock=clock),
                           outbox=Outbox(session, clock=clock, entropy=SystemEntropy(),
                                         secret_box=SecretBox(rt.settings.secrets.encryption_keys)))

    from security.accounts.models import Account

    with rt.session_factory() as session:
        account = Account(id="acc-r", status="active", created_at=clock.now(), updated_at=clock.now())
        session.add(account)
        lock_id = service(session).place(account, kind=LockKind.OPERATOR, reasons=[], actor="operator:ann").id
        session.commit()
    barrier = threading.Barrier(2)

    def release(actor: str) -> str:
        with rt.session_factory() as session:
            locks = service(session)
            lock = locks.get(lock_id)
            barrier.wait()
            try:
                locks.release(lock, LockEvent.OPERATOR_UNLOCK, actor=actor)
                session.commit()
            except StaleDataError:
                session.rollback()
                return "conflict"
            return "won"

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(release, ["operator:ann", "operator:bob"]))
    assert results == ["conflict", "won"]
    with rt.session_factory() as session:
        assert session.get(Account, "acc-r").status == "active"


@pytest.mark.postgres
def test_concurrent_logins_of_many_accounts_do_not_deadlock(live_app, clock):
    """Successful logins update shared familiarity counters; sorted upserts keep them deadlock-free."""
    users = 20
    factory = runtime(live_app).session_factory
    with factory() as session:
        key = issue_key(session, clock, "backend", ALL_SCOPES)
    headers = {"Authorization": f"Bearer {key}"}
    setup = live_app.test_client()
    for n in range(users):
        setup.put(f"/v1/accounts/u{n}", json={"email": f"u{n}@example.com"}, headers=headers)
        setup.put(f"/v1/accounts/u{n}/password", json={"password": PASSWORD}, headers=headers)
    barrier = threading.Barrier(users)
    context = {"ip": "84.150.20.10", "country": "DE", "asn": "3320", "device_id": "shared-kiosk",
               "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"}

    def attempt(n: int) -> tuple[int, str]:
        client = live_app.test_client()
        barrier.wait()
        response = client.post("/v1/logins", headers=headers,
                               json={"account_id": f"u{n}", "password": PASSWORD, "context": context})
        return response.status_code, response.get_json().get("decision", "")

    with ThreadPoolExecutor(users) as pool:
        results = list(pool.map(attempt, range(users)))
    assert results == [(200, "allow")] * users
    with factory() as session:
        from security.risk.models import FamiliarityCount

        totals = session.scalars(select(FamiliarityCount.count).where(
            FamiliarityCount.level == "user", FamiliarityCount.value == "")).all()
        assert sum(totals) == users
