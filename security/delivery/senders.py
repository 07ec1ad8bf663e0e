"""The outside world of delivery: webhook HTTP, SMTP mail, SMS. Contracts plus real and twin senders.

Every sender returns a :class:`DeliveryResult` instead of raising for a failed delivery: a refused
or failed send is an expected outcome the dispatcher turns into a retry, not an exception. Each
contract has a real implementation, a log sink (the default when nothing is configured) and an
in-memory twin for tests and demos.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum
from types import TracebackType
from typing import Protocol

import httpx

from security.delivery.messages import REDACTED, redact

logger = logging.getLogger(__name__)

# Standard Webhooks recommends 15-30 s; the backend is ours, so stay at the short end.
DEFAULT_WEBHOOK_TIMEOUT = 15.0
DEFAULT_SMTP_TIMEOUT = 30.0
USER_AGENT = "Foxguard-Webhooks/1"
# last_error is stored and shown to operators; keep it short.
MAX_REASON_CHARS = 500
RESPONSE_EXCERPT_CHARS = 200
SUCCESS_STATUS_MIN = 200
SUCCESS_STATUS_MAX = 299
SMTP_PORT = 25
SMTP_SUBMISSION_PORT = 587
SMTPS_PORT = 465


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one attempt. ``reason`` says why it failed; ``retry_after`` is the receiver's hint."""

    delivered: bool
    reason: str | None = None
    retry_after: timedelta | None = None

    @classmethod
    def ok(cls) -> DeliveryResult:
        """A successful delivery."""
        return cls(delivered=True)

    @classmethod
    def failed(cls, reason: str, *, retry_after: timedelta | None = None) -> DeliveryResult:
        """A failed attempt, to be retried by the dispatcher's backoff policy."""
        return cls(delivered=False, reason=reason[:MAX_REASON_CHARS], retry_after=retry_after)


# --------------------------------------------------------------------------------------------
# Webhooks


@dataclass(frozen=True)
class WebhookRequest:
    """A signed webhook ready to POST: ``headers`` already carry the Standard Webhooks signature."""

    url: str
    msg_id: str
    event_type: str
    headers: Mapping[str, str]
    body: bytes


class WebhookSender(Protocol):
    """Sends one signed webhook."""

    def send(self, request: WebhookRequest) -> DeliveryResult:
        """POST the request; a 2xx answer is delivered, anything else (or an error) is a failure."""
        ...


def parse_retry_after(value: str | None) -> timedelta | None:
    """Read a ``Retry-After`` header given in seconds; HTTP-date and garbage values are ignored."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None
    return timedelta(seconds=int(value))


class HttpxWebhookSender:
    """Real webhook sender over httpx. Redirects are not followed (a 3xx is a failure, per the spec)."""

    def __init__(self, *, timeout: float = DEFAULT_WEBHOOK_TIMEOUT, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"user-agent": USER_AGENT}
        )
        self._owns_client = client is None

    def send(self, request: WebhookRequest) -> DeliveryResult:
        headers = {"content-type": "application/json", **request.headers}
        try:
            response = self._client.post(request.url, content=request.body, headers=headers)
        except httpx.TimeoutException as exc:
            return DeliveryResult.failed(f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return DeliveryResult.failed(f"{type(exc).__name__}: {exc}")
        if SUCCESS_STATUS_MIN <= response.status_code <= SUCCESS_STATUS_MAX:
            return DeliveryResult.ok()
        excerpt = response.text[:RESPONSE_EXCERPT_CHARS].strip()
        reason = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
        return DeliveryResult.failed(reason, retry_after=parse_retry_after(response.headers.get("retry-after")))

    def close(self) -> None:
        """Close the HTTP client if this sender created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpxWebhookSender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LogWebhookSender:
    """Null twin used when no endpoint is configured: logs the event type and id, never the body."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logger

    def send(self, request: WebhookRequest) -> DeliveryResult:
        self._log.info(
            "webhook not sent (log sink)",
            extra={"webhook_id": request.msg_id, "event_type": request.event_type, "url": request.url},
        )
        return DeliveryResult.ok()


class MemoryWebhookSender:
    """In-memory twin for tests: records every request; can be told to fail the next N sends."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.sent: list[WebhookRequest] = []
        self.attempts = 0
        self._fail_remaining = fail_first
        self._lock = threading.Lock()

    def send(self, request: WebhookRequest) -> DeliveryResult:
        with self._lock:
            self.attempts += 1
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                return DeliveryResult.failed("simulated failure")
            self.sent.append(request)
        return DeliveryResult.ok()


# --------------------------------------------------------------------------------------------
# E-mail


@dataclass(frozen=True)
class Email:
    """A plain-text e-mail. ``sensitive`` values are redacted by log sinks; ``message_id`` is stable
    across retries (the outbox id) so a mailbox can spot a duplicate."""

    to: str
    subject: str
    text: str
    kind: str = ""
    sensitive: tuple[str, ...] = field(default=(), repr=False)
    message_id: str | None = None
    sent_at: datetime | None = None


class Mailer(Protocol):
    """Sends one e-mail."""

    def send(self, email: Email) -> DeliveryResult:
        """Hand the e-mail to the mail system; a refusal or connection error is a failure."""
        ...


class SmtpSecurity(StrEnum):
    """How the SMTP connection is protected."""

    NONE = "none"  # local relays and tests only
    STARTTLS = "starttls"  # submission port 587
    TLS = "tls"  # implicit TLS, port 465


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to submit mail. The password never appears in ``repr``."""

    host: str
    port: int = SMTP_SUBMISSION_PORT
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    from_address: str = "Foxguard <no-reply@foxguard.invalid>"
    timeout: float = DEFAULT_SMTP_TIMEOUT


def build_email_message(email: Email, *, from_address: str) -> EmailMessage:
    """Turn an :class:`Email` into a MIME message (UTF-8 plain text)."""
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = email.to
    message["Subject"] = email.subject
    if email.message_id:
        message["Message-ID"] = email.message_id
    if email.sent_at is not None:
        message["Date"] = format_datetime(email.sent_at)
    message.set_content(email.text)
    return message


class SmtpMailer:
    """Real mailer over :mod:`smtplib`: one connection per message (simple and robust; volume is low)."""

    def __init__(self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        # Certificate checks are on by default; a custom context lets tests trust a private CA.
        self._ssl_context = ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        if s.security is SmtpSecurity.TLS:
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._ssl_context)
        client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        if s.security is SmtpSecurity.STARTTLS:
            client.starttls(context=self._ssl_context)
        return client

    def send(self, email: Email) -> DeliveryResult:
        s = self._settings
        try:
            message = build_email_message(email, from_address=s.from_address)
        except ValueError as exc:  # e.g. a header with a line break: retrying will not help, but say why
            return DeliveryResult.failed(f"invalid e-mail: {exc}")
        try:
            with self._connect() as client:
                if s.username:
                    client.login(s.username, s.password or "")
                refused = client.send_message(message)
        except smtplib.SMTPResponseException as exc:
            return DeliveryResult.failed(f"SMTP {exc.smtp_code}: {_smtp_text(exc.smtp_error)}")
        except smtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(f"{code}" for code, _ in exc.recipients.values())
            return DeliveryResult.failed(f"recipient refused ({codes})")
        except (smtplib.SMTPException, OSError) as exc:
            return DeliveryResult.failed(f"{type(exc).__name__}: {exc}")
        if refused:
            return DeliveryResult.failed("recipient refused")
        return DeliveryResult.ok()


def _smtp_text(error: bytes | str) -> str:
    return error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)


def mask_address(address: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``; ``+4915112345678`` -> ``+49*******678``."""
    local, at, domain = address.partition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    keep = 3
    if len(address) <= 2 * keep:
        return "*" * len(address)
    return address[:keep] + "*" * (len(address) - 2 * keep) + address[-keep:]


class LogMailer:
    """Default sink: writes the mail to the log. Codes, tokens and the address are hidden unless
    ``reveal_secrets`` (dev mode, so a developer can complete a flow without a mail server)."""

    def __init__(self, log: logging.Logger | None = None, *, reveal_secrets: bool = False) -> None:
        self._log = log or logger
        self._reveal = reveal_secrets

    def send(self, email: Email) -> DeliveryResult:
        text = email.text if self._reveal else redact(email.text, email.sensitive)
        subject = email.subject if self._reveal else redact(email.subject, email.sensitive)
        to = email.to if self._reveal else mask_address(email.to)
        self._log.info("e-mail (log sink) kind=%s to=%s subject=%s\n%s", email.kind, to, subject, text)
        return DeliveryResult.ok()


class MemoryMailer:
    """In-memory twin for tests: keeps every e-mail."""

    def __init__(self) -> None:
        self.outbox: list[Email] = []
        self._lock = threading.Lock()

    def send(self, email: Email) -> DeliveryResult:
        with self._lock:
            self.outbox.append(email)
        return DeliveryResult.ok()


# --------------------------------------------------------------------------------------------
# SMS


@dataclass(frozen=True)
class Sms:
    """A text message to a phone number (E.164)."""

    to: str
    text: str
    kind: str = ""
    sensitive: tuple[str, ...] = field(default=(), repr=False)


class SmsSender(Protocol):
    """Sends one SMS through some provider."""

    def send(self, sms: Sms) -> DeliveryResult:
        """Hand the text to the provider; a refusal or error is a failure."""
        ...


class LogSmsSender:
    """Default sink: writes the SMS to the log, codes and number hidden unless ``reveal_secrets``."""

    def __init__(self, log: logging.Logger | None = None, *, reveal_secrets: bool = False) -> None:
        self._log = log or logger
        self._reveal = reveal_secrets

    def send(self, sms: Sms) -> DeliveryResult:
        text = sms.text if self._reveal else redact(sms.text, sms.sensitive)
        to = sms.to if self._reveal else mask_address(sms.to)
        self._log.info("sms (log sink) kind=%s to=%s: %s", sms.kind, to, text)
        return DeliveryResult.ok()


class MemorySmsSender:
    """In-memory twin for tests: keeps every SMS."""

    def __init__(self) -> None:
        self.outbox: list[Sms] = []
        self._lock = threading.Lock()

    def send(self, sms: Sms) -> DeliveryResult:
        with self._lock:
            self.outbox.append(sms)
        return DeliveryResult.ok()


__all__ = [
    "REDACTED",
    "DeliveryResult",
    "Email",
    "HttpxWebhookSender",
    "LogMailer",
    "LogSmsSender",
    "LogWebhookSender",
    "Mailer",
    "MemoryMailer",
    "MemorySmsSender",
    "MemoryWebhookSender",
    "SmtpMailer",
    "SmtpSecurity",
    "SmtpSettings",
    "Sms",
    "SmsSender",
    "WebhookRequest",
    "WebhookSender",
]
