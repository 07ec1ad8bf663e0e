"""The outbox dispatcher: claims due messages, sends them, records the outcome. At-least-once.

Each message goes through two short transactions: the claim (lease + attempt count, committed before
any network I/O, so no row lock is held while a receiver is slow) and the outcome (delivered, retry at
a backoff time, or dead). A dispatcher killed between the two leaves a leased row that any dispatcher
picks up again once the lease has passed. Several dispatchers may run at once (``flask outbox run`` on
many hosts, plus the in-process thread of a dev server); see :mod:`security.delivery.services`.

Webhooks are signed per Standard Webhooks with every secret of the endpoint (rotation); e-mail and SMS
are rendered from the templates with the sealed secrets (codes, links) opened only for the send and
erased from the row once delivered.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy.orm import Session

from security.clock import Clock
from security.crypto import SecretBox, UndecryptableSecret
from security.db import session_scope
from security.delivery.backoff import BackoffPolicy, DeadLetter
from security.delivery.events import envelope_body, schema_problems
from security.delivery.messages import (
    DEFAULT_LINKS,
    MessageKind,
    MessageTemplateError,
    prepare_context,
    render,
)
from security.delivery.outbox import Channel
from security.delivery.senders import (
    DeliveryResult,
    Email,
    LogWebhookSender,
    Mailer,
    Sms,
    SmsSender,
    WebhookRequest,
    WebhookSender,
)
from security.delivery.services import ClaimedMessage, OutboxQueue
from security.delivery.settings import WebhookEndpoint
from security.delivery.signing import signed_headers
from security.entropy import Entropy

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "foxguard_outbox_deliveries_total",
    "Outbox delivery attempts by channel and outcome (delivered, retry, dead, lease_lost)",
    ["channel", "outcome"],
)

MESSAGE_ID_DOMAIN = "foxguard"


class PermanentFailure(Exception):
    """The message can never be sent as it is (unknown template or channel, undecryptable secret).

    It goes straight to the dead-letter list with the reason; an operator can re-queue it once the
    cause (a deploy, a key) is fixed.
    """


@dataclass
class DispatchStats:
    """What one :meth:`Dispatcher.run_once` did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost_lease: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.dead + self.lost_lease


def webhook_body(message: ClaimedMessage) -> bytes:
    """The body of a webhook message (see :func:`security.delivery.events.envelope_body`)."""
    envelope = {
        "type": message.payload.get("type", message.event_type),
        "timestamp": message.payload.get("timestamp", message.created_at.isoformat()),
        "data": message.payload.get("data", {}),
    }
    return envelope_body(message.message_id, envelope)


class Dispatcher:
    """Drains the outbox. Thread-safe to run several instances; each call uses its own sessions."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        clock: Clock,
        entropy: Entropy,
        secret_box: SecretBox,
        endpoints: Mapping[str, WebhookEndpoint],
        webhook_sender: WebhookSender,
        mailer: Mailer,
        sms_sender: SmsSender,
        policy: BackoffPolicy,
        lease: timedelta,
        log_unsent_webhooks: bool = False,
        links: Mapping[str, str] = DEFAULT_LINKS,
        base_url: str = "",
    ) -> None:
        self._session_factory = session_factory
        self._clock = clock
        self._entropy = entropy
        self._box = secret_box
        self._endpoints = dict(endpoints)
        self._webhook_sender = webhook_sender
        self._mailer = mailer
        self._sms = sms_sender
        self._policy = policy
        self._lease = lease
        self._log_unsent = log_unsent_webhooks
        self._log_sender = LogWebhookSender(log)
        self._links = dict(links)
        self._base_url = base_url

    # ------------------------------------------------------------------ loop

    def run_once(self, *, max_messages: int | None = None, stop: threading.Event | None = None) -> DispatchStats:
        """Deliver due messages until none is left (or ``max_messages``, or ``stop`` is set)."""
        stats = DispatchStats()
        while max_messages is None or stats.attempted < max_messages:
            if stop is not None and stop.is_set():
                break
            claimed = self._claim()
            if not claimed:
                break
            for message in claimed:
                self._process(message, stats)
        return stats

    def _claim(self) -> list[ClaimedMessage]:
        # One message per claim: its lease then only has to cover its own send, never a batch.
        with session_scope(self._session_factory) as session:
            return OutboxQueue(session).claim(now=self._clock.now(), lease=self._lease, limit=1)

    def _process(self, message: ClaimedMessage, stats: DispatchStats) -> None:
        try:
            result = self.send(message)
        except PermanentFailure as exc:
            self._record(message, DeliveryResult.failed(f"permanent: {exc}"), stats, permanent=True)
            return
        except Exception as exc:  # a sender bug must not kill the loop; the message is retried
            log.exception("sending outbox message %s failed unexpectedly", message.message_id)
            result = DeliveryResult.failed(f"internal error: {type(exc).__name__}")
        self._record(message, result, stats, permanent=False)

    def _record(
        self, message: ClaimedMessage, result: DeliveryResult, stats: DispatchStats, *, permanent: bool
    ) -> None:
        now = self._clock.now()
        with session_scope(self._session_factory) as session:
            queue = OutboxQueue(session)
            if result.delivered:
                queue.mark_delivered(message, now=now)
                stats.delivered += 1
                outcome = "delivered"
            else:
                error = result.reason or "failed"
                decision = (
                    DeadLetter(message.attempts)
                    if permanent
                    else self._policy.after_failure(
                        message.attempts, now=now, entropy=self._entropy, retry_after=result.retry_after
                    )
                )
                if isinstance(decision, DeadLetter):
                    owned = queue.mark_dead(message, error=error)
                    outcome = "dead"
                    if owned:
                        stats.dead += 1
                        log.warning(
                            "outbox message dead after %d attempt(s)",
                            message.attempts,
                            extra={"message_id": message.message_id, "error": error},
                        )
                else:
                    owned = queue.mark_retry(message, at=decision.at, error=error)
                    outcome = "retry"
                    if owned:
                        stats.retried += 1
                if not owned:
                    stats.lost_lease += 1
                    outcome = "lease_lost"
                stats.errors.append(error)
        # Counted once the outcome is committed.
        DELIVERIES.labels(channel=message.channel, outcome=outcome).inc()

    # ------------------------------------------------------------------ sending

    def send(self, message: ClaimedMessage) -> DeliveryResult:
        """Send one message through its channel (no database access)."""
        if message.channel == Channel.WEBHOOK:
            return self._send_webhook(message)
        if message.channel == Channel.EMAIL:
            return self._send_email(message)
        if message.channel == Channel.SMS:
            return self._send_sms(message)
        raise PermanentFailure(f"unknown channel {message.channel!r}")

    def _send_webhook(self, message: ClaimedMessage) -> DeliveryResult:
        endpoint = self._endpoints.get(message.destination)
        body = webhook_body(message)
        if endpoint is None or not endpoint.url:
            request = WebhookRequest(
                url="", msg_id=message.message_id, event_type=message.event_type, headers={}, body=body
            )
            if self._log_unsent:
                return self._log_sender.send(request)
            return DeliveryResult.failed(f"webhook endpoint {message.destination!r} has no URL configured")
        problems = schema_problems(message.event_type, message.payload.get("data", {}))
        if problems and message.attempts == 1:  # once per message, not on every retry
            log.warning(
                "webhook payload does not match its documented schema",
                extra={"message_id": message.message_id, "event_type": message.event_type, "problems": problems},
            )
        headers = signed_headers(endpoint.parsed_secrets(), message.message_id, body, at=self._clock.now())
        request = WebhookRequest(
            url=endpoint.url, msg_id=message.message_id, event_type=message.event_type, headers=headers, body=body
        )
        return self._webhook_sender.send(request)

    def _secrets(self, message: ClaimedMessage) -> dict[str, str]:
        if not message.sealed:
            return {}
        try:
            value: dict[str, str] = json.loads(self._box.decrypt(message.sealed))
        except UndecryptableSecret as exc:
            raise PermanentFailure(str(exc)) from exc
        return value

    def _render(self, message: ClaimedMessage, channel: str) -> tuple[MessageKind, str, str, tuple[str, ...]]:
        template = str(message.payload.get("template", message.event_type))
        context = message.payload.get("context", {})
        secrets = self._secrets(message)
        try:
            values = prepare_context(context, secrets, links=self._links, base_url=self._base_url)
            rendered = render(template, channel, values)
        except MessageTemplateError as exc:
            raise PermanentFailure(str(exc)) from exc
        # Everything that was sealed is secret, whatever the template spec says.
        sensitive = tuple(dict.fromkeys((*rendered.sensitive, *(str(v) for v in secrets.values() if v))))
        return rendered.kind, rendered.subject, rendered.text, sensitive

    def _send_email(self, message: ClaimedMessage) -> DeliveryResult:
        kind, subject, text, sensitive = self._render(message, "email")
        email = Email(
            to=message.destination,
            subject=subject,
            text=text,
            kind=kind,
            sensitive=sensitive,
            message_id=f"<{message.message_id}@{MESSAGE_ID_DOMAIN}>",
            sent_at=self._clock.now(),
        )
        return self._mailer.send(email)

    def _send_sms(self, message: ClaimedMessage) -> DeliveryResult:
        kind, _, text, sensitive = self._render(message, "sms")
        return self._sms.send(Sms(to=message.destination, text=text, kind=kind, sensitive=sensitive))


class DispatcherThread:
    """Runs a dispatcher in a daemon thread (the development server's in-process delivery)."""

    def __init__(self, dispatcher: Dispatcher, *, poll_interval: float, name: str = "outbox-dispatcher") -> None:
        self._dispatcher = dispatcher
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def wake(self) -> None:
        """Poll now instead of at the next interval (e.g. right after a request wrote messages)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to finish the message in hand and exit; wait up to ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        run_loop(self._dispatcher, stop=self._stop, wake=self._wake, poll_interval=self._poll_interval)


def run_loop(
    dispatcher: Dispatcher,
    *,
    stop: threading.Event,
    poll_interval: float,
    wake: threading.Event | None = None,
    on_pass: Callable[[DispatchStats], None] | None = None,
) -> None:
    """Poll until ``stop`` is set. A database outage is logged and retried at the next poll."""
    wake = wake or threading.Event()
    while not stop.is_set():
        try:
            stats = dispatcher.run_once(stop=stop)
        except Exception:
            log.exception("outbox dispatcher pass failed; retrying after the poll interval")
        else:
            if on_pass is not None and stats.attempted:
                on_pass(stats)
        wake.wait(poll_interval)
        wake.clear()
