"""Recording and verifying the audit log.

Entries are buffered on the session and chained when it commits. Appending locks the chain head row, and
doing it last in every transaction means a transaction never waits for another while holding the head:
the head lock cannot take part in a deadlock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from security.audit.chain import EMPTY_HEAD, ChainBreak, ChainRecord, entry_hash, verify_chain
from security.audit.models import AuditEntry, AuditHead
from security.clock import Clock

_PENDING_KEY = "foxguard.audit.pending"
HEAD_ROW_ID = 1


@dataclass(frozen=True)
class _Pending:
    # The innermost transaction the entry was recorded in: rolling that back (or an outer one) drops it.
    transaction: SessionTransaction | None
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    data: dict[str, Any]
    request_id: str | None


class AuditLog:
    """Append entries to the audit log in the caller's transaction."""

    def __init__(self, session: Session, *, clock: Clock, request_id: str | None = None) -> None:
        self._session = session
        self._clock = clock
        self._request_id = request_id

    def record(
        self,
        action: str | StrEnum,
        *,
        actor: str,
        subject_type: str,
        subject_id: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an entry; it is chained and written when the session commits (or rolled back with it)."""
        # Make sure a transaction has begun, so a rollback of it can be told to drop this entry.
        self._session.connection()
        pending: list[_Pending] = self._session.info.setdefault(_PENDING_KEY, [])
        pending.append(
            _Pending(
                transaction=self._session.get_nested_transaction() or self._session.get_transaction(),
                at=self._clock.now(),
                actor=actor,
                action=str(action),
                subject_type=subject_type,
                subject_id=str(subject_id),
                data=dict(data or {}),
                request_id=self._request_id,
            )
        )


def _write_pending(session: Session) -> None:
    pending: list[_Pending] = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return
    count = len(pending)
    # Reserve `count` sequence numbers; the row lock serialises appenders until this transaction ends.
    row = session.execute(
        update(AuditHead)
        .where(AuditHead.id == HEAD_ROW_ID)
        .values(seq=AuditHead.seq + count)
        .returning(AuditHead.seq, AuditHead.hash)
    ).one_or_none()
    if row is None:
        raise RuntimeError("audit_head row is missing: the database was not migrated")
    last_seq, prev_hash = row
    seq = last_seq - count
    rows = []
    for item in pending:
        seq += 1
        digest = entry_hash(
            seq=seq,
            at=item.at,
            actor=item.actor,
            action=item.action,
            subject_type=item.subject_type,
            subject_id=item.subject_id,
            data=item.data,
            request_id=item.request_id,
            prev_hash=prev_hash,
        )
        rows.append(
            {
                "seq": seq,
                "at": item.at,
                "actor": item.actor,
                "action": item.action,
                "subject_type": item.subject_type,
                "subject_id": item.subject_id,
                "data": item.data,
                "request_id": item.request_id,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    session.execute(insert(AuditEntry), rows)
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ROW_ID).values(hash=prev_hash))


@event.listens_for(Session, "before_commit")
def _chain_pending_entries(session: Session) -> None:
    _write_pending(session)


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_entries(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back transaction or savepoint takes the entries recorded inside it along."""
    pending: list[_Pending] | None = session.info.get(_PENDING_KEY)
    if pending and previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)  # the whole transaction is gone
    elif pending:
        session.info[_PENDING_KEY] = [p for p in pending if not _within(p.transaction, previous_transaction)]


def pending_count(session: Session) -> int:
    """Entries recorded in this transaction and not yet committed (for tests and assertions)."""
    return len(session.info.get(_PENDING_KEY, []))


def _records(session: Session, *, after: int = 0, batch: int = 1000) -> Iterator[ChainRecord]:
    last = after
    while True:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        ).all()
        if not entries:
            return
        for e in entries:
            yield ChainRecord(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                subject_type=e.subject_type,
                subject_id=e.subject_id,
                data=e.data,
                request_id=e.request_id,
                prev_hash=e.prev_hash,
                hash=e.hash,
            )
        last = entries[-1].seq
        session.expunge_all()


def chain_head(session: Session) -> tuple[int, str]:
    """(seq, hash) of the newest committed entry ((0, the genesis hash) while the log is empty), read
    from the database even when the session holds the row already (other sessions move it)."""
    head = session.get(AuditHead, HEAD_ROW_ID, populate_existing=True)
    return (head.seq, head.hash) if head else EMPTY_HEAD


def verify_audit_log(session: Session, *, after: tuple[int, str] = EMPTY_HEAD) -> tuple[int, ChainBreak | None]:
    """Check the chain against its stored head; return (entries verified, first break or None).

    By default the whole chain. ``after``: a :func:`chain_head` read earlier, whose entries were verified
    then; only the entries since are checked, and they must link onto it.
    """
    head_seq, head_hash = chain_head(session)
    return verify_chain(_records(session, after=after[0]), head_seq=head_seq, head_hash=head_hash, after=after)
