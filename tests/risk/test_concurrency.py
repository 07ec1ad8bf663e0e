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
from security.locks.states import LockEvent
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
        lock_id = service(session).place(account, kind="operator", reasons=[], actor="operator:ann").id
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
