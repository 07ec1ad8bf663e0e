"""Races on PostgreSQL, repeated: single-use secrets are used once, locks change state once.

Each trial sets up fresh state (a fresh account, so that a loser's failed attempt never feeds the
lockout of the next trial), then releases two contenders together through a barrier. ``TRIALS`` per
property in the normal run, ``LONG_TRIALS`` with ``--long``.

* one reset token confirmed twice, one TOTP code used twice, one recovery code used twice: exactly one
  request succeeds, the other gets a 4xx, every time;
* two simultaneous releases of one lock: exactly one wins, the other gets a conflict, every time;
* release vs a new lock on the same account: both may succeed (in either order), but the account is
  never left ``active`` with an open lock, nor ``locked`` without one (no lost update).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from security import create_app
from security.accounts.models import Account
from security.audit.services import AuditLog, verify_audit_log
from security.credentials import totp
from security.crypto import SecretBox
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SystemEntropy
from security.errors import Conflict
from security.locks.services import LockService
from security.locks.states import AccountStatus, LockEvent, LockKind
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key, truncate_all
from tests.credentials.conftest import NEW_PASSWORD, PROFILE, make_settings

TRIALS = 12
LONG_TRIALS = 1000
PASSWORD = "violet-harbour-engine-42"
# Generous limits: the trials all come from one test-client IP; the limits themselves are tested elsewhere.
NO_LIMITS = {
    "reset_requests_per_identifier": "100000 per hour",
    "reset_requests_per_ip": "100000 per hour",
    "reset_confirms_per_ip": "100000 per hour",
}

pytestmark = pytest.mark.postgres


@pytest.fixture
def race_app(settings, engine, clock):
    truncate_all(engine)
    app = create_app(make_settings(settings, credentials=NO_LIMITS), clock=clock)
    yield app
    app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)


@pytest.fixture
def race_api(race_app, clock) -> ApiClient:
    with runtime(race_app).session_factory() as session:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
    return ApiClient(race_app.test_client(), key)


def trials(request: pytest.FixtureRequest) -> int:
    return LONG_TRIALS if request.config.getoption("--long") else TRIALS


def together(*contenders: Callable[[], Any]) -> list[Any]:
    """Run the contenders in threads released by one barrier; return their results in order."""
    barrier = threading.Barrier(len(contenders))

    def run(contender: Callable[[], Any]) -> Any:
        barrier.wait()
        return contender()

    with ThreadPoolExecutor(len(contenders)) as pool:
        return list(pool.map(run, contenders))


def new_account(api: ApiClient, n: int) -> str:
    account_id = f"race-{n}"
    profile = {**PROFILE, "email": f"race-{n}@example.com", "phone": f"+49151{n:08d}"}
    assert api.put(f"/v1/accounts/{account_id}", json=profile).status_code == 201
    assert api.put(f"/v1/accounts/{account_id}/password", json={"password": PASSWORD}).status_code == 204
    return account_id


def enroll(api: ApiClient, clock, account_id: str) -> tuple[str, list[str]]:
    started = api.post(f"/v1/accounts/{account_id}/totp")
    assert started.status_code == 201, started.get_json()
    secret = started.get_json()["secret"]
    confirmed = api.post(f"/v1/accounts/{account_id}/totp/confirm", json={"code": totp.code_at(secret, clock.now())})
    assert confirmed.status_code == 200, confirmed.get_json()
    clock.advance(seconds=totp.PERIOD_SECONDS)  # the confirming step is used up
    return secret, confirmed.get_json()["recovery_codes"]


def statuses(app, *requests: Callable[[Any], Any]) -> list[int]:
    clients = [app.test_client() for _ in requests]
    calls = [lambda c=c, f=f: f(c) for c, f in zip(clients, requests, strict=True)]
    return sorted(response.status_code for response in together(*calls))


def exactly_one_success(outcomes: list[list[int]], success: int) -> None:
    tally = Counter(tuple(o) for o in outcomes)
    bad = {o: n for o, n in tally.items() if sorted(o)[0] != success or sum(s == success for s in o) != 1
           or not all(400 <= s < 500 for s in o if s != success)}
    assert not bad, f"trials without exactly one winner: {bad} (all: {dict(tally)})"


def test_double_confirm_of_one_reset_token(race_app, race_api, clock, settings, request):
    box = SecretBox(settings.secrets.encryption_keys)
    outcomes = []
    for n in range(trials(request)):
        account_id = new_account(race_api, n)
        assert race_app.test_client().post("/v1/password-resets", json={"identifier": account_id}).status_code == 202
        with runtime(race_app).session_factory() as session:
            sealed = session.scalars(
                select(OutboxMessage.sealed).where(OutboxMessage.event_type == "password_reset")
                .order_by(OutboxMessage.id.desc()).limit(1)
            ).one()
        token = json.loads(box.decrypt(sealed))["token"]
        body = {"token": token, "new_password": NEW_PASSWORD}
        outcomes.append(statuses(race_app, *[lambda c, b=body: c.post("/v1/password-resets/confirm", json=b)] * 2))
    exactly_one_success(outcomes, 204)


def test_double_use_of_one_totp_code(race_app, race_api, clock, request):
    outcomes = []
    headers = {"Authorization": f"Bearer {race_api.key}"}
    for n in range(trials(request)):
        account_id = new_account(race_api, n)
        secret, _ = enroll(race_api, clock, account_id)
        body = {"totp_code": totp.code_at(secret, clock.now())}
        path = f"/v1/accounts/{account_id}/totp/recovery-codes"
        outcomes.append(statuses(race_app, *[lambda c, p=path, b=body: c.post(p, json=b, headers=headers)] * 2))
    exactly_one_success(outcomes, 200)


def test_double_use_of_one_recovery_code(race_app, race_api, clock, request):
    outcomes = []
    headers = {"Authorization": f"Bearer {race_api.key}"}
    for n in range(trials(request)):
        account_id = new_account(race_api, n)
        _, codes = enroll(race_api, clock, account_id)
        body = {"recovery_code": codes[n % len(codes)]}
        path = f"/v1/accounts/{account_id}/totp/recovery-codes"
        outcomes.append(statuses(race_app, *[lambda c, p=path, b=body: c.post(p, json=b, headers=headers)] * 2))
    exactly_one_success(outcomes, 200)


# --- locks (service level: there is no HTTP unlock yet; operators and appeals add it) ----------------

def lock_service(app, session: Session, clock) -> LockService:
    box = SecretBox(runtime(app).settings.secrets.encryption_keys)
    return LockService(session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(session, clock=clock),
                       outbox=Outbox(session, clock=clock, entropy=SystemEntropy(), secret_box=box))


def attempt(app, clock, change: Callable[[Session, LockService], Any], ready: threading.Barrier) -> str:
    """Load, wait for the other contender, change, commit; 'won' or 'conflict' (a clean 409 for a client)."""
    with runtime(app).session_factory() as session:
        service = lock_service(app, session, clock)
        try:
            prepared = change(session, service)
            ready.wait()
            prepared()
            session.commit()
        except (StaleDataError, Conflict):
            session.rollback()
            return "conflict"
    return "won"


def locked_account(app, clock, n: int) -> tuple[str, Any]:
    account_id = f"lock-race-{n}"
    with runtime(app).session_factory() as session:
        account = Account(id=account_id, status="active", created_at=clock.now(), updated_at=clock.now())
        session.add(account)
        lock = lock_service(app, session, clock).place(account, kind=LockKind.OPERATOR, reasons=[], actor="op:a")
        session.commit()
        return account_id, lock.id


def consistent(app, account_id: str) -> None:
    with runtime(app).session_factory() as session:
        account = session.get(Account, account_id)
        open_locks = lock_service(app, session, None).open_locks(account_id)  # type: ignore[arg-type]
        assert (account.status == AccountStatus.LOCKED) == bool(open_locks), (
            f"{account_id} is {account.status} with {len(open_locks)} open lock(s)"
        )


def release_of(lock_id, actor: str):
    def prepare(session: Session, service: LockService):
        lock = service.get(lock_id)
        return lambda: service.release(lock, LockEvent.OPERATOR_UNLOCK, actor=actor)
    return prepare


def new_lock_on(account_id: str):
    def prepare(session: Session, service: LockService):
        account = session.get(Account, account_id)
        return lambda: service.place(account, kind=LockKind.RISK, reasons=[{"rule": "race"}], actor="system")
    return prepare


def test_two_simultaneous_unlocks(race_app, clock, request):
    outcomes = Counter()
    for n in range(trials(request)):
        account_id, lock_id = locked_account(race_app, clock, n)
        ready = threading.Barrier(2)
        first, second = release_of(lock_id, "op:a"), release_of(lock_id, "op:b")
        results = together(lambda f=first, r=ready: attempt(race_app, clock, f, r),
                           lambda s=second, r=ready: attempt(race_app, clock, s, r))
        outcomes[tuple(sorted(results))] += 1
        consistent(race_app, account_id)
    assert outcomes == {("conflict", "won"): trials(request)}
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None


def test_unlock_against_a_new_lock(race_app, clock, request):
    outcomes = Counter()
    for n in range(trials(request)):
        account_id, lock_id = locked_account(race_app, clock, n)
        ready = threading.Barrier(2)
        unlock, lock = release_of(lock_id, "op:a"), new_lock_on(account_id)
        results = together(lambda u=unlock, r=ready: attempt(race_app, clock, u, r),
                           lambda lk=lock, r=ready: attempt(race_app, clock, lk, r))
        outcomes[tuple(results)] += 1
        assert "won" in results
        consistent(race_app, account_id)
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None
    print(f"unlock vs lock outcomes (release, place): {dict(outcomes)}")
