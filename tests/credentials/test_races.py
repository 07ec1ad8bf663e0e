"""Single use under concurrency: two requests racing with the same token or code, exactly one wins."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select

from security.credentials import totp
from security.crypto import SecretBox
from security.delivery.outbox import OutboxMessage
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key
from tests.credentials.conftest import ACCOUNT, NEW_PASSWORD, create_account, enroll_totp


def race(app: Flask, request: Callable[[Any], Any], contenders: int = 2) -> list[int]:
    """Run ``request(client)`` in ``contenders`` threads released together; return the statuses."""
    barrier = threading.Barrier(contenders)
    statuses: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        client = app.test_client()
        barrier.wait()
        status = request(client).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=run) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


def live_api(app: Flask, clock: Any) -> ApiClient:
    session = runtime(app).session_factory()
    try:
        key = issue_key(session, clock, "wallet-backend", ALL_SCOPES)
    finally:
        session.close()
    return ApiClient(app.test_client(), key)


def test_one_reset_token_used_concurrently_succeeds_once(live_app, clock, settings):
    api = live_api(live_app, clock)
    create_account(api)
    assert api.client.post("/v1/password-resets", json={"identifier": ACCOUNT}).status_code == 202
    session = runtime(live_app).session_factory()
    try:
        sealed = session.scalars(
            select(OutboxMessage.sealed).where(OutboxMessage.event_type == "password_reset")
        ).one()
    finally:
        session.close()
    token = json.loads(SecretBox(settings.secrets.encryption_keys).decrypt(sealed))["token"]

    statuses = race(
        live_app, lambda c: c.post("/v1/password-resets/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    )
    assert statuses == [204, 400]


def test_one_totp_code_used_concurrently_is_accepted_once(live_app, clock):
    api = live_api(live_app, clock)
    create_account(api)
    secret, _ = enroll_totp(api, clock)
    code = totp.code_at(secret, clock.now())
    headers = {"Authorization": f"Bearer {api.key}"}
    statuses = race(
        live_app,
        lambda c: c.post(f"/v1/accounts/{ACCOUNT}/totp/recovery-codes", json={"totp_code": code}, headers=headers),
    )
    assert statuses == [200, 400]


def test_one_recovery_code_used_concurrently_is_accepted_once(live_app, clock):
    api = live_api(live_app, clock)
    create_account(api)
    _, codes = enroll_totp(api, clock)
    headers = {"Authorization": f"Bearer {api.key}"}
    statuses = race(
        live_app,
        lambda c: c.post(
            f"/v1/accounts/{ACCOUNT}/totp/recovery-codes", json={"recovery_code": codes[0]}, headers=headers
        ),
    )
    assert statuses == [200, 400]


def test_concurrent_disables_with_different_factors_disable_once(live_app, clock):
    api = live_api(live_app, clock)
    create_account(api)
    secret, codes = enroll_totp(api, clock)
    headers = {"Authorization": f"Bearer {api.key}"}
    bodies = iter([{"totp_code": totp.code_at(secret, clock.now())}, {"recovery_code": codes[0]}])
    lock = threading.Lock()

    def disable(client: Any) -> Any:
        with lock:
            body = next(bodies)
        return client.delete(f"/v1/accounts/{ACCOUNT}/totp", json=body, headers=headers)

    statuses = race(live_app, disable)
    # The loser sees either "not enabled" (serialised) or a code that no longer exists (interleaved).
    assert statuses[0] == 204
    assert statuses[1] in (400, 409)
    session = runtime(live_app).session_factory()
    try:
        announced = session.scalars(
            select(OutboxMessage.event_type).where(OutboxMessage.event_type == "mfa.disabled")
        ).all()
    finally:
        session.close()
    assert announced == ["mfa.disabled"]
