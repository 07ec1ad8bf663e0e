"""Deny-list management (no Flask; the caller commits)."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clock import Clock
from security.errors import InvalidInput, NotFound
from security.risk.models import DenyListEntry, DenyListKind


class AuditTag(StrEnum):
    ADDED = "risk:denylist:added"
    REMOVED = "risk:denylist:removed"


class DenyListEntryNotFound(NotFound):
    code = "deny_list_entry_not_found"
    title = "No such deny-list entry"


def normalize(kind: DenyListKind, value: str) -> str:
    """Return the stored form: canonical IP text, or the address trimmed and lower-cased.

    Lower-casing makes EVM addresses match whatever checksum casing the backend sends.
    """
    value = value.strip()
    if kind is DenyListKind.IP:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidInput("Not an IPv4 or IPv6 address.",
                               errors=[{"field": "value", "message": "not an IP address"}]) from None
    if not value or len(value) > 128:  # noqa: PLR2004 - column width
        raise InvalidInput("An address has 1 to 128 characters.",
                           errors=[{"field": "value", "message": "1 to 128 characters"}])
    return value.lower()


class DenyListService:
    """Adds, removes and lists deny-listed IPs and destination addresses."""

    def __init__(self, session: Session, *, clock: Clock, audit: AuditLog) -> None:
        self._session = session
        self._clock = clock
        self._audit = audit

    def _find(self, kind: DenyListKind, value: str) -> DenyListEntry | None:
        return self._session.scalar(
            select(DenyListEntry).where(DenyListEntry.kind == kind, DenyListEntry.value == value))

    def put(self, kind: DenyListKind, value: str, *, reason: str, actor: str,
            expires_at: datetime | None = None) -> tuple[DenyListEntry, bool]:
        """Add or update an entry; return (entry, created)."""
        value = normalize(kind, value)
        entry = self._find(kind, value)
        created = entry is None
        if entry is None:
            entry = DenyListEntry(kind=kind, value=value, reason=reason, created_by=actor,
                                  created_at=self._clock.now(), expires_at=expires_at)
            self._session.add(entry)
        else:
            entry.reason = reason
            entry.expires_at = expires_at
        self._audit.record(AuditTag.ADDED, actor=actor, subject_type="deny_list", subject_id=f"{kind}:{value}",
                           data={"reason": reason, "expires_at": expires_at.isoformat() if expires_at else None})
        self._session.flush()
        return entry, created

    def remove(self, kind: DenyListKind, value: str, *, actor: str) -> None:
        """Remove an entry or raise :class:`DenyListEntryNotFound`."""
        value = normalize(kind, value)
        entry = self._find(kind, value)
        if entry is None:
            raise DenyListEntryNotFound()
        self._session.delete(entry)
        self._audit.record(AuditTag.REMOVED, actor=actor, subject_type="deny_list",
                           subject_id=f"{kind}:{value}", data={})
        self._session.flush()

    def list(self, kind: DenyListKind | None = None) -> list[DenyListEntry]:
        """Return entries, newest first."""
        query = select(DenyListEntry).order_by(DenyListEntry.created_at.desc(), DenyListEntry.value)
        if kind is not None:
            query = query.where(DenyListEntry.kind == kind)
        return list(self._session.scalars(query))
