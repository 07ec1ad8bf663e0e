"""The features the rules may reference.

The database layer (``security.risk.feature_store``) fills a :class:`Features` mapping from the
account's history; the pure engine only reads it. ``FEATURE_TYPES`` is the single list of names a
rule file may use: ``rules check`` rejects any other name.

A feature value of ``None`` means "not available" (e.g. no geo-located previous login): a rule on
it does not hit. A feature that *failed* to compute is listed in ``Features.errors`` and every rule
reading it is recorded as an error scoring 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final


class EventKind(StrEnum):
    """What is being assessed."""

    LOGIN = "login"
    TRANSACTION = "transaction"
    ACCOUNT_CHANGE = "account_change"


class FeatureType(StrEnum):
    """Value types a feature may have; they decide which operators a rule may apply."""

    NUMBER = "number"
    BOOLEAN = "boolean"
    TEXT = "text"


FeatureValue = int | float | Decimal | bool | str | None

#: Every feature name a rule may reference, with its type.
FEATURE_TYPES: Final[Mapping[str, FeatureType]] = {
    # Login velocity (brute force, credential stuffing): counts in the brute-force windows.
    "failed_logins_account_window": FeatureType.NUMBER,
    "failed_logins_ip_window": FeatureType.NUMBER,
    "distinct_accounts_ip_window": FeatureType.NUMBER,
    # Device and place.
    "is_new_device": FeatureType.BOOLEAN,
    "is_new_country": FeatureType.BOOLEAN,
    "travel_speed_kmh": FeatureType.NUMBER,
    "travel_distance_km": FeatureType.NUMBER,
    # Freeman et al. familiarity: log10 of the score S (high = unfamiliar).
    "familiarity_log10": FeatureType.NUMBER,
    "successful_login_count": FeatureType.NUMBER,
    # Deny lists.
    "ip_deny_listed": FeatureType.BOOLEAN,
    "destination_deny_listed": FeatureType.BOOLEAN,
    # Account.
    "account_age_days": FeatureType.NUMBER,
    "home_country": FeatureType.TEXT,
    "country": FeatureType.TEXT,
    "hours_since_sensitive_change": FeatureType.NUMBER,
    # Transaction amount and history (amounts are Decimals in the event's currency).
    "amount": FeatureType.NUMBER,
    "amount_history_count": FeatureType.NUMBER,
    "amount_p95": FeatureType.NUMBER,
    "amount_ratio_p95": FeatureType.NUMBER,
    "amount_robust_z": FeatureType.NUMBER,
    "balance_fraction": FeatureType.NUMBER,
    "tx_count_1h": FeatureType.NUMBER,
    "tx_count_24h": FeatureType.NUMBER,
    "tx_sum_1h": FeatureType.NUMBER,
    "tx_sum_24h": FeatureType.NUMBER,
    "is_new_payee": FeatureType.BOOLEAN,
    "destination_country": FeatureType.TEXT,
    # Account change.
    "change": FeatureType.TEXT,
    "changes_24h": FeatureType.NUMBER,
}

FEATURE_NAMES: Final[frozenset[str]] = frozenset(FEATURE_TYPES)


@dataclass(frozen=True)
class Features:
    """Feature values for one event, plus per-feature computation errors and explanations.

    ``explanations`` holds human-readable context a rule detail may quote (e.g. the parts of the
    familiarity score, or "Berlin -> Lagos, 4,800 km in 20 min").
    """

    values: Mapping[str, FeatureValue]
    errors: Mapping[str, str] = field(default_factory=dict)
    explanations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (set(self.values) | set(self.errors)) - FEATURE_NAMES
        if unknown:
            raise ValueError(f"unknown feature names: {sorted(unknown)}")
