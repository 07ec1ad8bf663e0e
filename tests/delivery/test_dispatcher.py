"""The dispatcher end to end: outbox rows -> real HTTP receiver / aiosmtpd, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import select

from security.clock import FrozenClock
from security.delivery.dispatcher import Dispatcher, DispatcherThread, webhook_body
from security.delivery.outbox import Outbox, OutboxMessage, OutboxStatus
from security.delivery.senders import HttpxWebhookSender, MemoryMailer, MemorySmsSender, MemoryWebhookSender
from security.delivery.services import OutboxQueue
from security.delivery.signing import WebhookSecret, verify, verify_webhook
from security.delivery.wiring import build_dispatcher
from security.runtime import runtime
from security.web.deps import webhook_endpoint_names

from .conftest import SmtpSink, WebhookReceiver

NEW_SECRET = WebhookSecret(b"N" * 32)
OLD_SECRET = WebhookSecret(b"O" * 32)


def endpoint_config(url: str, *secrets: WebhookSecret, timeout_s: float = 5) -> dict[str, Any]:
    chosen = secrets or (NEW_SECRET,)
    return {
        "endpoints": [{"name": "backend", "url": url, "secrets": [s.serialize() for s in chosen]}],
        "timeout_s": timeout_s,
    }


def outbox(app: Flask, session: Any) -> Outbox:
    rt = runtime(app)
    return Outbox(
        session,
        clock=rt.clock,
        entropy=rt.entropy,
        secret_box=rt.secret_box,
        webhook_endpoints=webhook_endpoint_names(rt),
    )


def enqueue(app: Flask, events: list[tuple[str, str | None]]) -> list[str]:
    """Write webhook messages (event type, ordering key) in one committed transaction."""
    with runtime(app).session_factory() as session:
        box = outbox(app, session)
        ids = [
            message.message_id
            for n, (event_type, key) in enumerate(events)
            for message in box.webhook(event_type, {"account_id": key or "none", "n": n}, ordering_key=key)
        ]
        session.commit()
    return ids


def rows(app: Flask) -> list[OutboxMessage]:
    with runtime(app).session_factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def delivery_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("foxguard_outbox_deliveries_total", {"channel": "webhook", "outcome": outcome})
    return value or 0.0


def received_ids(receiver: WebhookReceiver) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.accepted()]


# ------------------------------------------------------------------------ at-least-once


def test_receiver_failing_first_n_gets_every_message_exactly_once_after_dedup(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], clock: FrozenClock
) -> None:
    receiver = webhook_receiver(fail_first=5)
    app = delivery_app(webhooks=endpoint_config(receiver.url))
    events = [("account.locked", f"acc-{n % 3}") for n in range(12)]
    ids = enqueue(app, events)
    before = {o: delivery_count(o) for o in ("delivered", "retry")}

    stats = build_dispatcher(runtime(app)).run_once()

    assert stats.delivered == 12
    assert stats.retried == 5
    assert stats.dead == 0
    assert delivery_count("delivered") - before["delivered"] == 12
    assert delivery_count("retry") - before["retry"] == 5
    # Every attempt reached the receiver; after dedup by webhook-id each message is there once.
    assert len(receiver.requests) == 17
    assert sorted(receiver.unique_ids()) == sorted(ids)
    assert len(receiver.accepted()) == 12
    for request in receiver.requests:
        envelope = verify_webhook(request.body, request.headers, [NEW_SECRET.serialize()], at=clock.now())
        assert envelope["id"] == request.headers["webhook-id"]
        assert envelope["type"] == "account.locked"
    assert {r.status for r in rows(app)} == {OutboxStatus.DELIVERED}
    assert all(r.delivered_at == clock.now() and r.lease_until is None for r in rows(app))


def test_nothing_is_lost_while_the_receiver_is_down_and_order_holds_per_account(
    delivery_app: Callable[..., Flask], clock: FrozenClock
) -> None:
    # Real backoff schedule; the receiver is "down" (memory sender failing) for the first 3 sends.
    sender = MemoryWebhookSender(fail_first=3)
    app = delivery_app(
        webhooks={
            "endpoints": [
                {"name": "backend", "url": "http://backend.invalid/hook", "secrets": [NEW_SECRET.serialize()]}
            ]
        },
        delivery={"retry_delays_s": [5, 300, 1800, 7200, 18000, 36000]},
    )
    ids = enqueue(
        app, [("account.locked", "A"), ("account.locked", "B"), ("account.unlocked", "A"), ("account.unlocked", "B")]
    )
    dispatcher = build_dispatcher(runtime(app), webhook_sender=sender)

    first = dispatcher.run_once()
    # A1 and B1 failed; A2 and B2 wait behind them. One more failure is left for the next pass.
    assert (first.delivered, first.retried) == (0, 2)
    pending = {r.message_id: r for r in rows(app)}
    assert pending[ids[0]].attempts == 1
    assert timedelta(seconds=4.5) <= pending[ids[0]].next_attempt_at - clock.now() <= timedelta(seconds=5.5)
    assert pending[ids[2]].attempts == 0  # never tried: held behind A1

    assert dispatcher.run_once().attempted == 0  # nothing is due yet
    clock.advance(seconds=6)
    second = dispatcher.run_once()
    assert (second.delivered, second.retried) == (2, 1)  # A1 fails a third time; B1 then B2 delivered
    clock.advance(minutes=6)
    dispatcher.run_once()

    assert [r.msg_id for r in sender.sent] == [ids[1], ids[3], ids[0], ids[2]]
    assert all(r.status == OutboxStatus.DELIVERED for r in rows(app))


def test_a_later_message_never_overtakes_an_earlier_one_for_the_same_account(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], clock: FrozenClock
) -> None:
    receiver = webhook_receiver(fail_first=7)
    app = delivery_app(webhooks=endpoint_config(receiver.url), delivery={"retry_delays_s": [1] * 6, "jitter_ratio": 0})
    keys = ["A", "B", "A", "C", "A", "B", "C", "A"]
    ids = enqueue(app, [("account.locked" if i % 2 else "account.unlocked", k) for i, k in enumerate(keys)])
    dispatcher = build_dispatcher(runtime(app))
    for _ in range(10):
        dispatcher.run_once()
        clock.advance(seconds=1)
    # The failures hit the head of every key in turn (A1, B1, C1, A1, ...), yet per key the
    # arrival order is the enqueue order.
    failed = [r.headers["webhook-id"] for r in receiver.requests if r.status >= 300]
    assert set(failed) == {ids[0], ids[1], ids[3]}
    arrival = received_ids(receiver)
    assert sorted(arrival) == sorted(ids)
    for key in set(keys):
        expected = [ids[i] for i, k in enumerate(keys) if k == key]
        assert [i for i in arrival if i in expected] == expected


def test_dead_message_holds_its_successors_until_an_operator_requeues_it(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver(fail_first=2)
    app = delivery_app(webhooks=endpoint_config(receiver.url), delivery={"retry_delays_s": [0]})
    ids = enqueue(app, [("account.locked", "A"), ("account.unlocked", "A"), ("mfa.enabled", "B")])
    # Attempts: A1 fails twice -> dead (schedule of one retry). B1 is not held by A's trouble.
    stats = build_dispatcher(runtime(app)).run_once()
    assert (stats.dead, stats.delivered) == (1, 1)
    state = {r.message_id: r for r in rows(app)}
    assert state[ids[0]].status == OutboxStatus.DEAD
    assert state[ids[0]].last_error == "HTTP 503: try later"
    assert state[ids[1]].status == OutboxStatus.PENDING
    assert state[ids[1]].attempts == 0
    assert received_ids(receiver) == [ids[2]]

    runner = app.test_cli_runner()
    listing = runner.invoke(args=["outbox", "list", "--dead"])
    assert listing.exit_code == 0
    assert ids[0] in listing.output
    assert "holding=1" in listing.output
    assert ids[1] not in listing.output

    result = runner.invoke(args=["outbox", "retry", "--all-dead"])
    assert result.exit_code == 0, result.output
    assert "1 dead message(s) re-queued" in result.output
    run = runner.invoke(args=["outbox", "run", "--once"])
    assert run.exit_code == 0, run.output
    assert "delivered 2" in run.output
    assert received_ids(receiver) == [ids[2], ids[0], ids[1]]


def test_rotation_signs_with_every_configured_secret(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], clock: FrozenClock
) -> None:
    receiver = webhook_receiver()
    app = delivery_app(webhooks=endpoint_config(receiver.url, NEW_SECRET, OLD_SECRET))
    [msg_id] = enqueue(app, [("password.changed", "A")])
    build_dispatcher(runtime(app)).run_once()
    [request] = receiver.accepted()
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify([OLD_SECRET], request.headers, request.body, at=clock.now()) == msg_id
    assert verify([NEW_SECRET], request.headers, request.body, at=clock.now()) == msg_id
    envelope = json.loads(request.body)
    assert envelope["data"] == {"account_id": "A", "n": 0}
    assert envelope["timestamp"].startswith("2026-03-02T09:00:00")


# ------------------------------------------------------------------------ leases and concurrency


def test_a_killed_dispatchers_claim_is_redelivered_after_the_lease(
    delivery_app: Callable[..., Flask], clock: FrozenClock
) -> None:
    sender = MemoryWebhookSender()
    app = delivery_app(delivery={"lease_s": 60})
    [msg_id] = enqueue(app, [("account.locked", "A")])
    rt = runtime(app)
    # A dispatcher claims the message and dies before recording anything.
    with rt.session_factory() as session:
        [claimed] = OutboxQueue(session).claim(now=clock.now(), lease=timedelta(seconds=60))
        session.commit()
    assert claimed.message_id == msg_id

    survivor = build_dispatcher(rt, webhook_sender=sender)
    clock.advance(seconds=59)
    assert survivor.run_once().attempted == 0  # still leased by the dead one
    clock.advance(seconds=2)
    assert survivor.run_once().delivered == 1
    [row] = rows(app)
    assert row.status == OutboxStatus.DELIVERED
    assert row.attempts == 2  # the killed attempt counts


def test_a_stale_dispatcher_cannot_overwrite_the_outcome_of_the_one_that_took_over(
    delivery_app: Callable[..., Flask], clock: FrozenClock
) -> None:
    app = delivery_app(webhooks={"timeout_s": 5}, delivery={"lease_s": 10})
    enqueue(app, [("account.locked", "A")])
    rt = runtime(app)
    with rt.session_factory() as session:
        [stale] = OutboxQueue(session).claim(now=clock.now(), lease=timedelta(seconds=10))
        session.commit()
    clock.advance(seconds=11)
    with rt.session_factory() as session:
        [fresh] = OutboxQueue(session).claim(now=clock.now(), lease=timedelta(seconds=10))
        session.commit()
    assert fresh.id == stale.id
    with rt.session_factory() as session:
        queue = OutboxQueue(session)
        assert queue.mark_dead(stale, error="old news") is False
        assert queue.mark_retry(stale, at=clock.now(), error="old news") is False
        assert queue.mark_retry(fresh, at=clock.now(), error="HTTP 500") is True
        session.commit()
    [row] = rows(app)
    assert (row.status, row.last_error, row.attempts) == (OutboxStatus.PENDING, "HTTP 500", 2)


def _drain_in_parallel(app: Flask, workers: int) -> list[BaseException]:
    rt = runtime(app)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with HttpxWebhookSender(timeout=5) as sender:
                dispatcher = build_dispatcher(rt, webhook_sender=sender)
                idle = 0
                while idle < 20:  # others may hold the heads of every ordering key for a moment
                    idle = 0 if dispatcher.run_once().attempted else idle + 1
                    threading.Event().wait(0.01)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_parallel_dispatchers_never_send_the_same_message_at_the_same_time(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver(delay=0.01)
    app = delivery_app(webhooks=endpoint_config(receiver.url))
    keys = [f"acc-{n % 6}" for n in range(36)]
    ids = enqueue(app, [("account.locked", k) for k in keys])

    assert _drain_in_parallel(app, workers=4) == []

    assert receiver.overlaps == []
    arrival = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(arrival) == sorted(ids)  # each exactly once: no failures, so no duplicate at all
    for key in set(keys):
        expected = [ids[i] for i, k in enumerate(keys) if k == key]
        assert [i for i in arrival if i in expected] == expected
    assert all(r.status == OutboxStatus.DELIVERED and r.attempts == 1 for r in rows(app))


@pytest.mark.postgres
def test_skip_locked_claims_are_disjoint_on_postgresql(delivery_app: Callable[..., Flask], clock: FrozenClock) -> None:
    app = delivery_app()
    enqueue(app, [("account.locked", f"k{n}") for n in range(10)])
    rt = runtime(app)
    first, second = rt.session_factory(), rt.session_factory()
    try:
        a = OutboxQueue(first).claim(now=clock.now(), lease=timedelta(minutes=1), limit=6)
        # The first claim is not committed: its rows are locked, and the second claim skips them
        # instead of waiting for them or taking them too.
        b = OutboxQueue(second).claim(now=clock.now(), lease=timedelta(minutes=1), limit=6)
        assert len(a) == 6
        assert len(b) == 4
        assert not {m.id for m in a} & {m.id for m in b}
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------------ e-mail and SMS


def test_email_with_a_sealed_code_reaches_aiosmtpd_and_the_code_is_erased(
    delivery_app: Callable[..., Flask], smtp_server: Callable[..., SmtpSink]
) -> None:
    sink = smtp_server()
    app = delivery_app(
        delivery={
            "mailer": "smtp",
            "smtp": {
                "host": sink.host,
                "port": sink.port,
                "security": "none",
                "timeout_s": 5,
                "from_address": "security@foxguard.test",
            },
        }
    )
    with runtime(app).session_factory() as session:
        message = outbox(app, session).email(
            "jane@example.com", "contact_code", {"expires_minutes": 10}, secret={"code": "834211"}
        )
        session.commit()
        msg_id = message.message_id
    assert rows(app)[0].sealed is not None
    assert "834211" not in json.dumps(rows(app)[0].payload)

    assert build_dispatcher(runtime(app)).run_once().delivered == 1

    [(mail_from, rcpt, mail)] = sink.messages
    assert (mail_from, rcpt) == ("security@foxguard.test", ["jane@example.com"])
    assert mail["Message-ID"] == f"<{msg_id}@foxguard>"
    assert "834211" in sink.bodies()[0]
    [row] = rows(app)
    assert row.status == OutboxStatus.DELIVERED
    assert row.sealed is None  # the code does not outlive its delivery


def test_sms_and_log_sinks_get_rendered_text(delivery_app: Callable[..., Flask]) -> None:
    app = delivery_app()
    with runtime(app).session_factory() as session:
        outbox(app, session).sms("+4915112345678", "contact_code", {"expires_minutes": 5}, secret={"code": "4711"})
        outbox(app, session).email(
            "a@example.com",
            "lock_notice",
            {"case_reference": "L-1", "reason": "risk", "appeal_url": "https://x/appeal"},
        )
        session.commit()
    sms, mailer = MemorySmsSender(), MemoryMailer()
    assert build_dispatcher(runtime(app), sms_sender=sms, mailer=mailer).run_once().delivered == 2
    [text] = sms.outbox
    assert text.to == "+4915112345678"
    assert "4711" in text.text
    assert text.sensitive == ("4711",)
    [mail] = mailer.outbox
    assert mail.subject == "Your account has been locked (case L-1)"


def test_reset_token_sms_gets_a_link_and_the_token_is_treated_as_secret(delivery_app: Callable[..., Flask]) -> None:
    app = delivery_app()
    context = {"account_id": "acc_1", "expires_at": "2026-03-02T09:30:00+00:00", "ttl_minutes": 30}
    with runtime(app).session_factory() as session:
        outbox(app, session).sms("+4915112345678", "password_reset", context, secret={"token": "tok-123"})
        session.commit()
    sms = MemorySmsSender()
    assert build_dispatcher(runtime(app), sms_sender=sms).run_once().delivered == 1
    [text] = sms.outbox
    base = runtime(app).settings.app.public_base_url
    assert f"{base}/reset-password#token=tok-123" in text.text
    assert "tok-123" in text.sensitive
    assert rows(app)[0].sealed is None


def test_unknown_template_goes_straight_to_dead_letters(delivery_app: Callable[..., Flask]) -> None:
    app = delivery_app()
    with runtime(app).session_factory() as session:
        outbox(app, session).email("a@example.com", "birthday_greeting", {})
        session.commit()
    stats = build_dispatcher(runtime(app), mailer=MemoryMailer()).run_once()
    assert (stats.dead, stats.delivered) == (1, 0)
    [row] = rows(app)
    assert row.status == OutboxStatus.DEAD
    assert row.attempts == 1
    assert (row.last_error or "").startswith("permanent:")


def test_missing_endpoint_url_is_logged_in_development_and_retried_in_production(
    delivery_app: Callable[..., Flask], clock: FrozenClock
) -> None:
    app = delivery_app()  # testing: no endpoint configured -> log sink
    enqueue(app, [("account.locked", "A")])
    assert build_dispatcher(runtime(app)).run_once().delivered == 1

    enqueue(app, [("account.locked", "B")])
    rt = runtime(app)
    strict = Dispatcher(
        rt.session_factory,
        clock=rt.clock,
        entropy=rt.entropy,
        secret_box=rt.secret_box,
        endpoints={},
        webhook_sender=MemoryWebhookSender(),
        mailer=MemoryMailer(),
        sms_sender=MemorySmsSender(),
        policy=build_dispatcher(rt)._policy,
        lease=timedelta(minutes=1),
        log_unsent_webhooks=False,
    )
    stats = strict.run_once(max_messages=1)
    assert stats.retried == 1
    assert "no URL configured" in (rows(app)[1].last_error or "")


def test_background_thread_delivers_and_stops(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    receiver = webhook_receiver()
    app = delivery_app(webhooks=endpoint_config(receiver.url))
    thread = DispatcherThread(build_dispatcher(runtime(app)), poll_interval=0.05)
    thread.start()
    try:
        ids = enqueue(app, [("mfa.enabled", "A"), ("mfa.disabled", "A")])
        thread.wake()
        for _ in range(200):
            if len(receiver.accepted()) == 2:
                break
            threading.Event().wait(0.025)
    finally:
        thread.stop(timeout=5)
    assert not thread.alive
    assert received_ids(receiver) == ids


def test_webhook_body_uses_the_stored_envelope(delivery_app: Callable[..., Flask]) -> None:
    app = delivery_app()
    enqueue(app, [("appeal.decided", "A")])
    rt = runtime(app)
    with rt.session_factory() as session:
        [claimed] = OutboxQueue(session).claim(now=rt.clock.now(), lease=timedelta(seconds=5))
        session.rollback()
    body = json.loads(webhook_body(claimed))
    assert list(body) == ["id", "type", "timestamp", "data"]
    assert body["id"] == claimed.message_id
    assert body["type"] == "appeal.decided"


def test_payload_drift_from_the_documented_schema_is_logged_but_still_sent(
    delivery_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    sender = MemoryWebhookSender(fail_first=1)
    app = delivery_app(webhooks=endpoint_config("http://backend.invalid/h"))
    enqueue(app, [("account.locked", "A")])  # no lock_id, no kind: not what docs/webhooks.md promises
    dispatcher_log = logging.getLogger("security.delivery.dispatcher")
    dispatcher_log.addHandler(caplog.handler)  # "security.*" does not propagate to the root logger
    try:
        with caplog.at_level(logging.WARNING, logger="security.delivery.dispatcher"):
            assert build_dispatcher(runtime(app), webhook_sender=sender).run_once().delivered == 1
    finally:
        dispatcher_log.removeHandler(caplog.handler)
    drift = [r for r in caplog.records if r.getMessage() == "webhook payload does not match its documented schema"]
    assert len(drift) == 1  # warned on the first attempt only, not again on the retry
    assert any(p.startswith("lock_id:") for p in drift[0].__dict__["problems"])
    assert len(sender.sent) == 1


def test_each_endpoint_gets_its_own_copy_signed_with_its_own_secret_and_fails_alone(
    delivery_app: Callable[..., Flask], webhook_receiver: Callable[..., WebhookReceiver], clock: FrozenClock
) -> None:
    healthy, broken = webhook_receiver(), webhook_receiver(fail_first=100)
    app = delivery_app(
        webhooks={
            "endpoints": [
                {"name": "backend", "url": healthy.url, "secrets": [NEW_SECRET.serialize()]},
                {"name": "audit-sink", "url": broken.url, "secrets": [OLD_SECRET.serialize()]},
            ],
            "timeout_s": 5,
        },
        delivery={"retry_delays_s": [60]},
    )
    ids = enqueue(app, [("account.locked", "A"), ("account.unlocked", "A")])
    assert len(ids) == 4  # one message per endpoint and event

    build_dispatcher(runtime(app)).run_once()

    # The broken endpoint's trouble holds back only its own later message.
    assert len(received_ids(healthy)) == 2
    for request in healthy.accepted():
        verify([NEW_SECRET], request.headers, request.body, at=clock.now())
        with pytest.raises(ValueError, match="signature"):
            verify([OLD_SECRET], request.headers, request.body, at=clock.now())
    [attempt] = broken.requests
    verify([OLD_SECRET], attempt.headers, attempt.body, at=clock.now())
    by_destination = {(r.destination, r.event_type): r for r in rows(app)}
    assert by_destination[("audit-sink", "account.locked")].status == OutboxStatus.PENDING
    assert by_destination[("audit-sink", "account.unlocked")].attempts == 0


def test_the_loop_survives_a_database_outage_and_carries_on(delivery_app: Callable[..., Flask]) -> None:
    from sqlalchemy.exc import OperationalError

    from security.delivery.dispatcher import run_loop

    app = delivery_app(webhooks=endpoint_config("http://backend.invalid/h"))
    sender = MemoryWebhookSender()
    real = build_dispatcher(runtime(app), webhook_sender=sender)
    stop = threading.Event()
    passes: list[int] = []

    class FlakyDatabase:
        """The first two passes find the database gone; then it is back."""

        def run_once(self, *, stop: threading.Event | None = None) -> Any:
            passes.append(1)
            if len(passes) <= 2:
                raise OperationalError("SELECT 1", {}, Exception("connection refused"))
            stats = real.run_once(stop=stop)
            if sender.sent:
                loop_stop.set()
            return stats

    loop_stop = stop
    [msg_id] = enqueue(app, [("account.locked", "A")])
    thread = threading.Thread(target=run_loop, args=(FlakyDatabase(),), kwargs={"stop": stop, "poll_interval": 0.01})
    thread.start()
    try:
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=5)
    assert len(passes) >= 3
    assert [r.msg_id for r in sender.sent] == [msg_id]
