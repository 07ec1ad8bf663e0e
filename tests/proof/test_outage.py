"""The database goes away under load and comes back.

Load threads keep writing (PUT account profiles, each with a fresh id) while the database is cut off and
restored twice. Every answer must be either a success or a 503 problem+json (never a 500, never a hang);
once the database is back the very same app serves again without a restart; and every id that was
acknowledged with a 2xx is in the database afterwards (the driver keeps its own record). A 503'd write may
or may not have been committed (the connection can die after COMMIT reached the server): that is why the
client retries an idempotent PUT, and why only acknowledged ids are asserted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from security import create_app
from security.accounts.models import Account
from security.accounts.services import AuditTag
from security.audit.models import AuditEntry
from security.audit.services import verify_audit_log
from security.permissions import ALL_SCOPES
from tests.conftest import issue_key, truncate_all
from tests.proof.faults import Outage, SqliteLock, TcpProxy

LOAD_THREADS = 3
# (database reachable?, seconds): two outages, each followed by a recovery under load.
SCHEDULE = ((True, 0.4), (False, 0.8), (True, 0.5), (False, 0.8), (True, 0.5))
RECOVERY_REQUESTS = 10


@dataclass
class Ledger:
    """What the load driver saw: acknowledged ids, statuses, and any answer that is neither."""

    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, account_id: str, response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code in (200, 201):
                self.acknowledged.add(account_id)
            elif response.status_code == 503:
                body = response.get_json(silent=True) or {}
                if response.mimetype != "application/problem+json" or body.get("code") != "unavailable":
                    self.wrong.append(f"503 without the unavailable problem: {response.get_data(as_text=True)}")
            else:
                self.wrong.append(f"{response.status_code}: {response.get_data(as_text=True)[:300]}")


def drive(app, key: str, worker: int, ledger: Ledger, stop: threading.Event) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    n = 0
    while not stop.is_set():
        account_id = f"load-{worker}-{n}"
        n += 1
        response = client.put(f"/v1/accounts/{account_id}", json={"home_country": "DE"}, headers=headers)
        ledger.record(account_id, response)


def run_outage_scenario(app, key: str, outage: Outage, engine) -> Ledger:
    ledger = Ledger()
    stop = threading.Event()
    workers = [
        threading.Thread(target=drive, args=(app, key, n, ledger, stop), daemon=True) for n in range(LOAD_THREADS)
    ]
    for worker in workers:
        worker.start()
    readiness_during_outage: list[int] = []
    try:
        for reachable, seconds in SCHEDULE:
            outage.up() if reachable else outage.down()
            time.sleep(seconds / 2)
            if not reachable:
                readiness_during_outage.append(app.test_client().get("/readyz").status_code)
            time.sleep(seconds / 2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        outage.up()
    assert not any(worker.is_alive() for worker in workers), "a request hung"
    assert readiness_during_outage == [503] * sum(1 for reachable, _ in SCHEDULE if not reachable)

    # Recovery by itself: the same app, no restart, is ready and every request succeeds again.
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    for n in range(RECOVERY_REQUESTS):
        account_id = f"after-{n}"
        response = client.put(f"/v1/accounts/{account_id}", json={"home_country": "DE"},
                              headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 201, response.get_data(as_text=True)
        ledger.acknowledged.add(account_id)

    assert not ledger.wrong, ledger.wrong[:5]
    assert ledger.statuses[503] > 0, f"the outage was not felt: {ledger.statuses}"
    assert ledger.statuses[201] > 0, f"nothing succeeded under load: {ledger.statuses}"
    with Session(engine) as session:
        stored = set(session.scalars(select(Account.id)))
        lost = ledger.acknowledged - stored
        assert not lost, f"{len(lost)} acknowledged writes are missing, e.g. {sorted(lost)[:5]}"
        checked, broken = verify_audit_log(session)
        assert broken is None, broken
        # All or nothing: every stored account (acknowledged or not) has exactly one creation entry.
        creations = select(AuditEntry.subject_id).where(AuditEntry.action == AuditTag.ACCOUNT_CREATED)
        created = Counter(session.scalars(creations))
        assert created == Counter(stored), "an account and its audit entry were not written together"
    print(f"outage ledger: {dict(ledger.statuses)}, acknowledged {len(ledger.acknowledged)}")
    return ledger


@pytest.fixture
def clean_engine(engine):
    truncate_all(engine)
    yield engine
    truncate_all(engine)


@pytest.mark.postgres
def test_postgresql_cut_off_under_load(settings, clean_engine, clock):
    url = make_url(settings.database.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    database = settings.database.model_copy(update={"url": proxied, "connect_timeout_s": 1, "pool_size": 4})
    app = create_app(settings.model_copy(update={"database": database}), clock=clock)
    with Session(clean_engine) as session:
        key = issue_key(session, clock, "load-driver", ALL_SCOPES)
    proxy.up()
    try:
        run_outage_scenario(app, key, proxy, clean_engine)
    finally:
        proxy.down()
        app.extensions["foxguard"].engine.dispose()


def test_sqlite_locked_under_load(settings, clean_engine, clock):
    if clean_engine.dialect.name != "sqlite":
        pytest.skip("the SQLite variant of the outage")
    database = settings.database.model_copy(update={"sqlite_busy_timeout_ms": 100})
    app = create_app(settings.model_copy(update={"database": database}), clock=clock)
    with Session(clean_engine) as session:
        key = issue_key(session, clock, "load-driver", ALL_SCOPES)
    try:
        run_outage_scenario(app, key, SqliteLock(clean_engine), clean_engine)
    finally:
        app.extensions["foxguard"].engine.dispose()
