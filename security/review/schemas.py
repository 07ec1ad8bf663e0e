"""Request and response bodies of the ``/v1/review/...`` case API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from security.locks.models import Lock, LockHistory
from security.locks.states import LockKind, LockStatus, RequiredAction
from security.review.services import (
    MAX_PAGE_SIZE,
    MAX_RESTRICTION_HOURS,
    TIMELINE_LIMIT,
    ClaimFilter,
    QueueItem,
    QueueOrder,
    Timeline,
)
from security.types import ACCOUNT_ID_PATTERN
from security.web.api import JsonInt
from security.web.openapi import Trimmed

NOTE_MAX = 2000


class Strict(BaseModel):
    # Values are taken as sent (no implicit trimming, see ``openapi.Trimmed``): notes are Trimmed.
    model_config = ConfigDict(extra="forbid")


Note = Annotated[str, Trimmed(NOTE_MAX, min_length=3)]


class QueueQuery(Strict):
    kind: LockKind | None = None
    status: LockStatus | None = Field(default=None, description="active or awaiting_actions (released never shows)")
    min_score: int | None = Field(default=None, ge=0, le=100)
    account_id: str | None = Field(default=None, pattern=ACCOUNT_ID_PATTERN)
    claimed: ClaimFilter = ClaimFilter.ANY
    order: QueueOrder = QueueOrder.RISK
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=25, ge=1, le=MAX_PAGE_SIZE)


class LockOut(BaseModel):
    lock_id: uuid.UUID
    reference: str
    account_id: str
    kind: str
    status: str
    reasons: list[dict[str, Any]]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    required_actions: list[str]
    completed_actions: list[str]
    resolution: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    version: int = Field(description="Send it back with an unlock: a change since then gives 409")

    @classmethod
    def of(cls, lock: Lock) -> LockOut:
        return cls(
            lock_id=lock.id, reference=lock.reference, account_id=lock.account_id, kind=lock.kind,
            status=lock.status, reasons=list(lock.reasons), created_by=lock.created_by, created_at=lock.created_at,
            expires_at=lock.expires_at, required_actions=list(lock.required_actions),
            completed_actions=list(lock.completed_actions), resolution=lock.resolution,
            resolved_at=lock.resolved_at, resolved_by=lock.resolved_by, version=lock.version,
        )


class QueueItemOut(LockOut):
    score: int
    band: str | None
    age_seconds: int
    claimed_by: str | None = Field(description="Operator holding the claim on the lock, or on its open appeal "
                                               "(a claim on either covers both)")
    claimed_here: bool = Field(description="The claim is on this lock itself (release it here); false when "
                                           "the appeal's claim covers it")

    @classmethod
    def of_item(cls, item: QueueItem) -> QueueItemOut:
        return cls(**LockOut.of(item.lock).model_dump(), score=item.score, band=item.band,
                   age_seconds=item.age_seconds, claimed_by=item.claimed_by, claimed_here=item.claimed_here)


class QueueOut(BaseModel):
    items: list[QueueItemOut]
    total: int
    page: int
    per_page: int
    pages: int


class ClaimOut(BaseModel):
    lock_id: uuid.UUID
    claimed_by: str
    claimed_at: datetime


class AppealClaimOut(BaseModel):
    appeal_id: uuid.UUID
    claimed_by: str
    claimed_at: datetime


class ManualLockIn(Strict):
    note: Note = Field(description="Why (kept in the lock's reasons and history)")
    expires_at: AwareDatetime | None = Field(default=None, description="Temporary lock until then; omit: indefinite")
    required_actions: list[RequiredAction] = Field(default_factory=list, max_length=len(RequiredAction))


class UnlockIn(Strict):
    note: Note
    version: JsonInt = Field(ge=1, description="The lock version you reviewed (from the queue or timeline)")


class NoteIn(Strict):
    note: Note


class RestrictIn(NoteIn):
    expires_at: AwareDatetime | None = Field(
        default=None,
        description=f"The restriction lifts itself then (future, at most {MAX_RESTRICTION_HOURS} h ahead); "
                    "omit: until lifted by hand",
    )


class AccountStatusOut(BaseModel):
    account_id: str
    status: str
    restricted_until: datetime | None = Field(default=None, description="When a timed restriction lifts itself")


class HistoryOut(BaseModel):
    at: datetime
    actor: str
    event: str
    from_status: str | None
    to_status: str
    note: str | None

    @classmethod
    def of(cls, row: LockHistory) -> HistoryOut:
        return cls(at=row.at, actor=row.actor, event=row.event, from_status=row.from_status,
                   to_status=row.to_status, note=row.note)


class TimelineLockOut(LockOut):
    history: list[HistoryOut]
    claimed_by: str | None


class RuleOut(BaseModel):
    rule: str
    outcome: str
    mode: str
    points: int
    detail: str


class AssessmentOut(BaseModel):
    assessment_id: uuid.UUID
    kind: str
    score: int
    band: str
    decision: str
    final_decision: str
    ruleset_version: str
    occurred_at: datetime
    created_at: datetime
    rules: list[RuleOut] = Field(description="Every rule evaluated, with its points (hits, misses, errors, shadow)")


class EventOut(BaseModel):
    event_id: str | None
    kind: str
    occurred_at: datetime
    received_at: datetime
    outcome: str | None
    ip: str | None
    country: str | None
    device_id: str | None
    amount: str | None
    currency: str | None
    destination_address: str | None
    destination_country: str | None
    change: str | None


class AuditOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    data: dict[str, Any]


class DeliveryOut(BaseModel):
    message_id: str
    channel: str
    event_type: str
    destination: str
    status: str
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None


class EntryOut(BaseModel):
    at: datetime
    source: str
    summary: str


class AccountOut(BaseModel):
    account_id: str
    status: str
    restricted_until: datetime | None = Field(description="When a timed restriction lifts itself")
    email: str | None
    phone: str | None
    home_country: str | None
    created_at: datetime


class TimelineAppealOut(BaseModel):
    appeal_id: uuid.UUID
    lock_id: uuid.UUID | None
    state: str
    created_at: datetime
    updated_at: datetime


class TimelineOut(BaseModel):
    account: AccountOut
    appeals: list[TimelineAppealOut]
    locks: list[TimelineLockOut]
    assessments: list[AssessmentOut]
    events: list[EventOut]
    audit: list[AuditOut]
    deliveries: list[DeliveryOut]
    entries: list[EntryOut] = Field(description=f"All of the above merged, newest first (each source: last "
                                                f"{TIMELINE_LIMIT})")

    @classmethod
    def of(cls, t: Timeline) -> TimelineOut:
        a = t.account
        return cls(
            account=AccountOut(account_id=a.id, status=a.status, restricted_until=a.restricted_until,
                               email=a.email, phone=a.phone,
                               home_country=a.home_country, created_at=a.created_at),
            appeals=[TimelineAppealOut(appeal_id=x.id, lock_id=x.lock_id, state=x.state, created_at=x.created_at,
                                       updated_at=x.updated_at) for x in t.appeals],
            locks=[TimelineLockOut(**LockOut.of(lock).model_dump(), claimed_by=t.claims.get(lock.id),
                                   history=[HistoryOut.of(h) for h in t.history.get(lock.id, [])])
                   for lock in t.locks],
            assessments=[AssessmentOut(
                assessment_id=x.id, kind=x.kind, score=x.score, band=x.band, decision=x.decision,
                final_decision=x.final_decision, ruleset_version=x.ruleset_version, occurred_at=x.occurred_at,
                created_at=x.created_at,
                rules=[RuleOut(rule=r.rule_id, outcome=r.outcome, mode=r.mode, points=r.points, detail=r.detail)
                       for r in x.results],
            ) for x in t.assessments],
            events=[EventOut(
                event_id=e.event_id, kind=e.kind, occurred_at=e.occurred_at, received_at=e.received_at,
                outcome=e.outcome, ip=e.ip, country=e.country, device_id=e.device_id, amount=e.amount,
                currency=e.currency, destination_address=e.destination_address,
                destination_country=e.destination_country, change=e.change,
            ) for e in t.events],
            audit=[AuditOut(seq=x.seq, at=x.at, actor=x.actor, action=x.action, data=dict(x.data)) for x in t.audit],
            deliveries=[DeliveryOut(
                message_id=m.message_id, channel=m.channel, event_type=m.event_type, destination=m.destination,
                status=m.status, attempts=m.attempts, created_at=m.created_at, delivered_at=m.delivered_at,
                last_error=m.last_error,
            ) for m in t.deliveries],
            entries=[EntryOut(at=e.at, source=e.source, summary=e.summary) for e in t.entries],
        )
