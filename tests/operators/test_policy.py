from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from security.operators.policy import (
    FourEyesViolation,
    LockoutPolicy,
    Permission,
    Role,
    SessionPolicy,
    allowed,
    check_four_eyes,
    is_locked,
    permissions_for,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_viewer_only_reads():
    assert permissions_for(Role.VIEWER) == {Permission.CASES_READ}


def test_reviewer_decides_but_manages_nothing():
    granted = permissions_for(Role.REVIEWER)
    assert {Permission.APPEALS_DECIDE, Permission.LOCKS_WRITE, Permission.CASES_CLAIM} <= granted
    assert not any(p.value.startswith("admin:") for p in granted)


def test_admin_holds_every_permission():
    assert permissions_for(Role.ADMIN) == set(Permission)


def test_unknown_role_gets_nothing():
    assert permissions_for("root") == frozenset()
    assert not allowed("root", Permission.CASES_READ)


def test_permission_values_are_source_subject_action():
    for permission in Permission:
        assert len(permission.value.split(":")) == 3, permission


@pytest.mark.parametrize(
    ("requester", "approver"),
    [("ann", "ann"), ("target", "bob"), ("ann", "target")],
)
def test_four_eyes_needs_three_different_people(requester, approver):
    with pytest.raises(FourEyesViolation):
        check_four_eyes(target="target", requester=requester, approver=approver)


def test_four_eyes_accepts_two_other_admins():
    check_four_eyes(target="target", requester="ann", approver="bob")


def test_lockout_after_max_failures_only():
    policy = LockoutPolicy(max_failures=3, lock_for=timedelta(minutes=15))
    assert policy.after_failure(2, at=T0) is None
    assert policy.after_failure(3, at=T0) == T0 + timedelta(minutes=15)


def test_is_locked_until_the_instant_it_ends():
    until = T0 + timedelta(minutes=1)
    assert is_locked(until, at=T0)
    assert not is_locked(until, at=until)
    assert not is_locked(None, at=T0)


def test_session_idle_and_absolute_timeouts():
    policy = SessionPolicy(idle=timedelta(minutes=15), absolute=timedelta(hours=8))
    # Idle: 15 minutes after the last use.
    assert policy.is_live(created_at=T0, last_seen_at=T0, at=T0 + timedelta(minutes=14, seconds=59))
    assert not policy.is_live(created_at=T0, last_seen_at=T0, at=T0 + timedelta(minutes=15))
    # Absolute: even a session used a minute ago ends 8 hours after sign-in.
    last = T0 + timedelta(hours=7, minutes=59)
    assert policy.is_live(created_at=T0, last_seen_at=last, at=last + timedelta(seconds=30))
    assert not policy.is_live(created_at=T0, last_seen_at=last, at=T0 + timedelta(hours=8))
