"""`flask --app app outbox run` as a real process: SIGTERM stops it cleanly; SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask

from security.clock import SystemClock
from security.delivery.outbox import OutboxStatus
from security.delivery.wiring import build_dispatcher
from security.runtime import runtime

from .conftest import WebhookReceiver
from .test_dispatcher import NEW_SECRET, endpoint_config, enqueue, received_ids, rows

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 4.0
SEND_TIMEOUT_S = 3.0
WAIT_S = 20.0


def start_worker(database_url: str, receiver_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXGUARD_")}
    env.update(
        {
            "FOXGUARD_ENV": "testing",
            "FOXGUARD_DATABASE_URL": database_url,
            "FOXGUARD_WEBHOOKS__ENDPOINTS": (
                f'[{{name = "backend", url = "{receiver_url}", secrets = ["{NEW_SECRET.serialize()}"]}}]'
            ),
            "FOXGUARD_DELIVERY__LEASE_S": str(LEASE_S),
            "FOXGUARD_WEBHOOKS__TIMEOUT_S": str(SEND_TIMEOUT_S),
            "FOXGUARD_DELIVERY__RETRY_DELAYS_S": "[0, 0, 0, 0, 0, 0]",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "outbox", "run", "--poll-interval", "0.05"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.02)


def test_sigterm_stops_the_worker_after_delivering(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], database_url: str
) -> None:
    receiver = webhook_receiver()
    app = delivery_app(webhooks=endpoint_config(receiver.url), clock=SystemClock())
    ids = enqueue(app, [("account.locked", "A"), ("account.unlocked", "A")])
    worker = start_worker(database_url, receiver.url)
    try:
        wait_for(lambda: len(receiver.accepted()) == 2, "both webhooks")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "stopping after the current message" in err
    assert "outbox dispatcher stopped" in out
    assert received_ids(receiver) == ids
    assert all(r.status == OutboxStatus.DELIVERED for r in rows(app))


def test_a_killed_worker_loses_nothing_its_claim_is_redelivered_after_the_lease(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], database_url: str
) -> None:
    # The receiver holds the first request open; the worker is SIGKILLed while it waits for it.
    receiver = webhook_receiver(hang_first=1)
    app = delivery_app(
        webhooks=endpoint_config(receiver.url, timeout_s=SEND_TIMEOUT_S),
        delivery={"lease_s": LEASE_S},
        clock=SystemClock(),
    )
    ids = enqueue(app, [("account.locked", "A"), ("account.unlocked", "A")])
    worker = start_worker(database_url, receiver.url)
    try:
        wait_for(lambda: receiver._seen >= 1, "the worker's first request")
        worker.kill()
        worker.communicate(timeout=WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == -signal.SIGKILL

    claimed, waiting = rows(app)
    assert (claimed.status, claimed.attempts) == (OutboxStatus.PENDING, 1)
    assert claimed.lease_until is not None
    assert waiting.attempts == 0  # held behind the claimed one, never sent

    survivor = build_dispatcher(runtime(app))
    # Normally well inside the lease here; on a very slow machine it may already have run out. The
    # exact boundary is tested with a frozen clock in test_dispatcher.py.
    if datetime.now(UTC) < claimed.lease_until:
        assert survivor.run_once().attempted == 0  # the dead worker's lease still protects the row
    wait_for(lambda: datetime.now(UTC) > claimed.lease_until, "the lease to run out")  # type: ignore[operator]
    assert survivor.run_once().delivered == 2

    assert received_ids(receiver) == ids  # in order, each once after dedup
    first, second = rows(app)
    assert (first.status, first.attempts) == (OutboxStatus.DELIVERED, 2)
    assert (second.status, second.attempts) == (OutboxStatus.DELIVERED, 1)
