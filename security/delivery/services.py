"""Outbox queue operations for the dispatcher and the operator CLI. Never commits: callers own the transaction.

Claiming (several dispatchers may run at once, on many hosts):

* A message is *due* when it is ``pending``, ``next_attempt_at <= now`` and not leased (``lease_until``
  is NULL or past).
* A message is *blocked* while an earlier message (smaller id) with the same ``ordering_key``, channel
  and destination is still ``pending`` or ``dead``: a later message never overtakes an earlier one, even
  one that is being retried or waits for an operator in the dead-letter list.
* Claiming is ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE ... RETURNING`` in one transaction on
  PostgreSQL: concurrent dispatchers skip each other's rows instead of waiting or double-claiming. On
  SQLite the same statements run inside a ``BEGIN IMMEDIATE`` transaction, which serialises writers,
  so the due-and-unleased check and the lease are atomic there too.
* The claim sets ``lease_until = now + lease`` and counts the attempt (so a message that kills its
  dispatcher every time still ends in the dead-letter list). ``lease_until`` is also the fencing
  token: results are recorded only while the row still carries the lease we set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from security.audit.services import AuditLog
from security.delivery.outbox import OutboxMessage, OutboxStatus
from security.errors import Conflict, NotFound

AUDIT_RETRY = "delivery:outbox:retry"
AUDIT_PURGE = "delivery:outbox:purge"
# last_error is shown to operators; senders already truncate, this is the storage guard.
MAX_ERROR_CHARS = 1000


class MessageAlreadyDelivered(Conflict):
    code = "message_already_delivered"
    title = "The message was already delivered"


class MessageBeingSent(Conflict):
    code = "message_being_sent"
    title = "A dispatcher is sending the message right now"


@dataclass(frozen=True)
class ClaimedMessage:
    """A detached snapshot of a claimed row: everything needed to send it, nothing tied to a session."""

    id: int
    message_id: str
    created_at: datetime
    channel: str
    event_type: str
    destination: str
    payload: dict[str, Any]
    sealed: str | None
    ordering_key: str | None
    attempts: int
    lease_until: datetime


def _unleased(now: datetime) -> Any:
    return or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until <= now)


def _blocked() -> Any:
    earlier = aliased(OutboxMessage)
    return exists().where(
        earlier.ordering_key == OutboxMessage.ordering_key,
        earlier.channel == OutboxMessage.channel,
        earlier.destination == OutboxMessage.destination,
        earlier.status.in_((OutboxStatus.PENDING, OutboxStatus.DEAD)),
        earlier.id < OutboxMessage.id,
    )


class OutboxQueue:
    """Claim, complete, fail and re-queue outbox messages."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def claim(self, *, now: datetime, lease: timedelta, limit: int = 1) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due, unblocked messages, oldest first, and count the attempt."""
        due = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == OutboxStatus.PENDING,
                OutboxMessage.next_attempt_at <= now,
                _unleased(now),
                ~_blocked(),
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if self._session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True, of=OutboxMessage)
        # Two statements in one transaction rather than UPDATE ... IN (subquery): PostgreSQL may
        # re-run a LIMITed locking subquery per outer row and lease more rows than asked for. The
        # selected rows stay locked (PostgreSQL) or the database stays write-locked (SQLite's BEGIN
        # IMMEDIATE) until the caller commits, so nobody can claim them in between.
        ids = list(self._session.scalars(due))
        if not ids:
            return []
        lease_until = now + lease
        columns = (
            OutboxMessage.id,
            OutboxMessage.message_id,
            OutboxMessage.created_at,
            OutboxMessage.channel,
            OutboxMessage.event_type,
            OutboxMessage.destination,
            OutboxMessage.payload,
            OutboxMessage.sealed,
            OutboxMessage.ordering_key,
            OutboxMessage.attempts,
            OutboxMessage.lease_until,
        )
        statement = (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == OutboxStatus.PENDING, _unleased(now))
            .values(lease_until=lease_until, attempts=OutboxMessage.attempts + 1)
            .returning(*columns)
            .execution_options(synchronize_session=False)
        )
        rows = self._session.execute(statement).all()
        return sorted((ClaimedMessage(**row._asdict()) for row in rows), key=lambda m: m.id)

    def _owned(self, message: ClaimedMessage) -> Any:
        return and_(
            OutboxMessage.id == message.id,
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.lease_until == message.lease_until,
        )

    def mark_delivered(self, message: ClaimedMessage, *, now: datetime) -> bool:
        """Record success and erase the sealed secrets. Returns False if the row was no longer pending.

        Recorded even when our lease has run out meanwhile: the receiver has the message, and a
        duplicate sent by whoever took over is harmless (receivers deduplicate by ``webhook-id``).
        """
        result = self._session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(
                status=OutboxStatus.DELIVERED,
                delivered_at=now,
                lease_until=None,
                last_error=None,
                sealed=None,
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    def mark_retry(self, message: ClaimedMessage, *, at: datetime, error: str) -> bool:
        """Schedule the next attempt. Returns False if another dispatcher owns the row by now."""
        result = self._session.execute(
            update(OutboxMessage)
            .where(self._owned(message))
            .values(next_attempt_at=at, lease_until=None, last_error=error[:MAX_ERROR_CHARS])
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    def mark_dead(self, message: ClaimedMessage, *, error: str) -> bool:
        """Move to the dead-letter list. Returns False if another dispatcher owns the row by now."""
        result = self._session.execute(
            update(OutboxMessage)
            .where(self._owned(message))
            .values(status=OutboxStatus.DEAD, lease_until=None, last_error=error[:MAX_ERROR_CHARS])
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    # ------------------------------------------------------------------ operators

    def list_messages(self, *, status: OutboxStatus | None = None, limit: int = 100) -> Sequence[OutboxMessage]:
        """Messages, newest first, optionally of one status."""
        query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
        if status is not None:
            query = query.where(OutboxMessage.status == status)
        return self._session.scalars(query).all()

    def held_behind(self, message: OutboxMessage) -> int:
        """How many later messages wait for ``message`` (same ordering key, channel and destination)."""
        if message.ordering_key is None:
            return 0
        count = self._session.scalar(
            select(func.count()).where(
                OutboxMessage.ordering_key == message.ordering_key,
                OutboxMessage.channel == message.channel,
                OutboxMessage.destination == message.destination,
                OutboxMessage.status == OutboxStatus.PENDING,
                OutboxMessage.id > message.id,
            )
        )
        return int(count or 0)

    def get(self, ref: str) -> OutboxMessage:
        """Find a message by its numeric id or its ``msg_...`` id."""
        query = select(OutboxMessage)
        query = query.where(OutboxMessage.id == int(ref) if ref.isdigit() else OutboxMessage.message_id == ref)
        message = self._session.scalars(query).one_or_none()
        if message is None:
            raise NotFound(f"no outbox message {ref}")
        return message

    def retry(self, ref: str, *, now: datetime, audit: AuditLog, actor: str) -> OutboxMessage:
        """Re-queue one dead message (or make a pending one due now) with a fresh attempt budget."""
        message = self.get(ref)
        if message.status == OutboxStatus.DELIVERED:
            raise MessageAlreadyDelivered(f"{message.message_id} was delivered at {message.delivered_at}")
        if message.lease_until is not None and message.lease_until > now:
            # Dropping a live lease would let a second dispatcher send it in parallel.
            raise MessageBeingSent(f"{message.message_id} is leased by a dispatcher until {message.lease_until}")
        previous = message.status
        message.status = OutboxStatus.PENDING
        message.attempts = 0
        message.next_attempt_at = now
        message.lease_until = None
        audit.record(
            AUDIT_RETRY,
            actor=actor,
            subject_type="outbox_message",
            subject_id=message.message_id,
            data={"previous_status": str(previous), "channel": message.channel, "event_type": message.event_type},
        )
        return message

    def retry_all_dead(self, *, now: datetime, audit: AuditLog, actor: str) -> int:
        """Re-queue every dead message; returns how many."""
        dead = self._session.scalars(
            select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.DEAD).order_by(OutboxMessage.id)
        ).all()
        for message in dead:
            self.retry(str(message.id), now=now, audit=audit, actor=actor)
        return len(dead)

    def purge_delivered(self, *, before: datetime, audit: AuditLog, actor: str) -> int:
        """Delete messages delivered before ``before`` (housekeeping); pending and dead ones are kept."""
        result = self._session.execute(
            delete(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.DELIVERED, OutboxMessage.delivered_at < before)
            .execution_options(synchronize_session=False)
        )
        count = _rowcount(result)
        audit.record(
            AUDIT_PURGE,
            actor=actor,
            subject_type="outbox",
            subject_id="delivered",
            data={"before": before.isoformat(), "deleted": count},
        )
        return count


def _rowcount(result: Any) -> int:
    return int(result.rowcount) if isinstance(result, CursorResult) else 0
