"""The three attack stories end to end, and shadow rules through the API."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from security.locks.models import Lock
from security.risk.models import Assessment
from security.risk.rules import Rule
from security.risk.views import current_ruleset
from tests.risk.conftest import use_ruleset, webhooks

ATTACKER = {"ip": "45.155.205.99", "country": "RU", "asn": "204428", "lat": 55.75, "lon": 37.62,
            "device_id": "attacker-box", "user_agent": "python-requests/2.31.0"}


def test_brute_force_attack_on_one_account(flows, clock, db_session):
    """Many guesses at one account from rotating IPs: temporary lock, backoff, then indefinite."""
    flows.account("alice")
    flows.warm_up("alice", logins=3)
    for round_ in range(4):
        for n in range(5):
            flows.login("alice", password=f"guess-{round_}-{n}",
                        **{**ATTACKER, "ip": f"45.155.{round_}.{n}"})
        clock.advance(hours=1, seconds=1)
    locks = db_session.scalars(select(Lock).where(Lock.account_id == "alice").order_by(Lock.created_at)).all()
    assert [lk.kind for lk in locks] == ["brute_force"] * 4
    assert [lk.resolution for lk in locks] == ["expired", "expired", "expired", None]
    assert locks[-1].expires_at is None and locks[-1].required_actions == ["reset_password"]
    # The owner, with the right password from home, is kept out until an appeal succeeds.
    owner = flows.login("alice").get_json()
    assert owner["decision"] == "deny"
    assert owner["lock"]["reference"] == locks[-1].reference
    assert len(webhooks(db_session, "account.locked")) == 4
    assert len(webhooks(db_session, "account.unlocked")) == 3


def test_credential_stuffing_from_one_ip(flows, clock, db_session):
    """One IP tries a leaked password on many accounts: throttled with 429, nobody locked."""
    for n in range(30):
        flows.account(f"user-{n}")
    statuses = []
    for n in range(30):
        statuses.append(flows.login(f"user-{n}", password="Winter2025!", **ATTACKER).status_code)
        clock.advance(seconds=2)
    assert statuses[:20] == [200] * 20
    assert statuses[20:] == [429] * 10
    # Even the account whose password the attacker knows is not let in from that IP.
    hit = flows.login("user-25", **ATTACKER)
    assert hit.status_code == 429
    assert db_session.scalars(select(Lock)).all() == []
    # Failed attempts before the throttle were scored as stuffing.
    stuffing = [r for a in db_session.scalars(select(Assessment)) for r in a.results
                if r.rule_id == "login.credential_stuffing" and r.outcome == "hit"]
    assert len(stuffing) == 16  # from the 5th distinct account on


def test_account_takeover_chain(flows, clock, db_session):
    """Phished password: login from a new place, e-mail and MFA changes, then a drain to a new payee."""
    flows.account("bob")
    flows.warm_up("bob", logins=6, step=timedelta(days=2))
    for _ in range(8):
        flows.transaction("bob", amount="80.00", address="0xlandlord", country="DE")
        clock.advance(days=1)
    clock.advance(days=2)  # the last familiar login was days ago: travel is possible, the place is not
    login = flows.login("bob", **{**ATTACKER, "lat": None, "lon": None}).get_json()
    assert login["decision"] == "mfa_required"
    assert {"login.new_device", "login.new_country", "login.unfamiliar"} <= {r["rule"] for r in login["reasons"]}
    clock.advance(minutes=3)
    email = flows.change("email", "bob", **ATTACKER).get_json()
    assert email["decision"] == "review"  # new device + new country + ...
    clock.advance(minutes=2)
    mfa = flows.change("mfa_disabled", "bob", **ATTACKER).get_json()
    assert mfa["decision"] == "block"
    assert mfa["account"]["status"] == "locked"
    clock.advance(minutes=5)
    drain = flows.transaction("bob", amount="4800.00", address="0xattacker", country="RU",
                              balance_before="5000.00").get_json()
    assert drain["decision"] == "block"
    assert drain["reasons"][0]["rule"] == "account.locked"
    assert drain["lock"]["kind"] == "risk"
    blocked = webhooks(db_session, "transaction.blocked")
    assert blocked[-1]["amount"] == "4800.00"
    # The drain's own assessment explains the chain even though the lock already decided it.
    stored = db_session.get(Assessment, uuid.UUID(drain["assessment_id"]))
    hits = {r.rule_id for r in stored.results if r.outcome == "hit"}
    assert {"tx.after_sensitive_change", "tx.new_payee", "tx.amount_vs_p95", "tx.drains_balance"} <= hits


def test_shadow_rule_recorded_but_never_changes_the_decision(flows, app, db_session):
    with app.app_context():
        ruleset = current_ruleset()
    loud = Rule.model_validate({
        "id": "shadow.everything", "description": "Every transaction", "mode": "shadow", "points": 100,
        "applies_to": ["transaction"], "condition": {"feature": "amount", "op": "gt", "value": 0},
    })
    use_ruleset(app, ruleset.model_copy(update={"rules": [*ruleset.rules, loud]}))
    flows.account()
    body = flows.transaction(amount="10.00").get_json()
    # Only the enforced rule counts (a first payment always goes to a new payee).
    assert body["decision"] == "allow"
    assert body["risk"]["score"] == 10
    assert [r["rule"] for r in body["reasons"]] == ["tx.new_payee"]
    row = next(r for a in db_session.scalars(select(Assessment)) for r in a.results if r.rule_id == "shadow.everything")
    assert (row.outcome, row.points, row.mode) == ("shadow", 100, "shadow")
