"""The pure engine: each default rule at its boundary, errors, shadow mode, clamping, bands."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from security.risk.engine import RuleOutcome, clamp_score, evaluate
from security.risk.features import EventKind, Features, FeatureValue
from security.risk.rules import Decision, RuleMode
from tests.risk.helpers import QUIET, default_ruleset, features

RULESET = default_ruleset()
LOGIN, TX, CHANGE = EventKind.LOGIN, EventKind.TRANSACTION, EventKind.ACCOUNT_CHANGE

# (rule id, event kind, overrides that just hit, overrides that just miss)
BOUNDARIES: list[tuple[str, EventKind, dict[str, FeatureValue], dict[str, FeatureValue]]] = [
    ("login.failed_velocity.account", LOGIN, {"failed_logins_account_window": 3},
     {"failed_logins_account_window": 2}),
    ("login.failed_velocity.ip", LOGIN, {"failed_logins_ip_window": 10}, {"failed_logins_ip_window": 9}),
    ("login.credential_stuffing", LOGIN, {"distinct_accounts_ip_window": 5},
     {"distinct_accounts_ip_window": 4}),
    ("login.new_device", LOGIN, {"is_new_device": True, "successful_login_count": 1},
     {"is_new_device": True, "successful_login_count": 0}),
    ("login.new_country", LOGIN, {"is_new_country": True}, {"is_new_country": False}),
    ("login.impossible_travel", LOGIN, {"travel_speed_kmh": 900.01}, {"travel_speed_kmh": 900.0}),
    ("login.impossible_travel", TX, {"travel_speed_kmh": 5000.0}, {"travel_speed_kmh": None}),
    ("login.unfamiliar", LOGIN, {"familiarity_log10": 0.501}, {"familiarity_log10": 0.5}),
    ("login.unfamiliar", LOGIN, {"familiarity_log10": 1.0, "successful_login_count": 3},
     {"familiarity_log10": 1.0, "successful_login_count": 2}),
    ("any.ip_deny_listed", CHANGE, {"ip_deny_listed": True}, {"ip_deny_listed": False}),
    ("tx.amount_vs_p95", TX, {"amount_ratio_p95": Decimal("5.01")}, {"amount_ratio_p95": Decimal("5")}),
    ("tx.amount_vs_p95", TX, {"amount_ratio_p95": Decimal(9), "amount_history_count": 5},
     {"amount_ratio_p95": Decimal(9), "amount_history_count": 4}),
    ("tx.amount_robust_z", TX, {"amount_robust_z": Decimal("3.51")}, {"amount_robust_z": Decimal("3.5")}),
    ("tx.velocity_count_1h", TX, {"tx_count_1h": 6}, {"tx_count_1h": 5}),
    ("tx.velocity_count_24h", TX, {"tx_count_24h": 21}, {"tx_count_24h": 20}),
    ("tx.velocity_sum_24h", TX, {"tx_sum_24h": Decimal("10000.01")}, {"tx_sum_24h": Decimal("10000")}),
    ("tx.drains_balance", TX, {"balance_fraction": Decimal("0.9")}, {"balance_fraction": Decimal("0.89")}),
    ("tx.new_payee", TX, {"is_new_payee": True}, {"is_new_payee": False}),
    ("tx.outside_corridor", TX, {"destination_country": "NG"}, {"destination_country": "US"}),
    ("tx.outside_corridor", TX, {"destination_country": "FR", "home_country": "BR"},
     {"destination_country": "BR", "home_country": "BR"}),
    ("tx.after_sensitive_change", TX, {"hours_since_sensitive_change": 23.99},
     {"hours_since_sensitive_change": 24.0}),
    ("tx.new_account_large", TX, {"account_age_days": 6.99, "amount": Decimal("1000")},
     {"account_age_days": 7.0, "amount": Decimal("1000")}),
    ("tx.new_account_large", TX, {"account_age_days": 1.0, "amount": Decimal("1000")},
     {"account_age_days": 1.0, "amount": Decimal("999.99")}),
    ("tx.destination_deny_listed", TX, {"destination_deny_listed": True}, {"destination_deny_listed": False}),
    ("change.mfa_disabled", CHANGE, {"change": "mfa_disabled"}, {"change": "mfa_enabled"}),
    ("change.burst", CHANGE, {"changes_24h": 2}, {"changes_24h": 1}),
    ("change.from_new_device", CHANGE, {"is_new_device": True}, {"is_new_device": False}),
    ("change.from_new_country", CHANGE, {"is_new_country": True}, {"is_new_country": False}),
]


def outcome(rule_id: str, kind: EventKind, overrides: dict[str, FeatureValue]) -> RuleOutcome:
    assessment = evaluate(RULESET, kind, features(**overrides))
    (result,) = [r for r in assessment.results if r.rule_id == rule_id]
    return result.outcome


@pytest.mark.parametrize(("rule_id", "kind", "hit", "miss"), BOUNDARIES,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BOUNDARIES)])
def test_rule_boundary(rule_id: str, kind: EventKind, hit: dict[str, FeatureValue],
                       miss: dict[str, FeatureValue]) -> None:
    rule = next(r for r in RULESET.rules if r.id == rule_id)
    expected = RuleOutcome.HIT if rule.mode is RuleMode.ENFORCE else RuleOutcome.SHADOW
    assert outcome(rule_id, kind, hit) is expected
    assert outcome(rule_id, kind, miss) is RuleOutcome.NO_HIT


def test_every_enforced_default_rule_has_a_boundary_test() -> None:
    tested = {b[0] for b in BOUNDARIES}
    enforced = {r.id for r in RULESET.rules if r.mode is RuleMode.ENFORCE}
    assert enforced <= tested


@pytest.mark.parametrize("kind", list(EventKind))
def test_quiet_features_allow(kind: EventKind) -> None:
    assessment = evaluate(RULESET, kind, features())
    assert assessment.score == 0
    assert assessment.band == "low"
    assert assessment.decision is Decision.ALLOW
    assert assessment.reasons == ()
    assert assessment.actions == ()
    assert assessment.ruleset_version == RULESET.version
    # Every applicable rule is recorded, not just the hits.
    assert [r.rule_id for r in assessment.results] == [r.id for r in RULESET.rules_for(kind)]
    assert all(r.outcome is RuleOutcome.NO_HIT for r in assessment.results)


def test_scores_add_up_and_band_decides() -> None:
    # new device 15 + new country 20 = 35 -> medium -> mfa_required for a login.
    assessment = evaluate(RULESET, LOGIN, features(is_new_device=True, is_new_country=True))
    assert assessment.score == 35
    assert (assessment.band, assessment.decision) == ("medium", Decision.MFA_REQUIRED)
    assert [r.rule for r in assessment.reasons] == ["login.new_country", "login.new_device"]
    assert assessment.reasons[0].detail == (
        "First login from this country: is_new_country=yes; successful_login_count=20 (>= 1)"
    )


def test_score_is_clamped_and_critical_band_carries_actions() -> None:
    assessment = evaluate(RULESET, TX, features(destination_deny_listed=True, is_new_payee=True,
                                                 hours_since_sensitive_change=1.0))
    assert assessment.score == 100
    assert assessment.decision is Decision.BLOCK
    assert [(a.action, a.lock_kind) for a in assessment.actions] == [("lock", "risk")]


def test_high_transaction_restricts() -> None:
    assessment = evaluate(RULESET, TX, features(hours_since_sensitive_change=2.0, is_new_payee=True,
                                                 destination_country="NG"))
    assert assessment.score == 70
    assert assessment.decision is Decision.REVIEW
    assert [a.action for a in assessment.actions] == ["restrict"]


def test_clamp_score() -> None:
    assert clamp_score(-20) == 0
    assert clamp_score(250) == 100
    assert clamp_score(42) == 42


def test_missing_feature_is_an_error_scoring_zero() -> None:
    values = dict(QUIET)
    del values["failed_logins_ip_window"]
    assessment = evaluate(RULESET, LOGIN, Features({**values, "failed_logins_account_window": 9}))
    result = next(r for r in assessment.results if r.rule_id == "login.failed_velocity.ip")
    assert result.outcome is RuleOutcome.ERROR
    assert result.points == 0
    assert "'failed_logins_ip_window' was not computed" in result.detail
    # The other rules still ran and decided.
    assert assessment.score == 20


def test_failed_feature_is_an_error() -> None:
    assessment = evaluate(RULESET, LOGIN, Features(
        {k: v for k, v in QUIET.items() if k != "familiarity_log10"},
        errors={"familiarity_log10": "history query timed out"},
    ))
    results = {r.rule_id: r for r in assessment.results}
    assert results["login.unfamiliar"].outcome is RuleOutcome.ERROR
    assert "history query timed out" in results["login.unfamiliar"].detail


def test_wrong_type_is_an_error() -> None:
    assessment = evaluate(RULESET, LOGIN, features(is_new_device="yes"))
    result = next(r for r in assessment.results if r.rule_id == "login.new_device")
    assert result.outcome is RuleOutcome.ERROR
    assert "not a yes/no value" in result.detail


def test_none_means_no_data_not_error() -> None:
    assessment = evaluate(RULESET, TX, features(amount_ratio_p95=None))
    result = next(r for r in assessment.results if r.rule_id == "tx.amount_vs_p95")
    assert result.outcome is RuleOutcome.NO_HIT
    assert "amount_ratio_p95: no data" in result.detail


def test_shadow_rules_never_change_decision() -> None:
    # login.very_unfamiliar is a shadow rule in the default file.
    feats = features(familiarity_log10=2.5)
    assessment = evaluate(RULESET, LOGIN, feats)
    results = {r.rule_id: r for r in assessment.results}
    assert results["login.very_unfamiliar"].outcome is RuleOutcome.SHADOW
    assert results["login.very_unfamiliar"].points == 15  # recorded for analysis ...
    assert assessment.score == 25  # ... but only login.unfamiliar counts
    assert "login.very_unfamiliar" not in {r.rule for r in assessment.reasons}


def test_turning_every_rule_to_shadow_gives_zero() -> None:
    shadow = RULESET.model_copy(
        update={"rules": [r.model_copy(update={"mode": RuleMode.SHADOW}) for r in RULESET.rules]}
    )
    loud = features(failed_logins_account_window=9, distinct_accounts_ip_window=9, ip_deny_listed=True)
    assessment = evaluate(shadow, LOGIN, loud)
    assert assessment.score == 0
    assert assessment.decision is Decision.ALLOW
    assert assessment.reasons == ()
    assert {r.rule_id for r in assessment.results if r.outcome is RuleOutcome.SHADOW} == {
        "login.failed_velocity.account", "login.credential_stuffing", "any.ip_deny_listed"
    }


def test_shadow_rules_never_change_any_decision() -> None:
    """Random feature sets: the ruleset with its shadow rules decides exactly like the one without."""
    rng = random.Random(7)
    enforced_only = RULESET.model_copy(
        update={"rules": [r for r in RULESET.rules if r.mode is RuleMode.ENFORCE]}
    )
    louder_shadow = RULESET.model_copy(update={"rules": [
        *RULESET.rules,
        *(r.model_copy(update={"id": r.id + ".shadow", "mode": RuleMode.SHADOW, "points": 100})
          for r in RULESET.rules),
    ]})
    for _ in range(300):
        kind = rng.choice(list(EventKind))
        feats = features(
            failed_logins_account_window=rng.randint(0, 8), is_new_device=rng.random() < 0.5,
            is_new_country=rng.random() < 0.3, familiarity_log10=rng.uniform(-5, 4),
            travel_speed_kmh=rng.uniform(0, 2000), is_new_payee=rng.random() < 0.5,
            amount_ratio_p95=Decimal(str(round(rng.uniform(0, 10), 2))),
            hours_since_sensitive_change=rng.choice([None, rng.uniform(0, 48)]),
            destination_country=rng.choice(["FR", "NG", "US"]), changes_24h=rng.randint(0, 3),
        )
        base = evaluate(enforced_only, kind, feats)
        for candidate in (RULESET, louder_shadow):
            other = evaluate(candidate, kind, feats)
            assert (other.score, other.band, other.decision, other.reasons) == (
                base.score, base.band, base.decision, base.reasons)


def test_explanations_are_quoted_in_detail() -> None:
    feats = Features({**QUIET, "familiarity_log10": 1.2},
                     explanations={"familiarity_log10": "familiarity log10(S)=1.20 (ip x4, ua x4)"})
    assessment = evaluate(RULESET, LOGIN, feats)
    assert "[familiarity log10(S)=1.20 (ip x4, ua x4)]" in assessment.reasons[0].detail


def test_unknown_feature_name_in_features_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature names"):
        Features({"shoe_size": 44})
