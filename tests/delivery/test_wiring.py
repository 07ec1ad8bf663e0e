"""Delivery settings, the outbox CLI, /openapi.json webhooks and the in-process dispatcher flag."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError
from sqlalchemy import select

from security.audit.models import AuditEntry
from security.config import load_settings
from security.delivery.events import WebhookEvent
from security.delivery.outbox import OutboxMessage, OutboxStatus
from security.delivery.services import OutboxQueue
from security.delivery.settings import DeliveryConfig, delivery_config
from security.delivery.signing import WebhookSecret
from security.delivery.wiring import THREAD_KEY
from security.runtime import runtime

from .conftest import WebhookReceiver
from .test_dispatcher import endpoint_config, enqueue, received_ids, rows

SECRET = WebhookSecret(b"s" * 32).serialize()


def config(env: str = "testing", webhooks: dict[str, Any] | None = None, **delivery: Any) -> DeliveryConfig:
    return DeliveryConfig.model_validate({"env": env, "webhooks": webhooks or {}, "delivery": delivery})


# ------------------------------------------------------------------------ settings


def test_defaults_follow_the_documented_schedule_and_reveal_only_in_development() -> None:
    testing = config()
    assert testing.backoff().max_attempts == 7
    assert testing.lease.total_seconds() == 300
    assert testing.reveal_secrets is False
    assert config("development").reveal_secrets is True
    assert config("development", reveal_secrets_in_log=False).reveal_secrets is False
    assert testing.log_unsent_webhooks is True


@pytest.mark.parametrize(
    ("webhooks", "delivery", "message"),
    [
        ({"endpoints": [{"name": "b", "url": "https://x/h"}]}, {}, "no signing secret"),
        ({"endpoints": [{"name": "b", "url": "https://x/h", "secrets": ["whsec_c2hvcnQ="]}]}, {}, "24-64 bytes"),
        ({"endpoints": [{"name": "b", "url": "ftp://x/h", "secrets": [SECRET]}]}, {}, "http"),
        ({"endpoints": [{"name": "b"}, {"name": "b"}]}, {}, "unique"),
        ({}, {"mailer": "smtp"}, "delivery.smtp"),
        ({}, {"retry_delays_s": [5, -1]}, "negative"),
        ({}, {"mailer": "pigeon"}, "mailer"),
        ({}, {"lease_s": 0}, "lease_s"),
        ({"timeout_s": 30}, {"lease_s": 20}, "longer than the send timeout"),
        ({}, {"mailer": "smtp", "smtp": {"host": "smtp.example.com", "security": "none", "username": "u"}}, "in clear"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(
    webhooks: dict[str, Any], delivery: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        config(webhooks=webhooks, **delivery)


def test_production_refuses_endpoints_without_url_and_revealing_logs() -> None:
    with pytest.raises(ValidationError, match="without url"):
        config("production", webhooks={"endpoints": [{"name": "backend"}]})
    with pytest.raises(ValidationError, match="no \\[\\[webhooks.endpoints\\]\\] configured"):
        config("production")
    real = {"endpoints": [{"name": "backend", "url": "https://b/h", "secrets": [SECRET]}]}
    with pytest.raises(ValidationError, match="reveal_secrets_in_log"):
        config("production", webhooks=real, reveal_secrets_in_log=True)
    ok = config("production", webhooks={"endpoints": [{"name": "backend", "url": "https://b/h", "secrets": [SECRET]}]})
    assert ok.log_unsent_webhooks is False


def test_environment_overrides_reach_the_endpoints() -> None:
    settings = load_settings(
        "testing",
        environ={
            "FOXGUARD_WEBHOOKS__ENDPOINTS": f'[{{name = "backend", url = "https://b/h", secrets = ["{SECRET}"]}}]',
            "FOXGUARD_DELIVERY__SMTP__PASSWORD": "from-env",
            "FOXGUARD_DELIVERY__MAILER": "smtp",
        },
    )
    parsed = delivery_config(settings)
    assert parsed.endpoints["backend"].url == "https://b/h"
    assert parsed.endpoints["backend"].parsed_secrets()[0].serialize() == SECRET
    assert parsed.delivery.smtp is not None
    assert parsed.delivery.smtp.password == "from-env"
    assert "from-env" not in repr(parsed)
    assert SECRET not in repr(parsed)


def test_the_app_refuses_to_start_with_invalid_delivery_settings(database_url: str) -> None:
    from security import create_app

    settings = load_settings(
        "testing",
        {"database": {"url": database_url}, "webhooks": {"endpoints": [{"name": "b", "url": "https://x"}]}},
        environ={},
    )
    with pytest.raises(ValidationError, match="no signing secret"):
        create_app(settings)


# ------------------------------------------------------------------------ /openapi.json


def test_openapi_document_has_a_webhooks_section_with_resolvable_schemas(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    webhooks = document["webhooks"]
    assert set(webhooks) == {event.value for event in WebhookEvent}
    schemas = document["components"]["schemas"]
    assert "Problem" in schemas  # the API's own components are kept
    locked = webhooks["account.locked"]["post"]
    assert {p["name"] for p in locked["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    envelope = locked["requestBody"]["content"]["application/json"]["schema"]
    assert envelope["required"] == ["id", "type", "timestamp", "data"]
    ref = envelope["properties"]["data"]["$ref"]
    payload = schemas[ref.rsplit("/", 1)[1]]
    assert {"account_id", "lock_id", "kind"} <= set(payload["required"])
    reason_ref = payload["properties"]["reasons"]["items"]["$ref"]
    assert reason_ref.rsplit("/", 1)[1] in schemas


# ------------------------------------------------------------------------ CLI


def test_cli_retry_and_list(delivery_app: Callable[..., Flask]) -> None:
    app = delivery_app(webhooks={"endpoints": [{"name": "backend"}]})
    runner = app.test_cli_runner()
    assert "no messages" in runner.invoke(args=["outbox", "list"]).output
    usage = runner.invoke(args=["outbox", "retry"])
    assert usage.exit_code == 2
    assert "exactly one of REF or --all-dead" in usage.output
    missing = runner.invoke(args=["outbox", "retry", "999"])
    assert missing.exit_code == 1
    assert "no outbox message 999" in missing.output

    [msg_id] = enqueue(app, [("account.locked", "A")])
    delivered = runner.invoke(args=["outbox", "run", "--once"])
    assert "delivered 1" in delivered.output
    again = runner.invoke(args=["outbox", "retry", msg_id])
    assert again.exit_code == 1
    assert "was delivered" in again.output

    [pending_id] = enqueue(app, [("account.unlocked", "A")])
    with runtime(app).session_factory() as session:
        OutboxQueue(session).claim(now=runtime(app).clock.now(), lease=timedelta(minutes=5))
        session.commit()
    in_flight = runner.invoke(args=["outbox", "retry", pending_id])
    assert in_flight.exit_code == 1
    assert "leased by a dispatcher" in in_flight.output
    with runtime(app).session_factory() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.message_id == pending_id)).one()
        row.status, row.attempts, row.last_error, row.lease_until = OutboxStatus.DEAD, 7, "HTTP 500", None
        session.commit()
    listing = runner.invoke(args=["outbox", "list", "--dead"])
    assert pending_id in listing.output
    assert "HTTP 500" in listing.output
    assert msg_id not in listing.output
    requeued = runner.invoke(args=["outbox", "retry", pending_id])
    assert requeued.exit_code == 0, requeued.output
    [_, row_after] = rows(app)
    assert (row_after.status, row_after.attempts) == (OutboxStatus.PENDING, 0)
    with runtime(app).session_factory() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "delivery:outbox:retry")).all()
        assert entry.subject_id == pending_id
        assert entry.actor == "cli"
        assert entry.data["previous_status"] == "dead"


def test_cli_purge_deletes_only_old_delivered_messages(delivery_app: Callable[..., Flask], clock: Any) -> None:
    app = delivery_app(webhooks={"endpoints": [{"name": "backend"}]})
    runner = app.test_cli_runner()
    [old] = enqueue(app, [("account.locked", "A")])
    assert "delivered 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    clock.advance(days=31)
    [recent] = enqueue(app, [("account.unlocked", "A")])
    assert "delivered 1" in runner.invoke(args=["outbox", "run", "--once"]).output
    [waiting] = enqueue(app, [("mfa.enabled", "B")])
    with runtime(app).session_factory() as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.message_id == waiting)).one()
        row.status = OutboxStatus.DEAD
        session.commit()

    result = runner.invoke(args=["outbox", "purge", "--older-than-days", "30"])

    assert result.exit_code == 0, result.output
    assert "1 delivered message(s) purged" in result.output
    assert {r.message_id for r in rows(app)} == {recent, waiting}
    assert old not in {r.message_id for r in rows(app)}


# ------------------------------------------------------------------------ in-process dispatcher


def test_background_flag_starts_one_dispatcher_thread_on_the_first_request(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver()
    app = delivery_app(webhooks=endpoint_config(receiver.url), delivery={"background": True, "poll_interval_s": 0.05})
    assert app.extensions.get(THREAD_KEY) is None  # nothing runs before the app serves
    client = app.test_client()
    client.get("/healthz")
    client.get("/healthz")
    thread = app.extensions[THREAD_KEY]
    try:
        assert thread.alive
        assert sum(t.name == "outbox-dispatcher" for t in threading.enumerate()) == 1
        ids = enqueue(app, [("login.new_device", "A")])
        for _ in range(200):
            if received_ids(receiver) == ids:
                break
            threading.Event().wait(0.025)
    finally:
        thread.stop(timeout=5)
    assert received_ids(receiver) == ids
    assert not thread.alive


# ------------------------------------------------------------------------ /metrics


def test_metrics_report_the_outbox_backlog(app: Flask, client: FlaskClient, clock: Any) -> None:
    from security.delivery.outbox import Outbox

    rt = runtime(app)
    with rt.session_factory() as session:
        box = Outbox(session, clock=rt.clock, entropy=rt.entropy, secret_box=rt.secret_box)
        box.webhook("account.locked", {"account_id": "A"}, ordering_key="A")
        box.webhook("account.unlocked", {"account_id": "A"}, ordering_key="A")
        dead = box.email("a@example.com", "lock_notice", {})
        session.flush()
        dead.status = OutboxStatus.DEAD
        session.commit()
    clock.advance(seconds=90)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'foxguard_outbox_messages{channel="webhook",status="pending"} 2.0' in text
    assert 'foxguard_outbox_messages{channel="email",status="dead"} 1.0' in text
    assert "foxguard_outbox_oldest_pending_seconds 90.0" in text
