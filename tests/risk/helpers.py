"""Shared builders for risk tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from security.risk.features import Features, FeatureValue
from security.risk.rules import RuleSet, load_ruleset

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.toml"

#: Feature values under which no default rule hits.
QUIET: dict[str, FeatureValue] = {
    "failed_logins_account_window": 0,
    "failed_logins_ip_window": 0,
    "distinct_accounts_ip_window": 0,
    "is_new_device": False,
    "is_new_country": False,
    "travel_speed_kmh": 0.0,
    "travel_distance_km": 0.0,
    "familiarity_log10": -6.0,
    "successful_login_count": 20,
    "ip_deny_listed": False,
    "destination_deny_listed": False,
    "account_age_days": 400.0,
    "home_country": "DE",
    "country": "DE",
    "hours_since_sensitive_change": None,
    "amount": Decimal("50"),
    "amount_history_count": 30,
    "amount_p95": Decimal("100"),
    "amount_ratio_p95": Decimal("0.5"),
    "amount_robust_z": Decimal("0.1"),
    "balance_fraction": Decimal("0.05"),
    "tx_count_1h": 1,
    "tx_count_24h": 1,
    "tx_sum_1h": Decimal("50"),
    "tx_sum_24h": Decimal("50"),
    "is_new_payee": False,
    "destination_country": "FR",
    "change": "email",
    "changes_24h": 0,
}


def default_ruleset() -> RuleSet:
    return load_ruleset(DEFAULT_RULES)


def features(**overrides: FeatureValue) -> Features:
    return Features({**QUIET, **overrides})
