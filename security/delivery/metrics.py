"""Outbox backlog for ``/metrics``: undelivered messages per channel and status, and the oldest one's age.

Read from the database at scrape time (the truth shared by every dispatcher and host), so an alert on
``foxguard_outbox_messages{status="dead"} > 0`` or a growing ``foxguard_outbox_oldest_pending_seconds``
works whichever process serves the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from security.clock import Clock
from security.delivery.outbox import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)


class OutboxBacklogCollector(Collector):
    """Prometheus collector bound to the most recently started app's session factory and clock."""

    def __init__(self) -> None:
        self._session_factory: Callable[[], Session] | None = None
        self._clock: Clock | None = None

    def bind(self, session_factory: Callable[[], Session], clock: Clock) -> None:
        """Point the collector at an app's database (called by ``init_app``)."""
        self._session_factory = session_factory
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._session_factory is None or self._clock is None:
            return
        messages = GaugeMetricFamily(
            "foxguard_outbox_messages",
            "Undelivered outbox messages by channel and status",
            labels=["channel", "status"],
        )
        oldest = GaugeMetricFamily(
            "foxguard_outbox_oldest_pending_seconds", "Age of the oldest pending outbox message (0 if none)"
        )
        try:
            with self._session_factory() as session:
                counts = session.execute(
                    select(OutboxMessage.channel, OutboxMessage.status, func.count())
                    .where(OutboxMessage.status != OutboxStatus.DELIVERED)
                    .group_by(OutboxMessage.channel, OutboxMessage.status)
                ).all()
                first = session.scalar(
                    select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == OutboxStatus.PENDING)
                )
                session.rollback()
        except Exception:  # a scrape must not fail because the database is away; /readyz reports that
            log.warning("outbox backlog metrics unavailable", exc_info=True)
            return
        for channel, status, count in counts:
            messages.add_metric([channel, status], float(count))
        age = 0.0
        if first is not None:
            age = max(0.0, (self._clock.now() - first).total_seconds())
        oldest.add_metric([], age)
        yield messages
        yield oldest


COLLECTOR = OutboxBacklogCollector()
_registered = False


def register(session_factory: Callable[[], Session], clock: Clock) -> OutboxBacklogCollector:
    """Register the collector once per process and bind it to this app."""
    global _registered
    if not _registered:
        REGISTRY.register(COLLECTOR)
        _registered = True
    COLLECTOR.bind(session_factory, clock)
    return COLLECTOR
