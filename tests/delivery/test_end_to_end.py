"""Real flows of other slices, delivered by the dispatcher: what leaves Foxguard matches docs/webhooks.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from flask import Flask
from flask.testing import FlaskClient

from security.clock import FrozenClock
from security.delivery.events import schema_problems
from security.delivery.senders import MemoryMailer, MemoryWebhookSender
from security.delivery.settings import WebhookEndpoint
from security.delivery.signing import WebhookSecret, verify_webhook
from security.delivery.wiring import build_dispatcher
from security.runtime import runtime
from tests.conftest import ApiClient
from tests.credentials.conftest import ACCOUNT, NEW_PASSWORD, create_account
from tests.risk.conftest import Flows

SECRET = WebhookSecret(b"e" * 32)


def with_endpoint(app: Flask, monkeypatch: Any) -> None:
    """Give the app a signed webhook endpoint (the outbox writes one message per endpoint name)."""
    config = runtime(app).extras["delivery"]
    endpoint = WebhookEndpoint(name="backend", url="http://backend.invalid/hook", secrets=(SECRET.serialize(),))
    webhooks = config.webhooks.model_copy(update={"endpoints": (endpoint,)})
    monkeypatch.setitem(runtime(app).extras, "delivery", config.model_copy(update={"webhooks": webhooks}))


def deliver(app: Flask) -> tuple[MemoryMailer, MemoryWebhookSender]:
    mailer, webhooks = MemoryMailer(), MemoryWebhookSender()
    build_dispatcher(runtime(app), mailer=mailer, webhook_sender=webhooks).run_once()
    return mailer, webhooks


def envelopes(sender: MemoryWebhookSender) -> list[dict[str, Any]]:
    """Verify each webhook as the backend would (at its own signing time) and return the bodies."""
    out = []
    for request in sender.sent:
        at = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
        out.append(verify_webhook(request.body, request.headers, [SECRET.serialize()], at=at))
    return out


def test_password_reset_link_arrives_by_mail_and_works(
    app: Flask, client: FlaskClient, api: ApiClient, monkeypatch: Any
) -> None:
    with_endpoint(app, monkeypatch)
    create_account(api)
    assert client.post("/v1/password-resets", json={"identifier": "ana@example.com"}).status_code == 202

    mailer, webhooks = deliver(app)

    [mail] = mailer.outbox
    assert mail.to.lower() == "ana@example.com"
    assert mail.subject == "Reset your password"
    match = re.search(r"/reset-password#token=(\S+)", mail.text)
    assert match is not None, mail.text
    token = unquote(match.group(1))
    assert token in mail.sensitive
    confirmed = client.post("/v1/password-resets/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert confirmed.status_code == 204, confirmed.get_json()

    _, more = deliver(app)
    sent = envelopes(webhooks) + envelopes(more)
    # The account's first password, the reset request, the reset itself: in that order.
    assert [e["type"] for e in sent] == ["password.changed", "password.reset_requested", "password.changed"]
    for envelope in sent:
        assert envelope["data"]["account_id"] == ACCOUNT
        assert schema_problems(envelope["type"], envelope["data"]) == [], envelope


def test_brute_force_lock_and_its_expiry_reach_the_backend_in_order(
    app: Flask, api: ApiClient, clock: FrozenClock, monkeypatch: Any
) -> None:
    with_endpoint(app, monkeypatch)
    flows = Flows(api, clock)
    flows.account()
    for _ in range(5):
        flows.login(password="nope-nope-1")
        clock.advance(seconds=5)
    clock.advance(seconds=61)
    assert flows.login().get_json()["decision"] == "allow"  # the temporary lock expired

    _, webhooks = deliver(app)

    sent = envelopes(webhooks)
    assert [e["type"] for e in sent] == ["password.changed", "account.locked", "account.unlocked"]
    locked, unlocked = sent[1]["data"], sent[2]["data"]
    assert (locked["kind"], locked["lock_id"]) == ("brute_force", unlocked["lock_id"])
    assert unlocked["resolution"] == "expired"
    for envelope in sent:
        assert schema_problems(envelope["type"], envelope["data"]) == [], envelope
