"""Helpers for the appeals slice's API tests: accounts, locks, codes from the outbox, appeal flows."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.appeals.views import appeal_service
from security.audit.services import AuditLog
from security.clock import FrozenClock
from security.config import Settings
from security.crypto import SecretBox
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SystemEntropy
from security.locks.models import Lock
from security.locks.services import LockService
from security.locks.states import LockKind, RequiredAction
from security.risk.models import RiskEvent
from security.web.deps import deps
from tests.conftest import ApiClient

PASSWORD = "violet-harbour-engine-42"
NEW_PASSWORD = "copper-lantern-meadow-77"
DOCUMENT = "C01X00T47"
# A fixed request id makes problem bodies byte-comparable across requests.
FIXED_REQUEST_ID = "req-appeals-test-0001"
APPEALS = "/v1/appeals"


@dataclass
class Owner:
    account_id: str
    email: str
    phone: str


def create_account(api: ApiClient, account_id: str, *, email: str, phone: str, document: str | None = DOCUMENT,
                   password: str = PASSWORD) -> Owner:
    profile: dict[str, Any] = {"email": email, "phone": phone, "home_country": "DE"}
    if document is not None:
        profile["identity_document"] = document
    response = api.put(f"/v1/accounts/{account_id}", json=profile)
    assert response.status_code in (200, 201), response.get_json()
    response = api.put(f"/v1/accounts/{account_id}/password", json={"password": password})
    assert response.status_code == 204, response.get_json()
    return Owner(account_id, email, phone)


@pytest.fixture
def owner(api: ApiClient) -> Owner:
    return create_account(api, "acc-ana", email="ana@example.com", phone="+4915112345678")


@pytest.fixture
def other(api: ApiClient) -> Owner:
    return create_account(api, "acc-bob", email="bob@example.com", phone="+4915187654321")


def lock_service(db_session: Session, clock: FrozenClock) -> LockService:
    """The locks slice's service on the test session (as the risk and operator paths use it)."""
    outbox = Outbox(db_session, clock=clock, entropy=SystemEntropy(),
                    secret_box=SecretBox(list(Settings().secrets.encryption_keys)))
    return LockService(db_session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(db_session, clock=clock),
                       outbox=outbox)


def place_lock(db_session: Session, clock: FrozenClock, account_id: str, kind: LockKind, *,
               reasons: list[dict[str, Any]] | None = None, expires_at: datetime | None = None,
               required_actions: tuple[RequiredAction, ...] = ()) -> Lock:
    """Lock an account the way the risk/brute-force/operator paths do (through LockService)."""
    service = lock_service(db_session, clock)
    account = db_session.get(Account, account_id)
    assert account is not None
    lock = service.place(account, kind=kind, reasons=reasons or [{"rule": f"test.{kind}", "detail": f"{kind} lock"}],
                         actor="test", expires_at=expires_at, required_actions=required_actions)
    db_session.commit()
    return lock


def add_transactions(db_session: Session, account_id: str, rows: list[tuple[str, datetime]]) -> None:
    for amount, occurred_at in rows:
        db_session.add(RiskEvent(
            id=uuid.uuid4(), kind="transaction", account_id=account_id, occurred_at=occurred_at,
            received_at=occurred_at, amount=amount, currency="EUR", payload={},
        ))
    db_session.commit()


def messages(db_session: Session, *, channel: str | None = None, event_type: str | None = None,
             destination: str | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id)
    if channel is not None:
        query = query.where(OutboxMessage.channel == channel)
    if event_type is not None:
        query = query.where(OutboxMessage.event_type == event_type)
    if destination is not None:
        query = query.where(OutboxMessage.destination == destination)
    return list(db_session.scalars(query))


def webhooks(db_session: Session, event_type: str) -> list[dict[str, Any]]:
    return [m.payload["data"] for m in messages(db_session, channel="webhook", event_type=event_type)]


def last_code(db_session: Session, settings: Settings, destination: str) -> str:
    """The contact code sealed in the newest code message to ``destination``."""
    found = messages(db_session, event_type="contact_code", destination=destination)
    assert found, f"no contact code sent to {destination}"
    sealed = found[-1].sealed
    assert sealed is not None
    return str(json.loads(SecretBox(settings.secrets.encryption_keys).decrypt(sealed))["code"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Request-Id": FIXED_REQUEST_ID}


@dataclass
class AppealClient:
    """The user's side of one appeal."""

    client: FlaskClient
    appeal_id: str
    token: str

    def get(self) -> Any:
        return self.client.get(f"{APPEALS}/{self.appeal_id}", headers=bearer(self.token))

    def verify(self, **body: Any) -> Any:
        return self.client.post(f"{APPEALS}/{self.appeal_id}/verifications", json=body, headers=bearer(self.token))

    def post(self, path: str, json: Any = None) -> Any:
        return self.client.post(f"{APPEALS}/{self.appeal_id}{path}", json=json, headers=bearer(self.token))


def submit(client: FlaskClient, identifier: str, statement: str = "It was not me, please unlock.") -> AppealClient:
    response = client.post(APPEALS, json={"identifier": identifier, "statement": statement},
                           headers={"X-Request-Id": FIXED_REQUEST_ID})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    return AppealClient(client, body["appeal_id"], body["appeal_token"])


def decide(app: Flask, appeal_id: str, operator_id: str, approve: bool, *, reason: str | None = None,
           note: str | None = None, expected_version: int | None = None) -> None:
    """Call the service API the operators' review API uses, in its own committed unit of work."""
    with app.test_request_context():
        d = deps()
        service = appeal_service(d)
        appeal_uuid = uuid.UUID(appeal_id)
        version = expected_version if expected_version is not None else service.get(appeal_uuid).version
        try:
            service.decide(appeal_uuid, operator_id, approve, note, reason, version)
            d.session.commit()
        finally:
            d.session.rollback()
            d.session.close()
