"""Event ingestion: transactions, account changes, login events, idempotency, late events, deny list."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select

from security.accounts.models import Account
from security.locks.models import Lock
from security.risk.models import Assessment, RiskEvent
from tests.risk.conftest import webhooks


def history(flows, count=10, amount="40.00", address="0xfriend"):
    """A month of ordinary payments."""
    for n in range(count):
        flows.clock.advance(days=2)
        assert flows.transaction(amount=amount if n % 2 else "60.00", address=address).status_code == 200


def test_ordinary_transaction_allowed(flows, clock):
    flows.account()
    clock.advance(days=30)
    history(flows)
    body = flows.transaction(amount="45.00", address="0xfriend").get_json()
    assert body["decision"] == "allow"
    assert body["risk"] == {"score": 0, "band": "low"}
    assert body["event_id"].startswith("evt-")
    assert body["account"]["status"] == "active"


def test_idempotent_replay_and_conflict(flows, clock, db_session):
    flows.account()
    first = flows.transaction(event_id="tx-1", amount="10.00")
    clock.advance(minutes=5)
    again = flows.transaction(event_id="tx-1", amount="10.00", occurred_at=clock.now() - timedelta(minutes=5))
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == 1
    different = flows.transaction(event_id="tx-1", amount="11.00", occurred_at=clock.now() - timedelta(minutes=5))
    assert different.status_code == 409
    assert different.mimetype == "application/problem+json"
    assert "idempotency_conflict" in different.get_json()["type"]
    # The same id under another event type is a conflict too.
    assert flows.change("email", event_id="tx-1").status_code == 409


def test_event_ids_are_per_client(flows, db_session, clock, client):
    from tests.conftest import ApiClient, issue_key

    flows.account()
    flows.transaction(event_id="shared-1", amount="10.00")
    other = ApiClient(client, issue_key(db_session, clock, "other-backend", ["events:write"]))
    response = other.post("/v1/events/transaction", json={
        "event_id": "shared-1", "account_id": "acc-1", "amount": "99.00", "currency": "EUR",
        "destination": {"address": "0xabc", "country": "DE"}, "occurred_at": clock.now().isoformat()})
    assert response.status_code == 200
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == 2


def test_amounts_must_be_decimal_strings(flows):
    flows.account()
    for amount in (12.5, "12,50", "-3", "0", "1e5", "01.5"):
        response = flows.transaction(amount=amount)
        assert response.status_code == 422, amount
        assert response.get_json()["errors"][0]["field"] == "amount"
    assert flows.transaction(amount="0.000000000000000001").status_code == 200


def test_unknown_account_is_404(flows):
    assert flows.transaction("nobody").status_code == 404


def test_amount_outlier_new_payee_and_corridor(flows, clock):
    flows.account()
    clock.advance(days=30)
    history(flows)
    clock.advance(minutes=1)
    body = flows.transaction(amount="900.00", address="0xstranger", country="NG").get_json()
    rules = {r["rule"]: r for r in body["reasons"]}
    assert {"tx.amount_vs_p95", "tx.new_payee", "tx.outside_corridor", "tx.amount_robust_z"} <= set(rules)
    assert "95th percentile of 10 earlier amounts" in rules["tx.amount_vs_p95"]["detail"]
    assert "NG is outside the corridors of home DE (eea)" in rules["tx.outside_corridor"]["detail"]
    assert body["decision"] == "review"  # 30 + 15 + 10 + 25 = 80: high
    assert body["account"]["status"] == "restricted"


def test_restricted_account_holds_transactions(flows, clock, db_session):
    flows.account()
    clock.advance(days=30)
    history(flows)
    flows.transaction(amount="900.00", address="0xstranger", country="NG")
    assert webhooks(db_session, "account.restricted")[0]["account_id"] == "acc-1"
    held = flows.transaction(amount="40.00", address="0xfriend").get_json()
    assert held["decision"] == "review"
    assert held["reasons"][0]["rule"] == "account.restricted"
    # Logins are still allowed for a restricted account.
    assert flows.login().get_json()["decision"] == "allow"


def test_velocity_by_count(flows, clock):
    flows.account()
    clock.advance(days=30)
    for n in range(5):
        body = flows.transaction(amount="5.00", address="0xfriend").get_json()
        assert "tx.velocity_count_1h" not in {r["rule"] for r in body["reasons"]}, n
        clock.advance(minutes=5)
    sixth = flows.transaction(amount="5.00", address="0xfriend").get_json()
    assert "tx.velocity_count_1h" in {r["rule"] for r in sixth["reasons"]}


def test_new_account_sending_large_amount(flows, clock):
    flows.account()
    clock.advance(days=6, hours=23)
    young = flows.transaction(amount="1000.00", address="0xa").get_json()
    assert "tx.new_account_large" in {r["rule"] for r in young["reasons"]}
    clock.advance(hours=1)
    grown = flows.transaction(amount="1000.00", address="0xb").get_json()
    assert "tx.new_account_large" not in {r["rule"] for r in grown["reasons"]}


def test_deny_listed_destination_blocks_and_locks(flows, clock, db_session, api):
    flows.account()
    assert api.put("/v1/deny-list/address/0xBAD", json={"reason": "mixer"}).status_code == 201
    body = flows.transaction(amount="10.00", address="0xbad").get_json()
    assert body["decision"] == "block"
    assert body["risk"]["band"] == "critical"
    assert body["account"]["status"] == "locked"
    assert body["lock"]["kind"] == "risk"
    blocked = webhooks(db_session, "transaction.blocked")
    assert blocked[0]["event_id"] == body["event_id"]
    assert webhooks(db_session, "account.locked")[0]["reasons"][0]["rule"] == "tx.destination_deny_listed"
    # Everything afterwards is blocked with the case reference.
    after = flows.transaction(amount="1.00", address="0xfriend").get_json()
    assert after["decision"] == "block"
    assert body["lock"]["reference"] in after["reasons"][0]["detail"]


def test_deny_list_api(api, db_session):
    assert api.put("/v1/deny-list/ip/203.0.113.9", json={"reason": "botnet"}).status_code == 201
    assert api.put("/v1/deny-list/ip/203.0.113.9", json={"reason": "botnet C2"}).status_code == 200
    assert api.put("/v1/deny-list/ip/not-an-ip", json={"reason": "x"}).status_code == 422
    # The kind is part of the route (ip|address, an enum in /openapi.json): any other kind is no resource.
    assert api.put("/v1/deny-list/phone/123", json={"reason": "x"}).status_code == 404
    listed = api.get("/v1/deny-list?kind=ip").get_json()["entries"]
    assert [(e["value"], e["reason"]) for e in listed] == [("203.0.113.9", "botnet C2")]
    assert api.delete("/v1/deny-list/ip/203.0.113.9").status_code == 204
    assert api.delete("/v1/deny-list/ip/203.0.113.9").status_code == 404
    assert api.get("/v1/deny-list").get_json()["entries"] == []


def test_late_event_is_scored_against_its_own_past(flows, clock, db_session):
    flows.account()
    clock.advance(days=30)
    history(flows)  # ends ~20 days later
    # A transaction that happened 15 days ago arrives now: its history is only what came before it.
    late_at = clock.now() - timedelta(days=15)
    late = flows.transaction(amount="60.00", address="0xfriend", occurred_at=late_at).get_json()
    amount_rule = "tx.amount_vs_p95"
    assert amount_rule not in {r["rule"] for r in late["reasons"]}
    stored = db_session.scalar(select(RiskEvent).where(RiskEvent.event_id == late["event_id"]))
    assert stored.occurred_at == late_at
    assert stored.received_at == clock.now()
    # Only the two payments before it (days 32 and 34) count as its history.
    features = db_session.scalar(select(Assessment.features).where(Assessment.event_pk == stored.id))
    assert features["values"]["amount_history_count"] == 2
    assert features["values"]["is_new_payee"] is False


def test_takeover_chain_needs_recent_change(flows, clock):
    flows.account()
    flows.warm_up(logins=1)  # the change comes from the owner's usual device
    clock.advance(days=30)
    history(flows)
    assert flows.change("email").get_json()["decision"] == "allow"
    clock.advance(hours=23)
    soon = flows.transaction(amount="40.00", address="0xfriend").get_json()
    assert "tx.after_sensitive_change" in {r["rule"] for r in soon["reasons"]}
    assert "email changed 23.0 h before" in next(
        r["detail"] for r in soon["reasons"] if r["rule"] == "tx.after_sensitive_change")
    clock.advance(hours=1)
    later = flows.transaction(amount="40.00", address="0xfriend").get_json()
    assert "tx.after_sensitive_change" not in {r["rule"] for r in later["reasons"]}


def test_account_change_rules(flows, clock):
    flows.account()
    flows.warm_up(logins=3)
    phone = flows.change("phone").get_json()
    assert phone["decision"] == "allow", phone["reasons"]
    burst = flows.change("mfa_disabled", device_id="dev-new", ip="41.58.1.2", country="NG").get_json()
    rules = {r["rule"] for r in burst["reasons"]}
    assert rules == {"change.mfa_disabled", "change.burst", "change.from_new_device", "change.from_new_country"}
    assert burst["decision"] == "block"  # 30 + 30 + 25 + 20 = 105 -> 100
    assert burst["risk"]["score"] == 100


def test_login_event_failure_feeds_brute_force(flows, clock, db_session):
    flows.account()
    for n in range(5):
        response = flows.api.post("/v1/events/login", json={
            "event_id": f"sso-{n}", "account_id": "acc-1", "occurred_at": clock.now().isoformat(),
            "outcome": "failure", "method": "passkey", "context": {"ip": "10.0.0.1"}})
        assert response.status_code == 200
    assert response.get_json()["account"]["status"] == "locked"
    assert db_session.scalar(select(Lock.kind)) == "brute_force"


def test_login_event_success_builds_familiarity(flows, clock):
    flows.account()
    for n in range(3):
        body = flows.api.post("/v1/events/login", json={
            "event_id": f"sso-{n}", "account_id": "acc-1", "occurred_at": clock.now().isoformat(),
            "outcome": "success", "method": "sso", "context": {"ip": "84.150.20.10", "device_id": "d1",
                                                                 "country": "DE"}}).get_json()
        clock.advance(hours=1)
    assert body["decision"] == "allow"
    assert db_session_status(flows) == "active"


def db_session_status(flows):
    return flows.api.get("/v1/accounts/acc-1").get_json()["status"]


def test_guard_caps_automatic_locks(flows, clock, db_session, api, app):
    from security.risk.views import current_ruleset
    from tests.risk.conftest import use_ruleset

    with app.app_context():
        ruleset = current_ruleset()
    guard = ruleset.guard.model_copy(update={"min_locks": 2, "max_fraction_of_active": 0.01})
    use_ruleset(app, ruleset.model_copy(update={"guard": guard}))
    api.put("/v1/deny-list/address/0xbad", json={"reason": "mixer"})
    for n in range(4):
        flows.account(f"acc-{n}", password=False)
    decisions = [flows.transaction(f"acc-{n}", amount="10.00", address="0xbad").get_json() for n in range(4)]
    assert [d["decision"] for d in decisions] == ["block", "block", "review", "review"]
    assert [d["account"]["status"] for d in decisions] == ["locked", "locked", "active", "active"]
    assert decisions[2]["reasons"][0]["rule"] == "guard.auto_lock_cap"
    alerts = webhooks(db_session, "operator.alert")
    assert len(alerts) == 1  # once per window
    assert alerts[0]["cap"] == 2
    # Once the sliding window has passed, automatic locks go through again.
    clock.advance(hours=1, seconds=1)
    assert flows.transaction("acc-3", amount="10.00", address="0xbad").get_json()["decision"] == "block"
    assert db_session.get(Account, "acc-3").status == "locked"


def test_velocity_and_amount_history_are_exact(flows, clock, db_session):
    """The history read with the probe: windows by occurred_at, sums per currency in exact decimals,
    blocked payments not part of the normal amounts."""
    flows.account()
    clock.advance(days=30)
    now = clock.now()
    earlier = [("10.10", "EUR", timedelta(hours=30)), ("20.20", "EUR", timedelta(hours=23)),
               ("0.05", "EUR", timedelta(minutes=30)), ("1000", "USD", timedelta(minutes=20))]
    for amount, currency, ago in earlier:
        answer = flows.transaction(amount=amount, address="0xfriend", currency=currency, occurred_at=now - ago)
        assert answer.get_json()["decision"] != "block", answer.get_json()
    body = flows.transaction(amount="1.00", address="0xfriend").get_json()
    features = db_session.scalar(select(Assessment.features).where(
        Assessment.id == uuid.UUID(body["assessment_id"])))["values"]
    assert features["tx_count_1h"] == 3  # 0.05 EUR, 1000 USD and this one
    assert Decimal(features["tx_sum_1h"]) == Decimal("1.05")  # other currencies are not summed
    assert features["tx_count_24h"] == 4
    assert Decimal(features["tx_sum_24h"]) == Decimal("21.25")
    assert features["amount_history_count"] == 3  # the EUR payments of the last year
    assert features["is_new_payee"] is False


def test_event_and_assessment_ids_are_time_ordered(flows, db_session):
    """UUIDv7 keys: each new event and assessment lands at the end of its indexes, not on a random page."""
    flows.account()
    answers = [flows.transaction(amount="10.00").get_json() for _ in range(3)]
    assessment_ids = [uuid.UUID(a["assessment_id"]) for a in answers]
    event_pks = [db_session.scalar(select(RiskEvent.id).where(RiskEvent.event_id == a["event_id"]))
                 for a in answers]
    for ids in (assessment_ids, event_pks):
        assert [i.version for i in ids] == [7, 7, 7]
        assert ids == sorted(ids)  # UUIDs compare by value: time first


def test_transaction_reusing_another_kinds_event_id_is_409_and_writes_nothing(flows, api, clock, db_session):
    from tests.risk.conftest import BERLIN

    flows.account()
    login = api.post("/v1/events/login", json={"event_id": "e-1", "account_id": "acc-1", "outcome": "success",
                                               "occurred_at": clock.now().isoformat(), "context": dict(BERLIN)})
    assert login.status_code == 200
    stored = db_session.scalar(select(func.count()).select_from(RiskEvent))
    response = flows.transaction(event_id="e-1")
    assert response.status_code == 409
    assert response.get_json()["code"] == "idempotency_conflict"
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == stored
