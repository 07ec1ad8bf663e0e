"""Load and validate a rule file (``config/rules.toml``) into a typed :class:`RuleSet`.

Pure: no Flask, no SQLAlchemy. A rule file holds the rules (id, description, condition, points,
mode), the score bands and their decision per event kind, the actions taken per band, payment
corridors per home region, the brute-force policy and the auto-lock guard. The ruleset version is
a hash of the file's bytes, stored with every assessment so a decision can be traced to the exact
rules that made it.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from security.risk.features import FEATURE_TYPES, EventKind, FeatureType

#: Lowest and highest risk score.
SCORE_MIN: Final = 0
SCORE_MAX: Final = 100
#: Number of hex digits of the file hash kept as the ruleset version.
VERSION_HEX_DIGITS: Final = 16
#: Top-level sections owned by other slices; this loader accepts and ignores them.
FOREIGN_SECTIONS: Final[frozenset[str]] = frozenset({"appeals"})


class RuleMode(StrEnum):
    """``enforce`` rules count towards the score; ``shadow`` rules are recorded only."""

    ENFORCE = "enforce"
    SHADOW = "shadow"


class Decision(StrEnum):
    """Every decision the engine can return (which ones apply depends on the event kind)."""

    ALLOW = "allow"
    MFA_REQUIRED = "mfa_required"
    DENY = "deny"
    REVIEW = "review"
    BLOCK = "block"


#: Decisions allowed per event kind.
DECISIONS_BY_KIND: Final[Mapping[EventKind, frozenset[Decision]]] = {
    EventKind.LOGIN: frozenset({Decision.ALLOW, Decision.MFA_REQUIRED, Decision.DENY}),
    EventKind.TRANSACTION: frozenset({Decision.ALLOW, Decision.REVIEW, Decision.BLOCK}),
    EventKind.ACCOUNT_CHANGE: frozenset({Decision.ALLOW, Decision.REVIEW, Decision.BLOCK}),
}


class Op(StrEnum):
    """Condition operators."""

    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EQ = "eq"
    NE = "ne"
    IS_TRUE = "is_true"
    IS_FALSE = "is_false"
    IN = "in"
    NOT_IN = "not_in"
    OUTSIDE_CORRIDOR = "outside_corridor"


NUMERIC_OPS: Final = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE, Op.EQ, Op.NE})
BOOLEAN_OPS: Final = frozenset({Op.IS_TRUE, Op.IS_FALSE})
TEXT_OPS: Final = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.OUTSIDE_CORRIDOR})
OPS_BY_TYPE: Final[Mapping[FeatureType, frozenset[Op]]] = {
    FeatureType.NUMBER: NUMERIC_OPS,
    FeatureType.BOOLEAN: BOOLEAN_OPS,
    FeatureType.TEXT: TEXT_OPS,
}
#: Features that hold a country code and may be checked against corridors.
CORRIDOR_FEATURES: Final = frozenset({"destination_country", "country"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Strict):
    """``feature op value``, e.g. ``failed_logins_account_window gte 5``."""

    feature: str
    op: Op
    value: bool | int | float | str | list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        ftype = FEATURE_TYPES.get(self.feature)
        if ftype is None:
            raise ValueError(f"unknown feature {self.feature!r}")
        if self.op not in OPS_BY_TYPE[ftype]:
            allowed = ", ".join(sorted(OPS_BY_TYPE[ftype]))
            raise ValueError(f"operator {self.op!r} does not apply to {ftype} feature "
                             f"{self.feature!r} (allowed: {allowed})")
        if self.op in BOOLEAN_OPS or self.op is Op.OUTSIDE_CORRIDOR:
            if self.value is not None:
                raise ValueError(f"operator {self.op!r} takes no value")
            if self.op is Op.OUTSIDE_CORRIDOR and self.feature not in CORRIDOR_FEATURES:
                raise ValueError(f"outside_corridor only applies to {sorted(CORRIDOR_FEATURES)}")
        elif self.op in (Op.IN, Op.NOT_IN):
            if not isinstance(self.value, list):
                raise ValueError(f"operator {self.op!r} needs a list value")
        elif ftype is FeatureType.NUMBER:
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ValueError(f"feature {self.feature!r} needs a numeric value")
        elif not isinstance(self.value, str):
            raise ValueError(f"feature {self.feature!r} needs a text value")
        return self


class AllOf(_Strict):
    """All sub-conditions hold."""

    all: Annotated[list[Condition], Field(min_length=1)]


class AnyOf(_Strict):
    """At least one sub-condition holds."""

    any: Annotated[list[Condition], Field(min_length=1)]


def _condition_tag(value: Any) -> str:
    """Pick the condition model from the keys present, so errors come from one branch only."""
    if isinstance(value, Mapping):
        if "all" in value:
            return "all_of"
        if "any" in value:
            return "any_of"
    elif isinstance(value, AllOf):
        return "all_of"
    elif isinstance(value, AnyOf):
        return "any_of"
    return "comparison"


Condition = Annotated[
    Annotated[Comparison, Tag("comparison")]
    | Annotated[AllOf, Tag("all_of")]
    | Annotated[AnyOf, Tag("any_of")],
    Discriminator(_condition_tag),
]
AllOf.model_rebuild()
AnyOf.model_rebuild()


def condition_features(condition: Condition) -> set[str]:
    """Return every feature name a condition reads."""
    if isinstance(condition, Comparison):
        return {condition.feature}
    parts = condition.all if isinstance(condition, AllOf) else condition.any
    return set().union(*(condition_features(part) for part in parts))


class Rule(_Strict):
    """One explainable rule."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]*$", max_length=80)]
    description: Annotated[str, Field(min_length=1)]
    applies_to: Annotated[list[EventKind], Field(min_length=1)]
    condition: Condition
    points: Annotated[int, Field(ge=-SCORE_MAX, le=SCORE_MAX)]
    mode: RuleMode = RuleMode.ENFORCE

    @functools.cached_property
    def features(self) -> tuple[str, ...]:
        """The feature names the condition reads, sorted (computed once per rule: the rule is frozen)."""
        return tuple(sorted(condition_features(self.condition)))


class Band(_Strict):
    """A score range (inclusive) and the decision it leads to per event kind."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    min: Annotated[int, Field(ge=SCORE_MIN, le=SCORE_MAX)]
    max: Annotated[int, Field(ge=SCORE_MIN, le=SCORE_MAX)]
    decisions: dict[EventKind, Decision]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"band {self.name!r}: min {self.min} > max {self.max}")
        missing = set(EventKind) - set(self.decisions)
        if missing:
            raise ValueError(f"band {self.name!r}: no decision for {sorted(missing)}")
        for kind, decision in self.decisions.items():
            if decision not in DECISIONS_BY_KIND[kind]:
                allowed = ", ".join(sorted(DECISIONS_BY_KIND[kind]))
                raise ValueError(f"band {self.name!r}: decision {decision!r} is not valid for "
                                 f"{kind} (allowed: {allowed})")
        return self


class ActionType(StrEnum):
    """What happens to the account when an assessment lands in a band."""

    LOCK = "lock"
    RESTRICT = "restrict"


class Action(_Strict):
    """``band`` + event kinds -> lock (of ``lock_kind``) or restrict the account."""

    band: str
    applies_to: Annotated[list[EventKind], Field(min_length=1)]
    action: ActionType
    lock_kind: Literal["risk"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.action is ActionType.LOCK and self.lock_kind is None:
            raise ValueError("a lock action needs lock_kind")
        if self.action is not ActionType.LOCK and self.lock_kind is not None:
            raise ValueError("lock_kind only applies to lock actions")
        return self


class Region(_Strict):
    """Home countries of a region and where their payments may go (country codes or region names)."""

    countries: Annotated[list[str], Field(min_length=1)]
    allowed: list[str] = []


class Corridors(_Strict):
    """Payment corridors per home region; domestic payments are always inside the corridor."""

    default_region: str
    regions: dict[str, Region]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} is not a defined region")
        seen: dict[str, str] = {}
        for name, region in self.regions.items():
            for country in region.countries:
                if len(country) != 2 or not country.isupper():
                    raise ValueError(f"region {name!r}: {country!r} is not an ISO 3166 alpha-2 code")
                if country in seen:
                    raise ValueError(f"country {country!r} is in regions {seen[country]!r} and {name!r}")
                seen[country] = name
            for entry in region.allowed:
                if entry not in self.regions and (len(entry) != 2 or not entry.isupper()):
                    raise ValueError(f"region {name!r}: allowed entry {entry!r} is neither a region "
                                     "nor a country code")
        return self

    def region_of(self, country: str) -> str:
        """Return the region a home country belongs to (the default region if none lists it)."""
        for name, region in self.regions.items():
            if country in region.countries:
                return name
        return self.default_region

    def allowed_destinations(self, home_country: str) -> frozenset[str]:
        """Return the destination countries allowed for an account living in ``home_country``."""
        region = self.regions[self.region_of(home_country)]
        allowed = {home_country, *region.countries}
        for entry in region.allowed:
            if entry in self.regions:
                allowed.update(self.regions[entry].countries)
            else:
                allowed.add(entry)
        return frozenset(allowed)


class BruteForceConfig(_Strict):
    """Keycloak-like brute-force policy (all durations in seconds)."""

    max_failures: Annotated[int, Field(ge=1)]
    failure_window_seconds: Annotated[int, Field(ge=1)]
    base_lock_seconds: Annotated[int, Field(ge=1)]
    backoff_multiplier: Annotated[float, Field(ge=1)]
    max_lock_seconds: Annotated[int, Field(ge=1)]
    max_temporary_locks: Annotated[int, Field(ge=0)]
    temporary_lock_memory_seconds: Annotated[int, Field(ge=1)]
    ip_max_failures: Annotated[int, Field(ge=1)]
    ip_window_seconds: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_lock_seconds < self.base_lock_seconds:
            raise ValueError("max_lock_seconds must be >= base_lock_seconds")
        return self

    @property
    def failure_window(self) -> timedelta:
        """The per-account failure window."""
        return timedelta(seconds=self.failure_window_seconds)

    @property
    def ip_window(self) -> timedelta:
        """The per-IP failure window."""
        return timedelta(seconds=self.ip_window_seconds)


class GuardConfig(_Strict):
    """Cap on automatic locks: at most max(min_locks, fraction * active accounts) per window."""

    window_seconds: Annotated[int, Field(ge=1)]
    max_fraction_of_active: Annotated[float, Field(gt=0, le=1)]
    min_locks: Annotated[int, Field(ge=0)]


class RuleSet(_Strict):
    """A validated rule file."""

    version: str
    rules: list[Rule]
    bands: Annotated[list[Band], Field(min_length=1)]
    actions: list[Action] = []
    corridors: Corridors
    brute_force: BruteForceConfig
    guard: GuardConfig

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return rules

    @field_validator("bands")
    @classmethod
    def _bands_cover_scores(cls, bands: list[Band]) -> list[Band]:
        names = [band.name for band in bands]
        if len(set(names)) != len(names):
            raise ValueError("duplicate band names")
        expected_min = SCORE_MIN
        for band in bands:
            if band.min != expected_min:
                problem = "overlaps the previous band" if band.min < expected_min else "leaves a gap"
                raise ValueError(f"bands must be in ascending order and cover {SCORE_MIN}-{SCORE_MAX} "
                                 f"without gaps or overlap: band {band.name!r} starts at {band.min}, "
                                 f"expected {expected_min} ({problem})")
            expected_min = band.max + 1
        if expected_min != SCORE_MAX + 1:
            raise ValueError(f"the last band must end at {SCORE_MAX}")
        return bands

    @model_validator(mode="after")
    def _actions_name_bands(self) -> Self:
        names = {band.name for band in self.bands}
        for action in self.actions:
            if action.band not in names:
                raise ValueError(f"action refers to unknown band {action.band!r}")
        return self

    def band_for(self, score: int) -> Band:
        """Return the band containing ``score`` (bands cover 0-100 without gaps)."""
        for band in self.bands:
            if band.min <= score <= band.max:
                return band
        raise ValueError(f"score {score} outside {SCORE_MIN}-{SCORE_MAX}")

    def actions_for(self, band: str, kind: EventKind) -> list[Action]:
        """Return the actions configured for ``band`` and event ``kind``."""
        return [a for a in self.actions if a.band == band and kind in a.applies_to]

    def rules_for(self, kind: EventKind) -> list[Rule]:
        """Return the rules that apply to ``kind``, in file order."""
        return [rule for rule in self.rules if kind in rule.applies_to]


class RuleFileError(ValueError):
    """A rule file could not be parsed or validated; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


def ruleset_version(data: bytes) -> str:
    """Return the version of a rule file: a prefix of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:VERSION_HEX_DIGITS]


def _format_error(error: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    loc = list(error.get("loc", ()))
    # Name rules by id rather than list index, so a message points at something a human can find.
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = document.get("rules", [])
        if loc[1] < len(rules) and isinstance(rules[loc[1]], Mapping) and "id" in rules[loc[1]]:
            loc[1] = f"[id={rules[loc[1]]['id']}]"
    # The discriminator adds its tag to the location: drop it.
    path = ".".join(str(p) for p in loc if p not in {"comparison", "all_of", "any_of"})
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def parse_ruleset(data: bytes, *, source: str = "<rules>") -> RuleSet:
    """Parse and validate rule-file bytes; raise :class:`RuleFileError` listing every problem."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleFileError(source, [f"not valid TOML: {exc}"]) from exc
    for section in FOREIGN_SECTIONS:
        document.pop(section, None)
    if "version" in document:
        raise RuleFileError(source, ["'version' is computed from the file hash; do not set it"])
    try:
        return RuleSet.model_validate({**document, "version": ruleset_version(data)})
    except ValidationError as exc:
        # Union members each report their own failure; keep one message per distinct text.
        problems = list(dict.fromkeys(_format_error(e, document) for e in exc.errors()))
        raise RuleFileError(source, problems) from exc


def load_ruleset(path: str | Path) -> RuleSet:
    """Read and validate the rule file at ``path``."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise RuleFileError(str(file), [f"cannot read: {exc.strerror}"]) from exc
    return parse_ruleset(data, source=str(file))
