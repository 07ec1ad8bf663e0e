"""verify_second_factor: the check the login flow and the credential endpoints share."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from security.accounts.models import Account, AccountStatus
from security.audit.services import AuditLog
from security.clock import FrozenClock
from security.config import Settings
from security.credentials import totp
from security.credentials.interfaces import SecondFactorOutcome
from security.credentials.models import RecoveryCode, TotpCredential
from security.credentials.services import TotpService, verify_second_factor
from security.crypto import SecretBox
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SeededEntropy

STEP = timedelta(seconds=totp.PERIOD_SECONDS)


@pytest.fixture
def box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secrets.encryption_keys)


@pytest.fixture
def collaborators(db_session, clock, box):
    return {
        "secret_box": box,
        "audit": AuditLog(db_session, clock=clock),
        "outbox": Outbox(db_session, clock=clock, entropy=SeededEntropy(1), secret_box=box),
    }


@pytest.fixture
def enrolled(db_session, clock: FrozenClock, collaborators) -> tuple[str, tuple[str, ...]]:
    now = clock.now()
    db_session.add(Account(id="acc-2fa", status=AccountStatus.ACTIVE, created_at=now, updated_at=now))
    db_session.flush()
    service = TotpService(db_session, clock=clock, entropy=SeededEntropy(42), issuer="Foxguard", **collaborators)
    secret = service.start_enrollment("acc-2fa", actor="test").secret
    codes = service.confirm_enrollment("acc-2fa", totp.code_at(secret, now - STEP), actor="test")
    return secret, codes


def check(db_session, collaborators, *, at, totp_code=None, recovery_code=None, account_id="acc-2fa"):
    return verify_second_factor(
        db_session, account_id, totp_code=totp_code, recovery_code=recovery_code, at=at, **collaborators
    )


def test_not_enrolled_accounts_need_nothing(db_session, collaborators, clock):
    result = check(db_session, collaborators, at=clock.now(), totp_code="123456", account_id="nobody")
    assert result.outcome is SecondFactorOutcome.NOT_ENROLLED
    assert result.satisfied and not result.accepted


def test_pending_enrollment_is_not_a_second_factor(db_session, collaborators, clock):
    now = clock.now()
    db_session.add(Account(id="acc-p", status=AccountStatus.ACTIVE, created_at=now, updated_at=now))
    db_session.flush()
    TotpService(db_session, clock=clock, entropy=SeededEntropy(3), issuer="F", **collaborators).start_enrollment(
        "acc-p", actor="t"
    )
    assert check(db_session, collaborators, at=now, account_id="acc-p").outcome is SecondFactorOutcome.NOT_ENROLLED


def test_missing_code_is_not_a_failure(db_session, collaborators, clock, enrolled):
    result = check(db_session, collaborators, at=clock.now())
    assert result.outcome is SecondFactorOutcome.MISSING
    assert not result.satisfied
    assert db_session.get(TotpCredential, "acc-2fa").failure_count == 0


def test_code_accepted_once_then_replay_refused_and_counted(db_session, collaborators, clock, enrolled):
    secret, _ = enrolled
    code = totp.code_at(secret, clock.now())
    first = check(db_session, collaborators, at=clock.now(), totp_code=code)
    assert first.outcome is SecondFactorOutcome.ACCEPTED_TOTP
    assert db_session.get(TotpCredential, "acc-2fa").last_step == totp.time_step(clock.now())
    replay = check(db_session, collaborators, at=clock.now() + timedelta(seconds=5), totp_code=code)
    assert replay.outcome is SecondFactorOutcome.REJECTED
    assert replay.failure_count == 1


def test_window_is_one_step_either_side(db_session, collaborators, clock, enrolled):
    secret, _ = enrolled
    now = clock.now() + 4 * STEP  # well past the enrollment step
    late = totp.code_at(secret, now - 2 * STEP)
    assert check(db_session, collaborators, at=now, totp_code=late).outcome is SecondFactorOutcome.REJECTED
    previous = totp.code_at(secret, now - STEP)
    assert check(db_session, collaborators, at=now, totp_code=previous).outcome is SecondFactorOutcome.ACCEPTED_TOTP
    ahead = totp.code_at(secret, now + STEP)
    assert check(db_session, collaborators, at=now, totp_code=ahead).outcome is SecondFactorOutcome.ACCEPTED_TOTP
    # After accepting the step ahead, the current step is in the past: refused.
    current = totp.code_at(secret, now)
    assert check(db_session, collaborators, at=now, totp_code=current).outcome is SecondFactorOutcome.REJECTED


def test_failures_accumulate_and_a_success_resets_them(db_session, collaborators, clock, enrolled):
    secret, _ = enrolled
    counts = [check(db_session, collaborators, at=clock.now(), totp_code="000000").failure_count for _ in range(3)]
    assert counts == [1, 2, 3]
    ok = check(db_session, collaborators, at=clock.now(), totp_code=totp.code_at(secret, clock.now()))
    assert ok.accepted
    db_session.expire_all()
    assert db_session.get(TotpCredential, "acc-2fa").failure_count == 0


def test_recovery_code_single_use(db_session, collaborators, clock, enrolled):
    _, codes = enrolled
    used = check(db_session, collaborators, at=clock.now(), recovery_code=codes[7])
    assert used.outcome is SecondFactorOutcome.ACCEPTED_RECOVERY_CODE
    assert used.recovery_codes_left == 9
    again = check(db_session, collaborators, at=clock.now(), recovery_code=codes[7])
    assert again.outcome is SecondFactorOutcome.REJECTED
    assert again.failure_count == 1
    rows = db_session.scalars(select(RecoveryCode).where(RecoveryCode.used_at.is_not(None))).all()
    assert len(rows) == 1
    events = db_session.scalars(
        select(OutboxMessage.event_type).where(OutboxMessage.event_type == "mfa.recovery_code_used")
    ).all()
    assert events == ["mfa.recovery_code_used"]


def test_totp_code_wins_when_both_are_given(db_session, collaborators, clock, enrolled):
    secret, codes = enrolled
    result = check(
        db_session, collaborators, at=clock.now(), totp_code=totp.code_at(secret, clock.now()), recovery_code=codes[0]
    )
    assert result.outcome is SecondFactorOutcome.ACCEPTED_TOTP
    unused = db_session.scalars(select(RecoveryCode).where(RecoveryCode.used_at.is_(None))).all()
    assert len(unused) == 10
