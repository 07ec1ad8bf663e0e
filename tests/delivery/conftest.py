"""Real local receivers for delivery tests: an HTTP webhook endpoint and an SMTP server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

LOCALHOST = "127.0.0.1"


# ---------------------------------------------------------------- HTTP webhook receiver


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class WebhookReceiver:
    """Answers ``fail_status`` to the first ``fail_first`` requests, then 204. Records every request.

    ``hang_first`` requests are held open until :attr:`release` is set (a receiver stuck while the
    dispatcher gets killed). Overlapping requests for the same ``webhook-id`` are recorded in
    :attr:`overlaps`: two dispatchers sending one message in parallel.
    """

    fail_first: int = 0
    fail_status: int = 503
    delay: float = 0.0
    hang_first: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _seen: int = 0
    _in_flight: set[str] = field(default_factory=set)

    def accepted(self) -> list[ReceivedRequest]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def unique_ids(self) -> list[str]:
        """webhook-ids of accepted requests after dedup, in first-arrival order."""
        seen: dict[str, None] = {}
        for request in self.accepted():
            seen.setdefault(request.headers["webhook-id"], None)
        return list(seen)


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            msg_id = headers.get("webhook-id", "")
            with receiver.lock:
                index = receiver._seen
                receiver._seen += 1
                if msg_id in receiver._in_flight:
                    receiver.overlaps.append(msg_id)
                receiver._in_flight.add(msg_id)
            try:
                if index < receiver.hang_first:
                    receiver.release.wait(30)
                    status = 503
                else:
                    if receiver.delay:
                        threading.Event().wait(receiver.delay)
                    status = receiver.fail_status if index < receiver.hang_first + receiver.fail_first else 204
                with receiver.lock:
                    receiver.requests.append(ReceivedRequest(self.path, headers, body, status))
                self.send_response(status)
                payload = b"try later" if status >= 300 else b""
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client is gone (a killed dispatcher)
            finally:
                with receiver.lock:
                    receiver._in_flight.discard(msg_id)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence test output
            return

    return Handler


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """Factory: ``webhook_receiver(fail_first=3)`` starts a receiver on 127.0.0.1 and returns it."""
    servers: list[ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []
    receivers: list[WebhookReceiver] = []

    def start(**kwargs: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(**kwargs)
        server = ThreadingHTTPServer((LOCALHOST, 0), _handler_for(receiver))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        receiver.url = f"http://{LOCALHOST}:{server.server_address[1]}/hooks/foxguard"
        servers.append(server)
        threads.append(thread)
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.release.set()
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(timeout=5)


# ---------------------------------------------------------------- SMTP server (aiosmtpd)


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)

    def bodies(self) -> list[str]:
        out = []
        for _, _, message in self.messages:
            payload = message.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload.decode(message.get_content_charset() or "utf-8"))
        return out


class _CollectingHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.sink.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
        )
        return "250 Message accepted for delivery"


def _free_port() -> int:
    # aiosmtpd's Controller cannot bind port 0 (it connects to its own port to check readiness).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


SMTP_USER = "mailer"
SMTP_PASSWORD = "correct horse battery staple"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class TlsMaterial:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls_material() -> TlsMaterial:
    """A throwaway self-signed certificate for 127.0.0.1 and a client context that trusts only it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foxguard-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCALHOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="fg-smtp-tls-"))
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    return TlsMaterial(server_context=server_context, client_context=client_context)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpSink]]:
    """Factory: ``smtp_server(mode="plain"|"starttls"|"tls", tls=...)`` starts aiosmtpd on 127.0.0.1."""
    controllers: list[Controller] = []

    def start(mode: str = "plain", tls: TlsMaterial | None = None) -> SmtpSink:
        sink = SmtpSink(host=LOCALHOST, port=_free_port())
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            assert tls is not None
            kwargs = {
                "tls_context": tls.server_context,
                "require_starttls": True,
                "authenticator": _authenticator,
                "auth_required": True,
            }
        elif mode == "tls":
            assert tls is not None
            # aiosmtpd only recognises STARTTLS as "TLS" for AUTH; with implicit TLS the whole
            # connection is encrypted, so allow AUTH there.
            kwargs = {
                "ssl_context": tls.server_context,
                "authenticator": _authenticator,
                "auth_require_tls": False,
            }
        controller = Controller(_CollectingHandler(sink), hostname=LOCALHOST, port=sink.port, **kwargs)
        controller.start()
        controllers.append(controller)
        return sink

    yield start
    for controller in controllers:
        controller.stop()


# ---------------------------------------------------------------- apps that really commit


# Retries at once: tests about at-least-once do not need to wait out the real schedule.
IMMEDIATE_RETRIES = [0, 0, 0, 0, 0, 0]


@pytest.fixture
def delivery_app(database_url: str, engine: Any, clock: Any) -> Iterator[Callable[..., Any]]:
    """Factory of apps whose sessions really commit (the dispatcher's two transactions per message).

    ``delivery_app(webhooks={...}, delivery={...}, clock=None)``; tables are emptied before and after.
    """
    from security import create_app
    from security.config import load_settings
    from tests.conftest import truncate_all

    truncate_all(engine)
    apps: list[Any] = []

    def make(webhooks: dict[str, Any] | None = None, delivery: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        settings = load_settings(
            "testing",
            {
                "database": {"url": database_url, "auto_migrate": False},
                "webhooks": webhooks or {},
                "delivery": {"retry_delays_s": IMMEDIATE_RETRIES, **(delivery or {})},
            },
            environ={},
        )
        app = create_app(settings, clock=kwargs.pop("clock", clock), **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["foxguard"].engine.dispose()
    truncate_all(engine)
