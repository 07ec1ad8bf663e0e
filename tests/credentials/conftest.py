"""Helpers for the credentials slice's API tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from security import create_app
from security.clock import FrozenClock
from security.config import Settings
from security.credentials import totp
from security.delivery.outbox import OutboxMessage
from tests.conftest import joined_session

ACCOUNT = "acc-1"
PROFILE = {"email": "Ana@Example.com", "phone": "+4915112345678", "home_country": "DE"}
OLD_PASSWORD = "violet-harbour-engine-42"
NEW_PASSWORD = "copper-lantern-meadow-77"
# A fixed request id makes problem bodies byte-comparable across requests.
FIXED_REQUEST_ID = "req-cred-test-0001"


def make_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with extra sections/keys merged in (e.g. ``credentials={...}``)."""
    data = base.model_dump()
    for section, values in overrides.items():
        data[section] = {**(data.get(section) or {}), **values}
    return Settings.model_validate(data)


@pytest.fixture
def app_factory(settings: Settings, connection: Connection, clock: FrozenClock) -> Callable[..., Flask]:
    """Build an app on the test connection with some settings changed."""

    def build(**overrides: Any) -> Flask:
        return create_app(
            make_settings(settings, **overrides), clock=clock, session_factory=lambda: joined_session(connection)
        )

    return build


def create_account(api: Any, account_id: str = ACCOUNT, *, password: str = OLD_PASSWORD, **profile: Any) -> None:
    response = api.put(f"/v1/accounts/{account_id}", json={**PROFILE, **profile})
    assert response.status_code in (200, 201), response.get_json()
    response = api.put(f"/v1/accounts/{account_id}/password", json={"password": password})
    assert response.status_code == 204, response.get_json()


def enroll_totp(api: Any, clock: FrozenClock, account_id: str = ACCOUNT) -> tuple[str, list[str]]:
    """Enroll and confirm TOTP; return the secret and the recovery codes. Moves the clock one step on."""
    started = api.post(f"/v1/accounts/{account_id}/totp")
    assert started.status_code == 201, started.get_json()
    secret = started.get_json()["secret"]
    confirmed = api.post(f"/v1/accounts/{account_id}/totp/confirm", json={"code": totp.code_at(secret, clock.now())})
    assert confirmed.status_code == 200, confirmed.get_json()
    clock.advance(seconds=totp.PERIOD_SECONDS)  # the confirming step is used up
    return secret, confirmed.get_json()["recovery_codes"]


def outbox(session: Session, *, channel: str | None = None, event_type: str | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if channel is not None:
        query = query.where(OutboxMessage.channel == channel)
    if event_type is not None:
        query = query.where(OutboxMessage.event_type == event_type)
    return list(session.scalars(query))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Every record's message and attributes (JSON logs print the extras too)."""
        return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in self.records)


@contextmanager
def capture_logs() -> Iterator[_Collect]:
    """Everything logged at any level, including the ``security`` loggers (which do not propagate).

    Enter it after the app was created, so the app's logging set-up cannot remove the handler.
    """
    handler = _Collect()
    loggers = [logging.getLogger(), logging.getLogger("security")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def captured_logs(app: Flask) -> Iterator[_Collect]:
    """:func:`capture_logs` for a test using the ``app`` fixture."""
    with capture_logs() as handler:
        yield handler
