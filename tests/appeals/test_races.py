"""Appeals under concurrency (real commits, separate connections): exactly one winner, the other 409."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from security.appeals.models import Appeal, AppealReview
from security.appeals.views import appeal_service
from security.clock import FrozenClock
from security.config import Settings
from security.errors import StaleVersion
from security.locks.states import LockKind
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from security.web.deps import deps
from security.web.problems import from_exception
from tests.appeals.conftest import DOCUMENT, AppealClient, create_account, last_code, place_lock, submit
from tests.conftest import ApiClient, issue_key


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; return what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the loser's error is the result under test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _session(app: Flask) -> Any:
    return runtime(app).session_factory()


def _ready_for_review(live_app: Flask, clock: FrozenClock, settings: Settings) -> AppealClient:
    session = _session(live_app)
    try:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
        api = ApiClient(live_app.test_client(), key)
        owner = create_account(api, "acc-race", email="race@example.com", phone="+4915100001111")
        place_lock(session, clock, owner.account_id, LockKind.USER_REPORTED)
        appeal = submit(live_app.test_client(), owner.email)
        code = last_code(session, settings, owner.email)
    finally:
        session.close()
    assert appeal.verify(method="contact_code", code=code).status_code == 200
    assert appeal.verify(method="identity_document", document=DOCUMENT).get_json()["state"] == "pending_review"
    return appeal


def _decide(app: Flask, appeal_id: str, operator_id: str, version: int) -> str:
    with app.test_request_context():
        d = deps()
        try:
            appeal_service(d).decide(uuid.UUID(appeal_id), operator_id, True, None, None, version)
            d.session.commit()
        except Exception:
            d.session.rollback()
            raise
        finally:
            d.session.close()
    return "ok"


def test_two_operators_approving_at_once_one_wins(live_app: Flask, clock: FrozenClock, settings: Settings) -> None:
    appeal = _ready_for_review(live_app, clock, settings)
    session = _session(live_app)
    try:
        version = session.get(Appeal, uuid.UUID(appeal.appeal_id)).version
    finally:
        session.close()
    results = race([lambda: _decide(live_app, appeal.appeal_id, "op-1", version),
                    lambda: _decide(live_app, appeal.appeal_id, "op-2", version)])
    winners = [r for r in results if r == "ok"]
    losers = [r for r in results if r != "ok"]
    assert len(winners) == 1
    # SQLite queues the writers (the loser sees the new version up front); PostgreSQL fails the loser's
    # versioned UPDATE. Both become 409 in the one error mapping.
    assert len(losers) == 1
    assert isinstance(losers[0], StaleVersion | StaleDataError)
    with live_app.test_request_context():
        assert from_exception(losers[0]).status_code == 409
    session = _session(live_app)
    try:
        reviews = session.scalars(select(AppealReview)).all()
        assert len(reviews) == 1
    finally:
        session.close()
    assert appeal.get().get_json()["needed"]["approvals_given"] == 1


def test_the_right_code_sent_twice_at_once_counts_once(
    live_app: Flask, clock: FrozenClock, settings: Settings,
) -> None:
    session = _session(live_app)
    try:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
        api = ApiClient(live_app.test_client(), key)
        owner = create_account(api, "acc-race2", email="race2@example.com", phone="+4915100002222")
        place_lock(session, clock, owner.account_id, LockKind.RISK)
        appeal = submit(live_app.test_client(), owner.email)
        code = last_code(session, settings, owner.email)
    finally:
        session.close()
    results = race([
        lambda: AppealClient(live_app.test_client(), appeal.appeal_id, appeal.token).verify(
            method="contact_code", code=code).status_code
        for _ in range(2)
    ])
    assert sorted(results) == [200, 409]
    body = appeal.get().get_json()
    assert body["state"] == "verifying"
    assert [v["method"] for v in body["verifications"]] == ["contact_code"]
