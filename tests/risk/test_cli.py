"""CLI: rules check, rules backtest, denylist, locks expire."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from security.locks.models import Lock
from security.risk.models import DenyListEntry
from tests.risk.helpers import DEFAULT_RULES


def test_rules_check_ok(app):
    result = app.test_cli_runner().invoke(args=["rules", "check", "--rules", str(DEFAULT_RULES)])
    assert result.exit_code == 0, result.output
    assert "OK, version" in result.output
    assert "bands low, medium, high, critical" in result.output


def test_rules_check_reports_every_problem(app, tmp_path):
    bad = tmp_path / "bad.toml"
    text = DEFAULT_RULES.read_text()
    text = text.replace('feature = "is_new_payee"', 'feature = "is_new_payeee"')
    text = text.replace("min = 60", "min = 55")
    bad.write_text(text)
    result = app.test_cli_runner().invoke(args=["rules", "check", "--rules", str(bad)])
    assert result.exit_code == 1
    assert "INVALID" in result.output
    assert "rules.[id=tx.new_payee].condition: unknown feature 'is_new_payeee'" in result.output
    assert "band 'high' starts at 55, expected 60 (overlaps the previous band)" in result.output


def test_rules_check_missing_file(app, tmp_path):
    result = app.test_cli_runner().invoke(args=["rules", "check", "--rules", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_backtest_lists_changed_decisions(app, flows, clock, tmp_path):
    flows.account()
    flows.warm_up(logins=2)
    flows.login(device_id="dev-new", ip="41.58.1.2", country="NG", lat=None, lon=None)  # medium: mfa
    flows.transaction(amount="10.00")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(DEFAULT_RULES.read_text().replace(
        'decisions = { login = "mfa_required", transaction = "allow", account_change = "review" }',
        'decisions = { login = "allow", transaction = "allow", account_change = "review" }'))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["rules", "backtest", "--rules", str(candidate)])
    assert result.exit_code == 0, result.output
    assert "4 assessments replayed, 1 decisions would change" in result.output
    assert "login           mfa_required -> allow             1" in result.output
    assert "acc-1" in result.output
    # --since filters by when events occurred.
    later = runner.invoke(args=["rules", "backtest", "--rules", str(candidate),
                                "--since", (clock.now() + timedelta(days=1)).isoformat()])
    assert "0 assessments replayed, 0 decisions would change" in later.output
    same = runner.invoke(args=["rules", "backtest", "--rules", str(DEFAULT_RULES)])
    assert "0 decisions would change" in same.output
    assert runner.invoke(args=["rules", "backtest", "--rules", str(candidate), "--since", "yesterday"]).exit_code == 2


def test_denylist_cli(app, db_session):
    runner = app.test_cli_runner()
    added = runner.invoke(args=["denylist", "add", "ip", "203.0.113.5", "--reason", "scanner"])
    assert added.exit_code == 0 and "added ip 203.0.113.5" in added.output
    assert runner.invoke(args=["denylist", "add", "address", "0xAbC", "--reason", "mixer"]).exit_code == 0
    listing = runner.invoke(args=["denylist", "list"]).output
    assert "203.0.113.5" in listing and "0xabc" in listing
    assert runner.invoke(args=["denylist", "add", "ip", "nope", "--reason", "x"]).exit_code == 1
    assert runner.invoke(args=["denylist", "remove", "address", "0xABC"]).exit_code == 0
    assert runner.invoke(args=["denylist", "remove", "address", "0xABC"]).exit_code == 1
    assert db_session.scalars(select(DenyListEntry.value)).all() == ["203.0.113.5"]


def test_locks_expire_cli(app, flows, clock, db_session):
    flows.account()
    for _ in range(5):
        flows.login(password="wrong-wrong-1")
    runner = app.test_cli_runner()
    assert "released 0 expired lock(s)" in runner.invoke(args=["locks", "expire"]).output
    clock.advance(minutes=1)
    assert "released 1 expired lock(s)" in runner.invoke(args=["locks", "expire"]).output
    assert db_session.scalar(select(Lock.resolution)) == "expired"
