"""The demo week: the three attacks leave the expected locks and traces."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from security.accounts.models import Account
from security.locks.models import Lock
from security.risk.demo import ACCOUNTS, Demo
from security.risk.models import Assessment, RiskEvent
from security.risk.views import current_ruleset
from security.runtime import runtime


def test_demo_week(app, clock, db_session):
    rt = runtime(app)
    with app.app_context():
        ruleset = current_ruleset()
    report = Demo(rt, ruleset, start=clock.now(), seed=7, session_factory=rt.session_factory,
                  daily_logins=(1, 1)).run()
    assert report.accounts == ACCOUNTS
    assert report.api_key.startswith("fg_")
    locks = db_session.scalars(select(Lock).order_by(Lock.created_at)).all()
    by_account = Counter((lk.account_id, lk.kind) for lk in locks)
    # 1. Brute force: three temporary locks that expired, then an indefinite one.
    assert by_account[("mia-00", "brute_force")] == 4
    mia = [lk for lk in locks if lk.account_id == "mia-00"]
    assert [lk.expires_at is None for lk in mia] == [False, False, False, True]
    # 2. Credential stuffing: throttled, and nobody it targeted is locked.
    assert report.throttled >= 1
    stuffed = set(db_session.scalars(select(RiskEvent.account_id).where(RiskEvent.ip == "185.220.101.47")))
    assert len(stuffed) == 20
    assert not stuffed & {lk.account_id for lk in locks}
    # 3. Takeover: a risk lock on noah, and the drain is blocked with the chain in its assessment.
    assert by_account[("noah-01", "risk")] == 1
    drain = db_session.scalar(select(RiskEvent).where(RiskEvent.amount == "4850.00"))
    assert drain.outcome == "block"
    chain = [r.rule_id for a in db_session.scalars(select(Assessment)) for r in a.results if r.outcome == "hit"]
    assert "tx.after_sensitive_change" in chain and "login.credential_stuffing" in chain
    # 4. An outlier payment abroad to a new payee: held for review, the payer restricted.
    assert report.decisions["transaction:review"] >= 1
    assert report.restricted is not None
    assert db_session.get(Account, report.restricted).status == "restricted"
    # Ordinary traffic dominates and is mostly allowed.
    assert report.decisions["login:allow"] > 200
    assert report.decisions["transaction:allow"] > 100
