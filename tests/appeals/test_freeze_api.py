"""POST /v1/freeze/codes and /v1/freeze: "not me", locked at once, no enumeration."""

from __future__ import annotations

from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.appeals.models import ContactCode
from security.clock import FrozenClock
from security.config import Settings
from security.locks.models import Lock
from tests.appeals.conftest import FIXED_REQUEST_ID, PASSWORD, Owner, last_code, messages, webhooks

CODES = "/v1/freeze/codes"
FREEZE = "/v1/freeze"
HEADERS = {"X-Request-Id": FIXED_REQUEST_ID}


def ask_code(client: FlaskClient, identifier: str):  # noqa: ANN201 - test helper
    return client.post(CODES, json={"identifier": identifier}, headers=HEADERS)


def freeze(client: FlaskClient, **body: str):  # noqa: ANN201 - test helper
    return client.post(FREEZE, json=body, headers=HEADERS)


def locks(db_session: Session, account_id: str) -> list[Lock]:
    db_session.expire_all()
    return list(db_session.scalars(select(Lock).where(Lock.account_id == account_id)))


def test_freeze_with_a_code_locks_at_once(client: FlaskClient, db_session: Session, settings: Settings,
                                          owner: Owner) -> None:
    assert ask_code(client, owner.email).status_code == 202
    code = last_code(db_session, settings, owner.email)
    response = freeze(client, identifier=owner.email, code=code, reason="I never made these transfers")
    assert response.status_code == 200, response.get_json()
    reference = response.get_json()["reference"]
    [lock] = locks(db_session, owner.account_id)
    assert (lock.kind, lock.status, lock.reference) == ("user_reported", "active", reference)
    assert lock.reasons == [{"rule": "user_reported", "detail": "I never made these transfers"}]
    assert sorted(lock.required_actions) == ["enroll_totp", "reset_password"]
    account = db_session.get(Account, owner.account_id)
    assert account is not None
    assert account.status == "locked"
    [locked] = webhooks(db_session, "account.locked")
    assert (locked["account_id"], locked["kind"], locked["reference"]) == (owner.account_id, "user_reported",
                                                                           reference)
    # The code is single use; freezing again returns the existing case.
    assert freeze(client, identifier=owner.email, code=code).status_code == 400
    again = freeze(client, identifier=owner.account_id, password=PASSWORD)
    assert again.get_json()["reference"] == reference
    assert len(locks(db_session, owner.account_id)) == 1


def test_freeze_with_the_password(client: FlaskClient, db_session: Session, owner: Owner) -> None:
    response = freeze(client, identifier=owner.phone, password=PASSWORD)
    assert response.status_code == 200
    assert [lock.kind for lock in locks(db_session, owner.account_id)] == ["user_reported"]


def test_unknown_identifiers_and_wrong_proofs_get_one_answer(
    client: FlaskClient, db_session: Session, settings: Settings, owner: Owner,
) -> None:
    code_answers = [ask_code(client, identifier) for identifier in (owner.email, "ghost@example.com", "nobody")]
    assert {a.status_code for a in code_answers} == {202}
    assert len({a.get_data() for a in code_answers}) == 1
    code = last_code(db_session, settings, owner.email)
    wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
    refusals = [
        freeze(client, identifier=owner.email, password="not-the-password-1"),
        freeze(client, identifier="ghost@example.com", password="not-the-password-1"),
        freeze(client, identifier=owner.email, code=wrong),
        freeze(client, identifier="ghost@example.com", code=code),
        freeze(client, identifier="nobody", code=wrong),
    ]
    assert {r.status_code for r in refusals} == {400}
    assert len({r.get_data() for r in refusals}) == 1
    assert refusals[0].get_json()["code"] == "freeze_refused"
    assert locks(db_session, owner.account_id) == []
    # The wrong code was counted (committed although refused).
    row = db_session.scalar(select(ContactCode).where(ContactCode.purpose == "freeze"))
    assert row is not None
    assert row.attempts == 1
    # Only the real account got a message.
    assert [m.destination for m in messages(db_session, event_type="contact_code")] == [owner.email]


def test_code_expires_and_newer_code_voids_older(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    ask_code(client, owner.email)
    first = last_code(db_session, settings, owner.email)
    ask_code(client, owner.email)
    second = last_code(db_session, settings, owner.email)
    if first != second:
        assert freeze(client, identifier=owner.email, code=first).status_code == 400
    clock.advance(timedelta(minutes=16))
    assert freeze(client, identifier=owner.email, code=second).status_code == 400
    assert locks(db_session, owner.account_id) == []


def test_exactly_one_proof(client: FlaskClient, owner: Owner) -> None:
    assert freeze(client, identifier=owner.email).status_code == 422
    both = freeze(client, identifier=owner.email, password=PASSWORD, code="123456")
    assert both.status_code == 422


def test_freeze_is_rate_limited(client: FlaskClient) -> None:
    statuses = [freeze(client, identifier="ghost@example.com", password="x").status_code for _ in range(11)]
    assert statuses == [400] * 10 + [429]


def test_password_freezes_stop_being_checked_after_repeated_refusals(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner,
) -> None:
    for _ in range(5):
        assert freeze(client, identifier=owner.email, password="wrong-password-guess").status_code == 400
    # Even the right password is not checked now (no password oracle beside the login's limits) ...
    assert freeze(client, identifier=owner.email, password=PASSWORD).status_code == 400
    assert locks(db_session, owner.account_id) == []
    # ... but a code to the registered contact still works,
    ask_code(client, owner.email)
    assert freeze(client, identifier=owner.email, code=last_code(db_session, settings, owner.email)).status_code == 200


def test_password_freezes_work_again_after_the_window(
    client: FlaskClient, db_session: Session, clock: FrozenClock, owner: Owner,
) -> None:
    for _ in range(5):
        freeze(client, identifier=owner.email, password="wrong-password-guess")
    clock.advance(minutes=16)
    assert freeze(client, identifier=owner.email, password=PASSWORD).status_code == 200
