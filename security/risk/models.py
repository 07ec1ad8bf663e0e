"""Stored events, assessments (with one record per rule result), familiarity counters, deny lists, alerts."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from security.db import Base, only_on
from security.types import JSONDict, JSONList, JSONType, Timestamp, UUIDPk

BigId = BigInteger().with_variant(Integer(), "sqlite")

#: The key of the account-history index, and the columns the feature queries read through it.
HISTORY_KEY: Final = ("account_id", "kind", "occurred_at")
HISTORY_READ: Final = ("amount", "currency", "outcome", "lat", "lon", "change")


class LoginOutcome(StrEnum):
    """What happened to a login attempt."""

    SUCCESS = "success"  # the credentials were right (whatever the risk decision)
    FAILURE = "failure"  # wrong password / second factor
    BLOCKED = "blocked"  # not checked: the account was locked


class RiskEvent(Base):
    """One login, transaction or account change, as received (the history features are computed from).

    ``(client_id, event_id)`` is the idempotency key; ``request_hash`` and ``response`` let a replay
    return the stored answer and a reused id with a different body be refused.
    """

    __tablename__ = "risk_events"

    id: Mapped[UUIDPk]
    client_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    event_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[Timestamp]
    received_at: Mapped[Timestamp]
    request_hash: Mapped[str | None] = mapped_column(String(64))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    outcome: Mapped[str | None] = mapped_column(String(16))
    ip: Mapped[str | None] = mapped_column(String(45))
    country: Mapped[str | None] = mapped_column(String(2))
    device_id: Mapped[str | None] = mapped_column(String(128))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    # Decimal amounts are kept as canonical strings: exact on every backend, summed in Python.
    amount: Mapped[str | None] = mapped_column(String(48))
    currency: Mapped[str | None] = mapped_column(String(12))
    destination_address: Mapped[str | None] = mapped_column(String(128))
    destination_country: Mapped[str | None] = mapped_column(String(2))
    change: Mapped[str | None] = mapped_column(String(24))
    # The validated request without secrets (timeline, backtests).
    payload: Mapped[JSONDict]

    __table_args__ = (
        UniqueConstraint("client_id", "event_id", name="uq_risk_events_client_event"),
        # Account history by kind and time: velocity, amount history, previous login, changes. It also
        # carries what those queries read, so they never visit the table: as INCLUDE columns on
        # PostgreSQL; SQLite has no INCLUDE, so there they follow the key (with ``id``, the ties' order).
        only_on("postgresql", Index("ix_risk_events_account_kind_time", *HISTORY_KEY,
                                    postgresql_include=list(HISTORY_READ))),
        only_on("sqlite", Index("ix_risk_events_account_kind_time", *HISTORY_KEY, "id", *HISTORY_READ)),
        # Failed logins per IP in the last minutes (brute force / credential stuffing).
        Index("ix_risk_events_ip_outcome_received", "ip", "outcome", "received_at"),
        # Brute-force counts per account over received time.
        Index("ix_risk_events_account_outcome_received", "account_id", "outcome", "received_at"),
        # "First transaction to this address?": every column of the question is in the key, so it is one
        # probe (SQLite's planner otherwise prefers the history index and reads the account's transactions).
        Index("ix_risk_events_account_destination", "account_id", "destination_address", "kind", "occurred_at"),
    )


class Assessment(Base):
    """The engine's verdict for one event, with the features it saw and the ruleset version."""

    __tablename__ = "risk_assessments"

    id: Mapped[UUIDPk]
    event_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("risk_events.id"), index=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(16))
    # The final decision after account state, second factor and the auto-lock guard.
    final_decision: Mapped[str] = mapped_column(String(16))
    ruleset_version: Mapped[str] = mapped_column(String(16))
    features: Mapped[JSONDict]
    occurred_at: Mapped[Timestamp]
    created_at: Mapped[Timestamp] = mapped_column(index=True)

    # Every rule evaluated, in rule-file order: {rule_id, outcome (hit | no_hit | error | shadow), mode,
    # points, detail} (CONVENTIONS "decisions are data": one record per rule). Kept with the assessment
    # they belong to, which is read and written whole: as rows of a table of their own they were 13 of
    # the 15 rows (and 26 of the 36 index entries) every scored event wrote.
    rules: Mapped[JSONList]

    event: Mapped[RiskEvent] = relationship()

    @property
    def results(self) -> list[StoredRuleResult]:
        """The stored rule results, typed."""
        return [StoredRuleResult.from_json(item) for item in self.rules]


@dataclass(frozen=True)
class StoredRuleResult:
    """One rule's outcome in one stored assessment (hit, no_hit, error, shadow)."""

    rule_id: str
    outcome: str
    mode: str
    points: int
    detail: str

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> StoredRuleResult:
        return cls(rule_id=str(item["rule_id"]), outcome=str(item["outcome"]), mode=str(item["mode"]),
                   points=int(item["points"]), detail=str(item["detail"]))


#: Which counter rows are global shards (their scope starts with "*"), as each backend spells it.
SHARD_ROWS_PG: Final = "left(scope, 1) = '*'"
SHARD_ROWS_SQLITE: Final = "substr(scope, 1, 1) = '*'"


class FamiliarityCount(Base):
    """How often a value was seen at one level of a feature hierarchy, globally or for one account.

    ``scope`` is ``""`` for all users or an account id. The row with ``value == ""`` of a
    (scope, level) is the level's total: ``count`` = entries, ``children`` = distinct values. For any
    other row ``children`` counts the distinct finest values seen under it (smoothing's ``U``).
    Kept up to date on every successful login so scoring reads a handful of rows by primary key.
    """

    __tablename__ = "risk_familiarity_counts"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    children: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        # The global shards' rows ("*0".."*15") by (level, value): one descent reads a value's row in every
        # shard (the primary key needs one per shard). Partial: account rows are never read this way.
        Index("ix_risk_familiarity_counts_shards", "level", "value", "scope",
              postgresql_where=text(SHARD_ROWS_PG), sqlite_where=text(SHARD_ROWS_SQLITE)),
    )


class DenyListKind(StrEnum):
    """What a deny-list entry matches."""

    IP = "ip"
    ADDRESS = "address"


class DenyListEntry(Base):
    """An IP address or destination address that scores as deny-listed."""

    __tablename__ = "risk_deny_list"

    id: Mapped[UUIDPk]
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp | None]

    __table_args__ = (UniqueConstraint("kind", "value", name="uq_risk_deny_list_kind_value"),)


class RiskAlert(Base):
    """An operator alert raised at most once per kind and window (e.g. the auto-lock guard tripped)."""

    __tablename__ = "risk_alerts"

    id: Mapped[UUIDPk]
    kind: Mapped[str] = mapped_column(String(32))
    window_start: Mapped[Timestamp]
    created_at: Mapped[Timestamp]
    data: Mapped[JSONDict]

    __table_args__ = (UniqueConstraint("kind", "window_start", name="uq_risk_alerts_kind_window"),)
