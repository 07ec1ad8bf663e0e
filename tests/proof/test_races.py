"""Races on PostgreSQL, repeated: single-use secrets are used once, locks change state once.

Each trial sets up fresh state (a fresh account, so that a loser's failed attempt never feeds the
lockout of the next trial), then releases two contenders together through a barrier. ``TRIALS`` per
property in the normal run, ``LONG_TRIALS`` with ``--long``.

* one reset token confirmed twice, one TOTP code used twice, one recovery code used twice: exactly one
  request succeeds, the other gets a 4xx, every time;
* two simultaneous releases of one lock: exactly one wins, the other gets a conflict, every time;
* release vs a new lock on the same account: both may succeed (in either order), but the account is
  never left ``active`` with an open lock, nor ``locked`` without one (no lost update);
* the same through the operators' HTTP API (bearer tokens of two reviewers): two unlocks of one lock
  (``/v1/review/locks/{id}/unlock``) -> one 200, one 409; an unlock against a manual lock of the same
  account -> consistent status;
* two reviewers deciding one appeal at once (``/v1/review/appeals/{id}/decision``): the second approval of a
  four-eyes appeal, and the only approval of a one-reviewer appeal -> one 200, one 409, and the appeal,
  its reviews, its transitions, the lock and the webhooks show exactly one decision.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from security import create_app
from security.accounts.models import Account
from security.appeals.models import Appeal, AppealHistory, AppealReview
from security.appeals.states import AppealEvent, AppealState
from security.audit.services import AuditLog, verify_audit_log
from security.credentials import totp
from security.crypto import SecretBox
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SystemEntropy
from security.errors import Conflict
from security.locks.models import Lock, LockHistory
from security.locks.services import LockService
from security.locks.states import AccountStatus, LockEvent, LockKind, LockStatus
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key, truncate_all
from tests.credentials.conftest import NEW_PASSWORD, PROFILE, make_settings
from tests.operators.factories import make_operator

TRIALS = 12
LONG_TRIALS = 1000
PASSWORD = "violet-harbour-engine-42"
# Generous limits: the trials all come from one test-client IP; the limits themselves are tested elsewhere.
NO_LIMITS = {
    "reset_requests_per_identifier": "100000 per hour",
    "reset_requests_per_ip": "100000 per hour",
    "reset_confirms_per_ip": "100000 per hour",
}
NO_APPEAL_LIMITS = {key: "100000 per hour" for key in ("appeals_per_identifier", "appeals_per_ip",
                                                        "verifications_per_ip", "messages_per_ip")}
DOCUMENT = "C01X00T47"

pytestmark = pytest.mark.postgres


@pytest.fixture
def race_app(settings, engine, clock):
    truncate_all(engine)
    app = create_app(make_settings(settings, credentials=NO_LIMITS, appeal_limits=NO_APPEAL_LIMITS), clock=clock)
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


# --- the same through the operators' HTTP API -----------------------------------------------------


@pytest.fixture
def reviewers(race_app, clock) -> list[dict[str, str]]:
    """Bearer headers of three reviewers (signed in with password and TOTP)."""
    with runtime(race_app).session_factory() as session:
        operators = [make_operator(race_app, session, clock, name, "reviewer") for name in ("rita", "omar", "ines")]
    headers = []
    for op in operators:
        response = race_app.test_client().post("/v1/review/tokens", json={
            "name": op.name, "password": op.password, "totp_code": op.code(clock.now())})
        assert response.status_code == 201, response.get_json()
        headers.append({"Authorization": f"Bearer {response.get_json()['token']}"})
    return headers


def operator_lock(app, headers: dict[str, str], account_id: str) -> dict[str, Any]:
    response = app.test_client().post(f"/v1/review/accounts/{account_id}/locks", json={"note": "manual hold"},
                                      headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_two_simultaneous_unlocks_over_http(race_app, race_api, reviewers, request):
    outcomes = []
    for n in range(trials(request)):
        account_id = new_account(race_api, n)
        lock = operator_lock(race_app, reviewers[0], account_id)
        body = {"note": "owner verified", "version": lock["version"]}
        path = f"/v1/review/locks/{lock['lock_id']}/unlock"
        outcomes.append(statuses(race_app, *[lambda c, h=h, p=path, b=body: c.post(p, json=b, headers=h)
                                             for h in reviewers[:2]]))
        consistent(race_app, account_id)
    exactly_one_success(outcomes, 200)
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None
        # One release per lock, one account.unlocked per account: the loser wrote nothing.
        assert session.scalar(select(func.count()).select_from(LockHistory)
                              .where(LockHistory.event == LockEvent.OPERATOR_UNLOCK)) == trials(request)
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.event_type == "account.unlocked")) == trials(request)


def test_unlock_against_a_manual_lock_over_http(race_app, race_api, reviewers, request):
    outcomes = Counter()
    for n in range(trials(request)):
        account_id = new_account(race_api, n)
        lock = operator_lock(race_app, reviewers[0], account_id)
        unlock = f"/v1/review/locks/{lock['lock_id']}/unlock"
        body = {"note": "owner verified", "version": lock["version"]}
        place = f"/v1/review/accounts/{account_id}/locks"
        first, second = race_app.test_client(), race_app.test_client()
        results = together(
            lambda c=first, u=unlock, b=body: c.post(u, json=b, headers=reviewers[0]).status_code,
            lambda c=second, p=place: c.post(p, json={"note": "second hold"}, headers=reviewers[1]).status_code,
        )
        outcomes[tuple(results)] += 1
        assert results[0] in (200, 409) and results[1] in (201, 409), results
        assert 200 in results or 201 in results, results
        consistent(race_app, account_id)
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None
    print(f"HTTP unlock vs lock outcomes (unlock, lock): {dict(outcomes)}")


def appeal_pending_review(app, api: ApiClient, box: SecretBox, clock, n: int, kind: LockKind) -> tuple[str, int]:
    """A fresh account locked with ``kind``, appealed and verified: the appeal waits for review."""
    account_id = f"appeal-race-{n}"
    email = f"appeal-race-{n}@example.com"
    profile = {"email": email, "phone": f"+49152{n:08d}", "home_country": "DE", "identity_document": DOCUMENT}
    assert api.put(f"/v1/accounts/{account_id}", json=profile).status_code == 201
    with runtime(app).session_factory() as session:
        service = lock_service(app, session, clock)
        service.place(session.get(Account, account_id), kind=kind, reasons=[{"rule": "race"}], actor="system")
        session.commit()
    client = app.test_client()
    created = client.post("/v1/appeals", json={"identifier": email, "statement": "It was me."})
    assert created.status_code == 202, created.get_json()
    appeal_id, token = created.get_json()["appeal_id"], created.get_json()["appeal_token"]
    with runtime(app).session_factory() as session:
        sealed = session.scalars(select(OutboxMessage.sealed).where(OutboxMessage.event_type == "contact_code",
                                                                    OutboxMessage.destination == email)
                                 .order_by(OutboxMessage.id.desc()).limit(1)).one()
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/v1/appeals/{appeal_id}/verifications"
    code = json.loads(box.decrypt(sealed))["code"]
    assert client.post(path, json={"method": "contact_code", "code": code}, headers=headers).status_code == 200
    done = client.post(path, json={"method": "identity_document", "document": DOCUMENT}, headers=headers)
    assert done.get_json()["state"] == "pending_review", done.get_json()
    with runtime(app).session_factory() as session:
        return appeal_id, session.get(Appeal, uuid.UUID(appeal_id)).version


def decide_race(app, reviewers: list[dict[str, str]], appeal_id: str, version: int) -> list[int]:
    path = f"/v1/review/appeals/{appeal_id}/decision"
    body = {"approve": True, "expected_version": version}
    return statuses(app, *[lambda c, h=h: c.post(path, json=body, headers=h) for h in reviewers])


def one_decision(app, appeal_id: str, *, approvals: int) -> None:
    """The appeal shows exactly one final approval: reviews, transitions, lock and webhooks agree."""
    with runtime(app).session_factory() as session:
        appeal = session.get(Appeal, uuid.UUID(appeal_id))
        reviews = session.scalars(select(AppealReview).where(AppealReview.appeal_id == appeal.id)).all()
        assert len(reviews) == approvals and all(r.approve for r in reviews)
        assert len({r.operator_id for r in reviews}) == approvals
        events = session.scalars(select(AppealHistory.event).where(AppealHistory.appeal_id == appeal.id)).all()
        assert events.count(AppealEvent.APPROVE) == 1 and events.count(AppealEvent.FIRST_APPROVAL) == approvals - 1
        decided = session.scalars(select(OutboxMessage).where(OutboxMessage.event_type == "appeal.decided")).all()
        assert [m.payload["data"]["appeal_id"] for m in decided].count(appeal_id) == 1
        lock = session.get(Lock, appeal.lock_id)
        if appeal.required_actions:
            assert (appeal.state, lock.status) == (AppealState.APPROVED, LockStatus.AWAITING_ACTIONS)
        else:
            assert (appeal.state, lock.status) == (AppealState.RELEASED, LockStatus.RELEASED)
    consistent(app, lock.account_id)


def test_two_second_approvals_of_a_four_eyes_appeal(race_app, race_api, reviewers, clock, settings, request):
    box = SecretBox(settings.secrets.encryption_keys)
    outcomes = []
    for n in range(trials(request)):
        appeal_id, version = appeal_pending_review(race_app, race_api, box, clock, n, LockKind.USER_REPORTED)
        first = race_app.test_client().post(f"/v1/review/appeals/{appeal_id}/decision",
                                            json={"approve": True, "expected_version": version},
                                            headers=reviewers[0])
        assert first.status_code == 200, first.get_json()
        assert first.get_json()["state"] == "pending_review"
        with runtime(race_app).session_factory() as session:
            version = session.get(Appeal, uuid.UUID(appeal_id)).version
        outcomes.append(decide_race(race_app, reviewers[1:], appeal_id, version))
        one_decision(race_app, appeal_id, approvals=2)
    exactly_one_success(outcomes, 200)
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None


def test_two_approvals_of_a_one_reviewer_appeal(race_app, race_api, reviewers, clock, settings, request):
    box = SecretBox(settings.secrets.encryption_keys)
    outcomes = []
    for n in range(trials(request)):
        appeal_id, version = appeal_pending_review(race_app, race_api, box, clock, n, LockKind.RISK)
        outcomes.append(decide_race(race_app, reviewers[:2], appeal_id, version))
        one_decision(race_app, appeal_id, approvals=1)
    exactly_one_success(outcomes, 200)
    with runtime(race_app).session_factory() as session:
        assert verify_audit_log(session)[1] is None
