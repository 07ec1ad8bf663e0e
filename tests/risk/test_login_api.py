"""POST /v1/logins: credentials, scoring, brute force, IP throttling, locked accounts."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from security.accounts.models import Account
from security.locks.models import Lock, LoginFailureCounter
from security.risk.models import Assessment, RiskEvent
from tests.risk.conftest import BERLIN, PASSWORD, webhooks


def test_familiar_login_is_allowed_and_explained(flows, db_session):
    flows.account()
    first = flows.login()
    assert first.status_code == 200
    body = first.get_json()
    assert body["decision"] == "allow"
    assert body["account"] == {"status": "active"}
    assert body["risk"] == {"score": 0, "band": "low"}
    assert body["lock"] is None
    # Every applicable rule was stored for the assessment, with the ruleset version.
    assessment = db_session.get(Assessment, uuid.UUID(body["assessment_id"]))
    rules = [r.rule_id for r in assessment.results]
    assert "login.impossible_travel" in rules and "login.unfamiliar" in rules
    assert len(assessment.ruleset_version) == 16


def test_wrong_password_denied_and_counted(flows, db_session):
    flows.account()
    response = flows.login(password="wrong-password-1")
    body = response.get_json()
    assert body["decision"] == "deny"
    assert body["reasons"][0]["rule"] == "login.invalid_credentials"
    counter = db_session.get(LoginFailureCounter, "acc-1")
    assert counter.failures == 1
    event = db_session.scalar(select(RiskEvent).where(RiskEvent.account_id == "acc-1"))
    assert event.outcome == "failure"
    assert "password" not in event.payload


def test_unknown_account_answers_like_a_wrong_password(flows, clock):
    flows.account()
    for attempt in range(4):  # also once the velocity rules start to fire (3rd attempt on)
        known = flows.api.post("/v1/logins", json={"account_id": "acc-1", "password": "wrong-password-1",
                                                   "context": {"ip": f"198.51.100.{attempt}"}}).get_json()
        unknown = flows.api.post("/v1/logins", json={"account_id": "ghost", "password": "wrong-password-1",
                                                     "context": {"ip": f"203.0.113.{attempt}"}}).get_json()
        for body in (known, unknown):
            del body["assessment_id"]
        assert unknown == known, attempt
        clock.advance(seconds=10)
    assert "login.failed_velocity.account" in {r["rule"] for r in known["reasons"]}


def test_brute_force_locks_after_five_failures_then_expires(flows, clock, db_session):
    flows.account()
    for _ in range(4):
        assert flows.login(password="nope-nope-1").get_json()["account"]["status"] == "active"
        clock.advance(seconds=5)
    fifth = flows.login(password="nope-nope-1").get_json()
    assert fifth["account"]["status"] == "locked"
    assert fifth["lock"]["kind"] == "brute_force"
    assert fifth["lock"]["reference"].startswith("FG-")
    assert [r["rule"] for r in fifth["reasons"][:2]] == ["login.invalid_credentials", "bruteforce.account_locked"]
    locked = webhooks(db_session, "account.locked")
    assert len(locked) == 1 and locked[0]["kind"] == "brute_force"

    # While locked the right password is denied too, with the same answer as a wrong one.
    right = flows.login().get_json()
    wrong = flows.login(password="nope-nope-1").get_json()
    assert right.pop("assessment_id") != wrong.pop("assessment_id")
    assert right == wrong  # byte for byte apart from the assessment id
    assert right["decision"] == "deny"
    assert right["reasons"][0]["rule"] == "account.locked"
    # Attempts against a locked account do not extend the lock.
    assert db_session.scalar(select(func.count()).select_from(Lock)) == 1

    # One minute later the temporary lock expires by itself.
    clock.advance(seconds=61)
    after = flows.login().get_json()
    assert after["decision"] == "allow"
    assert after["account"]["status"] == "active"
    assert webhooks(db_session, "account.unlocked")[0]["resolution"] == "expired"
    lock = db_session.scalar(select(Lock))
    assert (lock.status, lock.resolution) == ("released", "expired")


def test_backoff_doubles_and_becomes_indefinite(flows, clock, db_session):
    flows.account()
    durations = []
    for _ in range(4):
        for _ in range(5):
            body = flows.login(password="nope-nope-1").get_json()
        durations.append(body["lock"]["expires_at"])
        lock = db_session.scalar(select(Lock).where(Lock.status == "active"))
        if lock.expires_at is not None:
            durations[-1] = (lock.expires_at - clock.now()).total_seconds()
        clock.advance(hours=1, seconds=1)
    assert durations == [60, 120, 240, None]
    lock = db_session.scalar(select(Lock).where(Lock.status == "active"))
    assert lock.required_actions == ["reset_password"]
    # Indefinite: still locked a day later.
    clock.advance(days=1)
    assert flows.login().get_json()["account"]["status"] == "locked"


def test_success_resets_failure_count(flows, clock, db_session):
    flows.account()
    for _ in range(4):
        flows.login(password="nope-nope-1")
    assert flows.login().get_json()["decision"] in ("allow", "mfa_required")
    # A success with 4 recent failures is itself suspicious and scored so.
    flows.login(password="nope-nope-1")
    assert db_session.get(Account, "acc-1").status == "active"


def test_ip_throttle_429_never_locks_victims(flows, clock, db_session):
    attacker = {"ip": "203.0.113.66", "country": "RU", "device_id": "bot", "lat": None, "lon": None}
    for n in range(20):
        flows.account(f"victim-{n}")
    for n in range(20):
        response = flows.login(f"victim-{n}", password="Password123!", **attacker)
        assert response.status_code == 200
        clock.advance(seconds=3)
    throttled = flows.login("victim-0", password=PASSWORD, **attacker)
    assert throttled.status_code == 429
    assert throttled.mimetype == "application/problem+json"
    assert throttled.get_json()["type"].endswith("ip_throttled")
    retry_after = int(throttled.headers["Retry-After"])
    # The oldest of the 20 failures was 60 s ago: 540 s left in the 600 s window.
    assert retry_after == 540
    # No victim was locked, and the real owner from home is unaffected.
    assert db_session.scalar(select(func.count()).select_from(Lock)) == 0
    assert flows.login("victim-0").get_json()["decision"] == "allow"
    clock.advance(seconds=retry_after)
    assert flows.login("victim-1", password="Password123!", **attacker).status_code == 200


def test_credential_stuffing_is_scored(flows, clock):
    for n in range(6):
        flows.account(f"user-{n}")
    stuffing = {"ip": "198.51.100.7", "country": "NL", "device_id": "x"}
    for n in range(5):
        flows.login(f"user-{n}", password="Summer2024!", **stuffing)
    body = flows.login("user-5", password="Summer2024!", **stuffing).get_json()
    rules = {r["rule"] for r in body["reasons"]}
    assert "login.credential_stuffing" in rules
    # A correct password from that IP right after is not allowed through quietly.
    hit = flows.login("user-5", **stuffing).get_json()
    assert hit["decision"] in ("mfa_required", "deny")
    assert "login.credential_stuffing" in {r["rule"] for r in hit["reasons"]}


def test_new_device_and_country_need_mfa_and_announce(flows, clock, db_session):
    flows.account()
    flows.warm_up(step=timedelta(hours=1))  # the last familiar login was an hour ago, in Berlin
    body = flows.login(ip="41.58.1.2", country="NG", lat=6.52, lon=3.38, device_id="dev-new",
                       asn="29465").get_json()
    rules = {r["rule"] for r in body["reasons"]}
    assert {"login.new_device", "login.new_country", "login.impossible_travel", "login.unfamiliar"} <= rules
    # 15 + 20 + 35 + 25 = 95: critical -> deny, and the account is locked for review (kind risk).
    assert (body["risk"], body["decision"]) == ({"score": 95, "band": "critical"}, "deny")
    assert body["account"]["status"] == "locked"
    assert body["lock"]["kind"] == "risk"
    assert webhooks(db_session, "login.new_device") == []


def test_new_device_on_familiar_network_is_allowed_and_announced(flows, clock, db_session):
    flows.account()
    flows.warm_up()
    ok = flows.login(device_id="dev-phone").get_json()
    assert ok["decision"] == "allow", ok["reasons"][0]["detail"]
    assert webhooks(db_session, "login.new_device")[0]["device_id"] == "dev-phone"


def test_familiarity_reason_shows_its_parts(flows, clock):
    flows.account()
    flows.warm_up(logins=4)
    body = flows.login(ip="185.220.101.4", asn="4224", country="DE", user_agent="python-requests/2.31",
                       lat=None, lon=None).get_json()
    reason = next(r for r in body["reasons"] if r["rule"] == "login.unfamiliar")
    assert "familiarity log10(S)=" in reason["detail"] and "ip x" in reason["detail"]


def test_login_validation_errors(api):
    assert api.post("/v1/logins", json={"account_id": "a"}).status_code == 422
    bad_ip = api.post("/v1/logins", json={"account_id": "a", "password": "x", "context": {"ip": "999.1.1.1"}})
    assert bad_ip.status_code == 422
    assert bad_ip.get_json()["errors"][0]["field"] == "context.ip"
    half_geo = api.post("/v1/logins", json={"account_id": "a", "password": "x", "context": {"lat": 1.0}})
    assert half_geo.status_code == 422
    future = api.post("/v1/logins", json={"account_id": "a", "password": "x",
                                          "context": {"occurred_at": "2030-01-01T00:00:00Z"}})
    assert future.status_code == 422


def test_login_needs_scope_and_key(client, db_session, clock):
    from tests.conftest import ApiClient, issue_key

    assert client.post("/v1/logins", json={"account_id": "a", "password": "x"}).status_code == 401
    weak = ApiClient(client, issue_key(db_session, clock, "reader", ["accounts:read"]))
    assert weak.post("/v1/logins", json={"account_id": "a", "password": "x"}).status_code == 403


def test_context_is_optional(flows):
    flows.account()
    response = flows.api.post("/v1/logins", json={"account_id": "acc-1", "password": PASSWORD})
    assert response.status_code == 200
    assert response.get_json()["decision"] == "allow"
    assert BERLIN["country"] == "DE"


def test_familiarity_counters_are_sharded_by_account(flows, db_session):
    from security.risk.feature_store import GLOBAL_SHARDS, global_shard
    from security.risk.models import FamiliarityCount

    flows.account("acc-1")
    flows.account("acc-2")
    flows.login("acc-1")
    flows.login("acc-2")
    scopes = set(db_session.scalars(select(FamiliarityCount.scope)))
    assert scopes == {"acc-1", "acc-2", global_shard("acc-1"), global_shard("acc-2")}
    assert len({global_shard(f"a{n}") for n in range(200)}) == GLOBAL_SHARDS
    # Each shard counts its own users; together they count everyone.
    users = db_session.scalars(select(FamiliarityCount.children).where(
        FamiliarityCount.level == "user", FamiliarityCount.value == "")).all()
    assert sum(users) == 2


def test_password_work_runs_outside_the_write_transaction_on_sqlite(flows, db_session, monkeypatch):
    """On SQLite a transaction holds the database's write lock: argon2 inside it would stop every other
    request for its duration. The login check reads first, ends that transaction, then hashes."""
    from flask import g

    from security.accounts.services import AccountService
    from security.db import is_sqlite

    flows.account()
    seen: list[bool] = []
    original = AccountService.check_password_hash

    def spy(self, stored_hash, password):
        seen.append(g.db_session.in_transaction())
        return original(self, stored_hash, password)

    monkeypatch.setattr(AccountService, "check_password_hash", spy)
    assert flows.login().get_json()["decision"] == "allow"
    assert flows.login(password="wrong-password-1").get_json()["decision"] == "deny"
    assert flows.login(account_id="ghost").get_json()["decision"] == "deny"
    # One password check per login, none repeated inside the transaction; PostgreSQL's reads hold nothing
    # others wait for, so its transaction simply goes on.
    assert seen == [not is_sqlite(db_session)] * 3


def test_password_changed_while_hashing_is_checked_again(flows, monkeypatch):
    """The password is verified before the account row is locked; if it changed in between, the check is
    made again against the new hash under the lock (the old password must not pass)."""
    from flask import g

    from security.risk.services import RiskService

    flows.account()
    original = RiskService.verify_password

    def change_meanwhile(self, stored, password):
        checked = original(self, stored, password)
        # What a concurrent password change leaves behind: another hash (here one no password matches).
        g.db_session.execute(update(Account).where(Account.id == "acc-1").values(
            password_hash=Account.password_hash + "x"))
        return checked

    monkeypatch.setattr(RiskService, "verify_password", change_meanwhile)
    body = flows.login().get_json()
    assert body["decision"] == "deny"
    assert body["reasons"][0]["rule"] == "login.invalid_credentials"
