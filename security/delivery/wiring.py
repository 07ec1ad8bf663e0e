"""Delivery's ``init_app``: validated settings, the dispatcher built from them, the ``outbox`` CLI group,
the ``webhooks`` section of ``/openapi.json`` and the optional in-process dispatcher thread."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from flask import Flask

from security.delivery.dispatcher import Dispatcher, DispatcherThread
from security.delivery.events import webhook_schemas
from security.delivery.senders import (
    HttpxWebhookSender,
    LogMailer,
    LogSmsSender,
    Mailer,
    SmsSender,
    SmtpMailer,
    WebhookSender,
)
from security.delivery.settings import DeliveryConfig, delivery_config
from security.runtime import Runtime, runtime

log = logging.getLogger(__name__)

CONFIG_KEY = "delivery"
THREAD_KEY = "foxguard.outbox_thread"
STOP_TIMEOUT_S = 10.0


def config_of(rt: Runtime) -> DeliveryConfig:
    """The validated delivery configuration of a running app."""
    value: DeliveryConfig = rt.extras[CONFIG_KEY]
    return value


def build_dispatcher(
    rt: Runtime,
    *,
    webhook_sender: WebhookSender | None = None,
    mailer: Mailer | None = None,
    sms_sender: SmsSender | None = None,
) -> Dispatcher:
    """A dispatcher wired from the app's configuration; tests may swap any sender."""
    config = config_of(rt)
    if mailer is None:
        smtp = config.delivery.smtp
        if config.delivery.mailer == "smtp" and smtp is not None:
            mailer = SmtpMailer(smtp.to_settings())
        else:
            mailer = LogMailer(reveal_secrets=config.reveal_secrets)
    return Dispatcher(
        rt.session_factory,
        clock=rt.clock,
        entropy=rt.entropy,
        secret_box=rt.secret_box,
        endpoints=config.endpoints,
        webhook_sender=webhook_sender or HttpxWebhookSender(timeout=config.webhooks.timeout_s),
        mailer=mailer,
        sms_sender=sms_sender or LogSmsSender(reveal_secrets=config.reveal_secrets),
        policy=config.backoff(),
        lease=config.lease,
        log_unsent_webhooks=config.log_unsent_webhooks,
        links=config.delivery.links,
        base_url=config.public_base_url,
    )


def add_webhooks_section(document: dict[str, Any]) -> None:
    """OpenAPI 3.1 ``webhooks``: one POST per event type with its payload schema."""
    envelopes, components = webhook_schemas()
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    signature_headers = [
        {
            "name": "webhook-id",
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": "Message id, stable across retries: deduplicate on it.",
        },
        {
            "name": "webhook-timestamp",
            "in": "header",
            "required": True,
            "schema": {"type": "integer"},
            "description": "Unix seconds of this attempt; reject if more than 5 minutes off.",
        },
        {
            "name": "webhook-signature",
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": "Space-separated `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` per secret.",
        },
    ]
    webhooks: dict[str, Any] = document.setdefault("webhooks", {})
    for event_type, schema in envelopes.items():
        webhooks[event_type] = {
            "post": {
                "summary": f"{event_type} (Standard Webhooks, signed; see docs/webhooks.md)",
                "parameters": signature_headers,
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                "responses": {"2XX": {"description": "Received. Anything else is retried with backoff."}},
            }
        }


def _start_thread_once(app: Flask) -> None:
    lock: threading.Lock = app.extensions.setdefault("foxguard.outbox_thread_lock", threading.Lock())
    with lock:
        if app.extensions.get(THREAD_KEY) is not None:
            return
        rt = runtime(app)
        thread = DispatcherThread(build_dispatcher(rt), poll_interval=config_of(rt).delivery.poll_interval_s)
        thread.start()
        app.extensions[THREAD_KEY] = thread
        atexit.register(thread.stop, STOP_TIMEOUT_S)
        log.info("in-process outbox dispatcher started")


def init_app(app: Flask) -> None:
    """Validate the delivery settings (fail at start, not at the first send) and register the slice."""
    from security.delivery import metrics
    from security.delivery.cli import outbox_cli
    from security.web import openapi

    rt = runtime(app)
    config = delivery_config(rt.settings)
    rt.extras[CONFIG_KEY] = config
    app.cli.add_command(outbox_cli)
    metrics.register(rt.session_factory, rt.clock)
    if add_webhooks_section not in openapi.EXTRA_SECTIONS:
        openapi.EXTRA_SECTIONS.append(add_webhooks_section)
    if config.delivery.background:
        # Started lazily by the first request: the serving process, never a reloader parent or a
        # CLI command (``flask outbox run`` is the dispatcher there).
        @app.before_request
        def _ensure_dispatcher_thread() -> None:
            if app.extensions.get(THREAD_KEY) is None:
                _start_thread_once(app)
