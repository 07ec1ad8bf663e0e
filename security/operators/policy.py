"""Operator roles, named permissions and the pure rules around sign-in and sessions.

Pure: no Flask, no SQLAlchemy, no clock. Every permission check in the JSON API and the console goes
through :func:`allowed` (via ``security.operators.auth.authorize``), so there is one place to read who may
do what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Permission(StrEnum):
    """``source:subject:action`` names of what an operator may do."""

    CASES_READ = "review:cases:read"
    CASES_CLAIM = "review:cases:claim"
    LOCKS_WRITE = "review:locks:write"
    APPEALS_DECIDE = "review:appeals:decide"
    APPEALS_REPLY = "review:appeals:reply"
    OPERATORS_MANAGE = "admin:operators:manage"
    CLIENTS_MANAGE = "admin:clients:manage"
    DENYLIST_MANAGE = "admin:denylist:manage"


_VIEWER = frozenset({Permission.CASES_READ})
_REVIEWER = _VIEWER | {
    Permission.CASES_CLAIM, Permission.LOCKS_WRITE, Permission.APPEALS_DECIDE, Permission.APPEALS_REPLY,
}
# Admins keep the reviewer's powers: a small team must not be blocked when only admins are on duty.
_ADMIN = _REVIEWER | {Permission.OPERATORS_MANAGE, Permission.CLIENTS_MANAGE, Permission.DENYLIST_MANAGE}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.REVIEWER: _REVIEWER,
    Role.ADMIN: _ADMIN,
}


def permissions_for(role: str) -> frozenset[Permission]:
    """Return the permissions ``role`` grants (none for an unknown role: fail closed)."""
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()


def allowed(role: str, permission: Permission) -> bool:
    """Tell whether an operator with ``role`` holds ``permission``."""
    return permission in permissions_for(role)


class FourEyesViolation(ValueError):
    """The same person would give two of the approvals a four-eyes action needs."""


def check_four_eyes(*, target: str, requester: str, approver: str) -> None:
    """Refuse unless requester, approver and target are three different operators.

    The operator whose credential is being reset may take part in neither role: otherwise one person who
    stole a password could reset the second factor of the account they hold.
    """
    if requester == approver:
        raise FourEyesViolation("the approving operator must differ from the requesting one")
    if target in (requester, approver):
        raise FourEyesViolation("an operator cannot request or approve a change to their own credentials")


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Failed sign-ins (wrong password or TOTP) before an operator is locked, and for how long."""

    max_failures: int
    lock_for: timedelta

    def after_failure(self, failures: int, *, at: datetime) -> datetime | None:
        """Return until when the operator is locked after ``failures`` consecutive failures (or ``None``)."""
        return at + self.lock_for if failures >= self.max_failures else None


def is_locked(locked_until: datetime | None, *, at: datetime) -> bool:
    """Tell whether a lockout ending at ``locked_until`` is still running at ``at``."""
    return locked_until is not None and at < locked_until


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a console session lives without activity (idle) and at most (absolute)."""

    idle: timedelta
    absolute: timedelta

    def expires_at(self, *, created_at: datetime, last_seen_at: datetime) -> datetime:
        """Return the instant the session ends unless it is used again before then."""
        return min(last_seen_at + self.idle, created_at + self.absolute)

    def is_live(self, *, created_at: datetime, last_seen_at: datetime, at: datetime) -> bool:
        """Tell whether a session created at ``created_at`` and last used at ``last_seen_at`` is valid at ``at``."""
        return at < self.expires_at(created_at=created_at, last_seen_at=last_seen_at)
