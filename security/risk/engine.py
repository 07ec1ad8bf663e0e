"""The pure risk engine: rules over features -> an explainable :class:`Assessment`.

No Flask, no SQLAlchemy, no clock. Every rule that applies to the event kind produces exactly one
:class:`RuleResult` (hit, no_hit, error or shadow) so the stored assessment explains itself:
an erroring rule scores 0 and never breaks the assessment; shadow rules are evaluated and recorded
but never count.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from security.risk.features import EventKind, Features, FeatureValue
from security.risk.rules import (
    SCORE_MAX,
    SCORE_MIN,
    Action,
    AllOf,
    Comparison,
    Condition,
    Decision,
    Op,
    Rule,
    RuleMode,
    RuleSet,
)

#: Symbols used in human-readable details.
OP_SYMBOLS: Final = {
    Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<=", Op.EQ: "=", Op.NE: "!=",
    Op.IN: "in", Op.NOT_IN: "not in",
}
#: Decimal places shown for non-integer numbers in details.
DETAIL_DECIMALS: Final = 2
#: The numeric comparisons.
COMPARE: Final[dict[Op, Callable[[Decimal, Decimal], bool]]] = {
    Op.GT: operator.gt, Op.GTE: operator.ge, Op.LT: operator.lt, Op.LTE: operator.le,
    Op.EQ: operator.eq, Op.NE: operator.ne,
}


class RuleOutcome(StrEnum):
    """What happened to one rule in one assessment."""

    HIT = "hit"
    NO_HIT = "no_hit"
    ERROR = "error"
    SHADOW = "shadow"  # a shadow-mode rule whose condition held; never counts


class RuleEvaluationError(Exception):
    """A rule could not be evaluated (missing or failed feature, wrong value type)."""


@dataclass(frozen=True)
class RuleResult:
    """One rule's contribution to one assessment."""

    rule_id: str
    outcome: RuleOutcome
    points: int
    detail: str
    mode: RuleMode


@dataclass(frozen=True)
class Reason:
    """A reason shown with a decision: the rule, the points it added and why."""

    rule: str
    points: int
    detail: str


@dataclass(frozen=True)
class Assessment:
    """The engine's verdict for one event."""

    kind: EventKind
    score: int
    band: str
    decision: Decision
    results: tuple[RuleResult, ...]
    reasons: tuple[Reason, ...]
    actions: tuple[Action, ...]
    ruleset_version: str


def _format(value: FeatureValue | list[str]) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | Decimal) and value == int(value):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{DETAIL_DECIMALS}f}"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return str(value)


def _number(value: object, feature: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise RuleEvaluationError(f"feature {feature!r} is not a number: {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:  # NaN/inf are not comparable amounts
        raise RuleEvaluationError(f"feature {feature!r} is not a finite number") from exc


@functools.lru_cache(maxsize=1024, typed=True)
def _threshold(value: int | float) -> tuple[Decimal, str]:
    """A rule's numeric threshold as a Decimal and as shown in details (a rule file has few of them, and
    every event compares against them)."""
    return _number(value, "threshold"), _format(value)


class _Evaluator:
    """Evaluates one condition tree, collecting the observations that explain it."""

    def __init__(self, ruleset: RuleSet, features: Features) -> None:
        self._ruleset = ruleset
        self._features = features
        self.observations: list[str] = []

    def value(self, name: str) -> FeatureValue:
        if name in self._features.errors:
            raise RuleEvaluationError(f"feature {name!r} failed: {self._features.errors[name]}")
        if name not in self._features.values:
            raise RuleEvaluationError(f"feature {name!r} was not computed")
        return self._features.values[name]

    def holds(self, condition: Condition) -> bool:
        if isinstance(condition, Comparison):
            return self._compare(condition)
        if isinstance(condition, AllOf):
            # Evaluate every part (no short-circuit) so errors always surface and details are complete.
            return all([self.holds(part) for part in condition.all])
        return any([self.holds(part) for part in condition.any])

    def _compare(self, cmp: Comparison) -> bool:
        value = self.value(cmp.feature)
        if value is None:
            self.observations.append(f"{cmp.feature}: no data")
            return False
        op = cmp.op
        if op in (Op.IS_TRUE, Op.IS_FALSE):
            if not isinstance(value, bool):
                raise RuleEvaluationError(f"feature {cmp.feature!r} is not a yes/no value: {value!r}")
            self.observations.append(f"{cmp.feature}={_format(value)}")
            return value if op is Op.IS_TRUE else not value
        if op is Op.OUTSIDE_CORRIDOR:
            return self._outside_corridor(cmp.feature, value)
        if op in (Op.IN, Op.NOT_IN):
            assert isinstance(cmp.value, list)  # noqa: S101 - guaranteed by rule validation
            result = str(value) in cmp.value
            self.observations.append(f"{cmp.feature}={_format(value)} ({OP_SYMBOLS[op]} "
                                     f"{_format(cmp.value)})")
            return result if op is Op.IN else not result
        if isinstance(cmp.value, str):
            if not isinstance(value, str):
                raise RuleEvaluationError(f"feature {cmp.feature!r} is not text: {value!r}")
            self.observations.append(f"{cmp.feature}={value} ({OP_SYMBOLS[op]} {cmp.value})")
            return value == cmp.value if op is Op.EQ else value != cmp.value
        observed = _number(value, cmp.feature)
        if isinstance(cmp.value, int | float):
            threshold, shown = _threshold(cmp.value)
        else:  # not a validated rule's numeric comparison: _number says why
            threshold, shown = _number(cmp.value, "threshold"), _format(cmp.value)
        self.observations.append(f"{cmp.feature}={_format(value)} ({OP_SYMBOLS[op]} {shown})")
        return COMPARE[op](observed, threshold)

    def _outside_corridor(self, feature: str, value: FeatureValue) -> bool:
        home = self.value("home_country")
        if not isinstance(value, str) or not isinstance(home, str):
            raise RuleEvaluationError("corridor check needs text country codes for "
                                      f"{feature!r} and 'home_country'")
        allowed = self._ruleset.corridors.allowed_destinations(home)
        region = self._ruleset.corridors.region_of(home)
        outside = value not in allowed
        where = "outside" if outside else "inside"
        self.observations.append(f"{feature}={value} is {where} the corridors of home {home} ({region})")
        return outside


def evaluate_rule(ruleset: RuleSet, rule: Rule, features: Features) -> RuleResult:
    """Evaluate one rule; any failure becomes an ``error`` result scoring 0."""
    evaluator = _Evaluator(ruleset, features)
    try:
        held = evaluator.holds(rule.condition)
    except (RuleEvaluationError, ArithmeticError, TypeError, ValueError, KeyError) as exc:
        return RuleResult(rule.id, RuleOutcome.ERROR, 0, f"error: {exc}", rule.mode)
    observed = "; ".join(evaluator.observations)
    extra = [features.explanations[name] for name in rule.features if name in features.explanations]
    if held:
        detail = f"{rule.description}: {observed}"
        if extra:
            detail += " [" + "; ".join(extra) + "]"
        if rule.mode is RuleMode.SHADOW:
            return RuleResult(rule.id, RuleOutcome.SHADOW, rule.points, f"shadow: {detail}", rule.mode)
        return RuleResult(rule.id, RuleOutcome.HIT, rule.points, detail, rule.mode)
    return RuleResult(rule.id, RuleOutcome.NO_HIT, 0, f"not met: {observed}", rule.mode)


def clamp_score(total: int) -> int:
    """Clamp a points total to the 0-100 score range."""
    return max(SCORE_MIN, min(SCORE_MAX, total))


def evaluate(ruleset: RuleSet, kind: EventKind, features: Features) -> Assessment:
    """Score one event: evaluate every rule for ``kind``, sum enforced hits, band and decide."""
    results = tuple(evaluate_rule(ruleset, rule, features) for rule in ruleset.rules_for(kind))
    hits = [r for r in results if r.outcome is RuleOutcome.HIT]
    score = clamp_score(sum(r.points for r in hits))
    band = ruleset.band_for(score)
    # Highest contributions first: the first reason is the main one.
    reasons = tuple(
        Reason(r.rule_id, r.points, r.detail) for r in sorted(hits, key=lambda r: (-r.points, r.rule_id))
    )
    return Assessment(
        kind=kind,
        score=score,
        band=band.name,
        decision=band.decisions[kind],
        results=results,
        reasons=reasons,
        actions=tuple(ruleset.actions_for(band.name, kind)),
        ruleset_version=ruleset.version,
    )
