"""Senders against real local receivers: HTTP on 127.0.0.1 and aiosmtpd."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Thread

import pytest

from security.delivery.events import envelope_body
from security.delivery.messages import REDACTED, MessageKind, render
from security.delivery.senders import (
    DeliveryResult,
    Email,
    HttpxWebhookSender,
    LogMailer,
    LogSmsSender,
    LogWebhookSender,
    MemoryMailer,
    MemoryWebhookSender,
    Sms,
    SmtpMailer,
    SmtpSecurity,
    SmtpSettings,
    WebhookRequest,
    mask_address,
    parse_retry_after,
)
from security.delivery.signing import WebhookSecret, signed_headers, verify_webhook

from .conftest import SMTP_PASSWORD, SMTP_USER, SmtpSink, TlsMaterial, WebhookReceiver

SECRET = WebhookSecret(b"k" * 32)
# The app's logging setup stops "security.*" from propagating; give the sinks a logger caplog sees.
SINK_LOG = logging.getLogger("tests.delivery.sink")


def signed_request(url: str, n: int = 1) -> WebhookRequest:
    msg_id = f"msg_{n:032x}"
    envelope = {"type": "account.locked", "timestamp": "2026-11-25T00:00:00+00:00", "data": {"account_id": f"a{n}"}}
    body = envelope_body(msg_id, envelope)
    headers = signed_headers([SECRET], msg_id, body, at=datetime.now(UTC))
    return WebhookRequest(url=url, msg_id=msg_id, event_type="account.locked", headers=headers, body=body)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------- webhooks


def test_2xx_is_delivered_and_the_receiver_can_verify_it(
    webhook_receiver: Callable[..., WebhookReceiver],
) -> None:
    receiver = webhook_receiver()
    request = signed_request(receiver.url)
    with HttpxWebhookSender(timeout=5) as sender:
        assert sender.send(request) == DeliveryResult.ok()
    [got] = receiver.requests
    assert got.path == "/hooks/foxguard"
    assert got.headers["content-type"] == "application/json"
    assert got.body == request.body
    envelope = verify_webhook(got.body, got.headers, [SECRET.serialize()], at=datetime.now(UTC))
    assert envelope["id"] == got.headers["webhook-id"] == request.msg_id
    assert envelope["data"] == {"account_id": "a1"}


def test_non_2xx_is_a_failure_with_the_status_as_reason(
    webhook_receiver: Callable[..., WebhookReceiver],
) -> None:
    receiver = webhook_receiver(fail_first=1, fail_status=500)
    with HttpxWebhookSender(timeout=5) as sender:
        first = sender.send(signed_request(receiver.url))
        second = sender.send(signed_request(receiver.url))
    assert first.delivered is False
    assert first.reason == "HTTP 500: try later"
    assert second.delivered is True
    assert len(receiver.requests) == 2


def test_connection_refused_is_a_failure_not_an_exception() -> None:
    with HttpxWebhookSender(timeout=2) as sender:
        result = sender.send(signed_request(f"http://127.0.0.1:{closed_port()}/x"))
    assert result.delivered is False
    assert result.reason is not None
    assert "ConnectError" in result.reason


def test_slow_receiver_times_out(webhook_receiver: Callable[..., WebhookReceiver]) -> None:
    receiver = webhook_receiver(delay=1.0)
    with HttpxWebhookSender(timeout=0.2) as sender:
        result = sender.send(signed_request(receiver.url))
    assert result.delivered is False
    assert result.reason is not None
    assert result.reason.startswith("timeout")


class _RedirectingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(302 if self.path == "/old" else 429)
        self.send_header("location", "/new")
        self.send_header("retry-after", "120")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def test_redirects_are_not_followed_and_retry_after_is_read() -> None:
    server = HTTPServer(("127.0.0.1", 0), _RedirectingHandler)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with HttpxWebhookSender(timeout=5) as sender:
            redirected = sender.send(signed_request(base + "/old"))
            throttled = sender.send(signed_request(base + "/busy"))
    finally:
        server.shutdown()
        server.server_close()
    assert redirected.delivered is False
    assert redirected.reason == "HTTP 302"
    assert throttled.delivered is False
    assert throttled.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", timedelta(seconds=30)),
        (" 5 ", timedelta(seconds=5)),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        ("-3", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value) == expected


def test_failure_reasons_are_truncated() -> None:
    assert len(DeliveryResult.failed("x" * 5000).reason or "") == 500


def test_log_webhook_sender_never_logs_the_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    request = signed_request("http://unused")
    assert LogWebhookSender(SINK_LOG).send(request).delivered
    assert request.msg_id in caplog.records[0].__dict__["webhook_id"]
    assert "a1" not in caplog.text


def test_memory_webhook_sender_fails_first_n() -> None:
    sender = MemoryWebhookSender(fail_first=2)
    results = [sender.send(signed_request("http://x", n)).delivered for n in range(4)]
    assert results == [False, False, True, True]
    assert [r.msg_id for r in sender.sent] == [f"msg_{2:032x}", f"msg_{3:032x}"]


# ------------------------------------------------------------------------------- e-mail


def code_email(to: str = "jane.doe@example.com") -> Email:
    rendered = render(MessageKind.CONTACT_CODE, "email", {"code": "731904", "expires_minutes": 10})
    return Email(
        to=to,
        subject=rendered.subject,
        text=rendered.text,
        kind=rendered.kind,
        sensitive=rendered.sensitive,
        message_id="<msg_1@foxguard.test>",
        sent_at=datetime(2026, 11, 25, 2, 0, tzinfo=UTC),
    )


def test_smtp_plain_delivers_to_aiosmtpd(smtp_server: Callable[..., SmtpSink]) -> None:
    sink = smtp_server()
    mailer = SmtpMailer(
        SmtpSettings(
            host=sink.host,
            port=sink.port,
            security=SmtpSecurity.NONE,
            from_address="Foxguard <security@foxguard.test>",
            timeout=5,
        )
    )
    assert mailer.send(code_email()) == DeliveryResult.ok()
    [(mail_from, rcpt_tos, message)] = sink.messages
    assert mail_from == "security@foxguard.test"
    assert rcpt_tos == ["jane.doe@example.com"]
    assert message["Subject"] == "Your Foxguard verification code"
    assert message["Message-ID"] == "<msg_1@foxguard.test>"
    assert message["Date"] == "Wed, 25 Nov 2026 02:00:00 +0000"
    assert message.get_content_type() == "text/plain"
    assert "731904" in sink.bodies()[0]


def test_smtp_starttls_with_credentials(smtp_server: Callable[..., SmtpSink], tls_material: TlsMaterial) -> None:
    sink = smtp_server("starttls", tls_material)
    settings = SmtpSettings(
        host=sink.host,
        port=sink.port,
        security=SmtpSecurity.STARTTLS,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout=5,
    )
    mailer = SmtpMailer(settings, ssl_context=tls_material.client_context)
    assert mailer.send(code_email()).delivered
    assert len(sink.messages) == 1


def test_smtp_wrong_password_is_a_failure(smtp_server: Callable[..., SmtpSink], tls_material: TlsMaterial) -> None:
    sink = smtp_server("starttls", tls_material)
    settings = SmtpSettings(
        host=sink.host,
        port=sink.port,
        security=SmtpSecurity.STARTTLS,
        username=SMTP_USER,
        password="wrong",
        timeout=5,
    )
    result = SmtpMailer(settings, ssl_context=tls_material.client_context).send(code_email())
    assert result.delivered is False
    assert result.reason is not None
    assert result.reason.startswith("SMTP 535")
    assert sink.messages == []
    assert "wrong" not in repr(settings)


def test_smtp_starttls_refuses_an_untrusted_certificate(
    smtp_server: Callable[..., SmtpSink], tls_material: TlsMaterial
) -> None:
    sink = smtp_server("starttls", tls_material)
    settings = SmtpSettings(
        host=sink.host,
        port=sink.port,
        security=SmtpSecurity.STARTTLS,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout=5,
    )
    result = SmtpMailer(settings).send(code_email())  # system CAs do not know our test certificate
    assert result.delivered is False
    assert "SSL" in (result.reason or "")
    assert sink.messages == []


def test_smtp_implicit_tls(smtp_server: Callable[..., SmtpSink], tls_material: TlsMaterial) -> None:
    sink = smtp_server("tls", tls_material)
    settings = SmtpSettings(
        host=sink.host,
        port=sink.port,
        security=SmtpSecurity.TLS,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout=5,
    )
    assert SmtpMailer(settings, ssl_context=tls_material.client_context).send(code_email()).delivered
    assert "731904" in sink.bodies()[0]


def test_smtp_server_down_is_a_failure() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=closed_port(), security=SmtpSecurity.NONE, timeout=2)
    result = SmtpMailer(settings).send(code_email())
    assert result.delivered is False
    assert "ConnectionRefusedError" in (result.reason or "")


def test_header_injection_is_refused_not_sent(smtp_server: Callable[..., SmtpSink]) -> None:
    sink = smtp_server()
    mailer = SmtpMailer(SmtpSettings(host=sink.host, port=sink.port, security=SmtpSecurity.NONE, timeout=5))
    email = Email(to="a@example.com", subject="hi\r\nBcc: victim@example.com", text="x")
    result = mailer.send(email)
    assert result.delivered is False
    assert (result.reason or "").startswith("invalid e-mail")
    assert sink.messages == []


def test_log_mailer_redacts_codes_and_masks_the_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert LogMailer(SINK_LOG).send(code_email()).delivered
    assert "731904" not in caplog.text
    assert REDACTED in caplog.text
    assert "jane.doe@example.com" not in caplog.text
    assert "j***@example.com" in caplog.text


def test_log_mailer_dev_mode_shows_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    LogMailer(SINK_LOG, reveal_secrets=True).send(code_email())
    assert "731904" in caplog.text
    assert "jane.doe@example.com" in caplog.text


def test_log_sms_sender_redacts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rendered = render(MessageKind.CONTACT_CODE, "sms", {"code": "551234", "expires_minutes": 10})
    sms = Sms(to="+4915112345678", text=rendered.text, kind=rendered.kind, sensitive=rendered.sensitive)
    assert LogSmsSender(SINK_LOG).send(sms).delivered
    assert "551234" not in caplog.text
    assert "+4915112345678" not in caplog.text
    caplog.clear()
    LogSmsSender(SINK_LOG, reveal_secrets=True).send(sms)
    assert "551234" in caplog.text


def test_memory_mailer_keeps_messages() -> None:
    mailer = MemoryMailer()
    mailer.send(code_email("a@example.com"))
    mailer.send(code_email("b@example.com"))
    assert [m.to for m in mailer.outbox] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("address", "masked"),
    [("jane.doe@example.com", "j***@example.com"), ("+4915112345678", "+49********678"), ("12345", "*****")],
)
def test_mask_address(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_envelope_body_is_compact_json_with_the_id_first() -> None:
    envelope = {"type": "mfa.enabled", "timestamp": "2026-11-25T01:02:03+00:00", "data": {"account_id": "a"}}
    body = envelope_body("msg_1", envelope)
    assert b" " not in body
    assert body.startswith(b'{"id":"msg_1",')
    assert json.loads(body) == {**envelope, "id": "msg_1"}
