"""The webhook receiver goes down for a while and comes back: nothing is lost (both backends).

A real HTTP receiver on 127.0.0.1 first refuses connections (its port is closed), then answers 500 for a
while, then accepts. Meanwhile real flows keep writing webhooks (passwords set, locks placed and released
through the services the API uses) and the real dispatcher runs pass after pass on the documented retry
schedule (docs/webhooks.md), the clock moving on between passes. Afterwards:

* every outbox message reached the receiver and was accepted, and every row is ``delivered`` (none dead);
* every request the receiver saw, failed attempts included, carries a valid Standard Webhooks signature
  (``verify_webhook`` at the request's own timestamp) and ``webhook-id`` equals the body's ``id``;
* at-least-once as documented: a message may be *sent* again after a failure, but it is *accepted* exactly
  once here (nothing timed out after the receiver processed it), so after deduplication on ``webhook-id``
  the receiver has each message exactly once;
* per account, messages were accepted in the order they were written (no ``account.unlocked`` before its
  ``account.locked``), although the heads of every account failed repeatedly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from security.accounts.models import Account
from security.audit.services import AuditLog
from security.delivery.outbox import Outbox, OutboxMessage, OutboxStatus
from security.delivery.signing import WebhookSecret, verify_webhook
from security.delivery.wiring import build_dispatcher
from security.locks.services import LockService
from security.locks.states import LockEvent, LockKind
from security.permissions import ALL_SCOPES
from security.runtime import runtime
from security.web.deps import webhook_endpoint_names
from tests.conftest import ApiClient, issue_key
from tests.delivery.conftest import delivery_app  # noqa: F401 - the fixture (apps that really commit)

SECRET = WebhookSecret(b"W" * 32)
DELAYS = [5, 300, 1800, 7200, 18000, 36000]  # the documented schedule (seconds), without jitter here
ACCOUNTS = 4
PASSWORD = "violet-harbour-engine-42"
LOCALHOST = "127.0.0.1"


class Receiver:
    """The backend's webhook endpoint: ``refuse`` (port closed), ``error`` (HTTP 500) or ``up`` (204)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind((LOCALHOST, 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://{LOCALHOST}:{self.port}/hooks/foxguard"
        self.mode = "refuse"
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def set(self, mode: str) -> None:
        self.mode = mode
        if mode == "refuse":
            self.stop()
        elif self._server is None:
            receiver = self

            class Handler(BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802 - http.server naming
                    body = self.rfile.read(int(self.headers.get("content-length", "0")))
                    status = 500 if receiver.mode == "error" else 204
                    with receiver.lock:
                        receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()

                def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence
                    return

            server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)  # allow_reuse_address is on
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    with contextlib.suppress(OSError):
        receiver.stop()


def write_events(app, api: ApiClient, clock, round_: int) -> None:
    """Real flows: a password set (password.changed), a lock placed and released (account.locked/unlocked)."""
    rt = runtime(app)
    for n in range(ACCOUNTS):
        account_id = f"hook-{n}"
        if round_ == 0:
            assert api.put(f"/v1/accounts/{account_id}", json={"home_country": "DE"}).status_code == 201
        password = {"password": f"{PASSWORD}-{round_}"}
        assert api.put(f"/v1/accounts/{account_id}/password", json=password).status_code == 204
        with rt.session_factory() as session:
            outbox = Outbox(session, clock=clock, entropy=rt.entropy, secret_box=rt.secret_box,
                            webhook_endpoints=webhook_endpoint_names(rt))
            locks = LockService(session, clock=clock, entropy=rt.entropy, audit=AuditLog(session, clock=clock),
                                outbox=outbox)
            lock = locks.place(session.get(Account, account_id), kind=LockKind.RISK, reasons=[{"rule": "outage"}],
                               actor="system")
            if n % 2 == 0:
                locks.release(lock, LockEvent.OPERATOR_UNLOCK, actor="operator:test")
            session.commit()


def test_receiver_down_for_a_while_then_everything_arrives_once(delivery_app, receiver, clock):  # noqa: F811
    app = delivery_app(
        webhooks={"endpoints": [{"name": "backend", "url": receiver.url, "secrets": [SECRET.serialize()]}],
                  "timeout_s": 2},
        delivery={"retry_delays_s": DELAYS, "jitter_ratio": 0},
    )
    with runtime(app).session_factory() as session:
        api = ApiClient(app.test_client(), issue_key(session, clock, "wallet-backend", ALL_SCOPES))
    dispatcher = build_dispatcher(runtime(app))

    # Down: first the port is closed, then the receiver answers 500. Events keep coming meanwhile.
    failed_passes = 0
    for round_, mode in enumerate(["refuse", "refuse", "error", "error"]):
        receiver.set(mode)
        write_events(app, api, clock, round_)
        stats = dispatcher.run_once()
        assert stats.delivered == 0 and stats.dead == 0, stats
        failed_passes += stats.attempted > 0
        clock.advance(seconds=DELAYS[round_] + 1)
    assert failed_passes == 4
    assert any(status == 500 for _, _, status in receiver.requests), "the 500 phase was not felt"

    # Back up: a few passes on the schedule deliver everything.
    receiver.set("up")
    for _ in range(10):
        dispatcher.run_once()
        clock.advance(seconds=max(DELAYS) + 1)

    with runtime(app).session_factory() as session:
        rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.channel == "webhook")
                                    .order_by(OutboxMessage.id)))
    assert rows and {r.status for r in rows} == {OutboxStatus.DELIVERED}, Counter(r.status for r in rows)
    assert any(r.attempts > 1 for r in rows), "no message was retried"

    secrets = [SECRET.serialize()]
    accepted: list[str] = []
    for headers, body, status in receiver.requests:
        at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
        envelope = verify_webhook(body, headers, secrets, at=at)
        assert envelope["id"] == headers["webhook-id"]
        if 200 <= status < 300:
            accepted.append(headers["webhook-id"])
    # Every message accepted exactly once: none lost, no duplicate beyond the documented retries of failures.
    assert Counter(accepted) == Counter(r.message_id for r in rows)
    order = {message_id: position for position, message_id in enumerate(accepted)}
    for account_id in {r.ordering_key for r in rows}:
        written = [r.message_id for r in rows if r.ordering_key == account_id]
        assert sorted(written, key=order.__getitem__) == written, f"{account_id}: delivered out of order"
    types = Counter(r.event_type for r in rows)
    assert types == {"password.changed": 4 * ACCOUNTS, "account.locked": 4 * ACCOUNTS,
                     "account.unlocked": 4 * (ACCOUNTS // 2)}, types
    failed = sum(1 for *_, status in receiver.requests if status >= 300)
    print(f"webhook outage: {len(receiver.requests)} requests for {len(rows)} messages, {failed} answered 500, "
          f"attempts {dict(Counter(r.attempts for r in rows))}")
