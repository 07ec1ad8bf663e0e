"""Loading and validating rule files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from security.risk.features import EventKind
from security.risk.rules import (
    RuleFileError,
    RuleMode,
    load_ruleset,
    parse_ruleset,
    ruleset_version,
)

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.toml"

TAIL = """
[[bands]]
name = "low"
min = 0
max = 49
decisions = { login = "allow", transaction = "allow", account_change = "allow" }

[[bands]]
name = "high"
min = 50
max = 100
decisions = { login = "deny", transaction = "block", account_change = "block" }

[corridors]
default_region = "other"
[corridors.regions.other]
countries = ["ZZ"]

[brute_force]
max_failures = 5
failure_window_seconds = 900
base_lock_seconds = 60
backoff_multiplier = 2.0
max_lock_seconds = 3600
max_temporary_locks = 3
temporary_lock_memory_seconds = 86400
ip_max_failures = 20
ip_window_seconds = 600

[guard]
window_seconds = 3600
max_fraction_of_active = 0.01
min_locks = 10
"""

RULE = """
[[rules]]
id = "{id}"
description = "d"
applies_to = ["login"]
condition = {condition}
points = 10
mode = "{mode}"
"""


def rule(id: str = "r.one", condition: str = '{ feature = "is_new_device", op = "is_true" }',
         mode: str = "enforce") -> str:
    return RULE.format(id=id, condition=condition, mode=mode)


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        parse_ruleset(text.encode())
    return info.value.problems


def test_default_rule_file_is_valid() -> None:
    ruleset = load_ruleset(DEFAULT_RULES)
    assert len(ruleset.rules) >= 20
    assert [b.name for b in ruleset.bands] == ["low", "medium", "high", "critical"]
    assert ruleset.brute_force.max_failures == 5
    # Every event kind has rules.
    for kind in EventKind:
        assert ruleset.rules_for(kind), kind


def test_version_is_hash_of_bytes() -> None:
    text = rule() + TAIL
    ruleset = parse_ruleset(text.encode())
    assert ruleset.version == ruleset_version(text.encode())
    assert re.fullmatch(r"[0-9a-f]{16}", ruleset.version)
    assert parse_ruleset((text + "\n# comment\n").encode()).version != ruleset.version


def test_minimal_file_parses_with_nested_conditions() -> None:
    cond = ('{ all = [ { feature = "is_new_device", op = "is_true" }, '
            '{ any = [ { feature = "failed_logins_ip_window", op = "gte", value = 3 }, '
            '{ feature = "country", op = "in", value = ["RU", "KP"] } ] } ] }')
    ruleset = parse_ruleset((rule(condition=cond, mode="shadow") + TAIL).encode())
    assert ruleset.rules[0].mode is RuleMode.SHADOW


def test_unknown_feature_is_named() -> None:
    found = problems(rule(id="r.bad", condition='{ feature = "shoe_size", op = "gt", value = 3 }') + TAIL)
    assert found == ["rules.[id=r.bad].condition: unknown feature 'shoe_size'"]


def test_unknown_feature_inside_all_is_found() -> None:
    cond = '{ all = [ { feature = "is_new_device", op = "is_true" }, { feature = "nope", op = "is_true" } ] }'
    found = problems(rule(condition=cond) + TAIL)
    assert len(found) == 1
    assert "unknown feature 'nope'" in found[0]
    assert "all.1" in found[0]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ('{ feature = "is_new_device", op = "gt", value = 3 }', "does not apply to boolean"),
        ('{ feature = "failed_logins_ip_window", op = "gte", value = "many" }', "needs a numeric value"),
        ('{ feature = "failed_logins_ip_window", op = "gte", value = true }', "needs a numeric value"),
        ('{ feature = "is_new_device", op = "is_true", value = 1 }', "takes no value"),
        ('{ feature = "country", op = "in", value = "RU" }', "needs a list value"),
        ('{ feature = "home_country", op = "outside_corridor" }', "only applies to"),
    ],
)
def test_bad_conditions(condition: str, message: str) -> None:
    found = problems(rule(condition=condition) + TAIL)
    assert any(message in p for p in found), found


def test_duplicate_rule_ids() -> None:
    assert "rules: duplicate rule id 'r.one'" in problems(rule() + rule() + TAIL)


def test_bad_mode() -> None:
    found = problems(rule(mode="loud") + TAIL)
    assert found == ["rules.[id=r.one].mode: Input should be 'enforce' or 'shadow'"]


def test_bad_rule_id() -> None:
    assert any("rules.[id=Bad Id].id" in p for p in problems(rule(id="Bad Id") + TAIL))


def test_band_overlap_is_reported() -> None:
    text = rule() + TAIL.replace("min = 50", "min = 40")
    assert any("overlaps the previous band" in p for p in problems(text))


def test_band_gap_is_reported() -> None:
    text = rule() + TAIL.replace("min = 50", "min = 60")
    assert any("leaves a gap" in p for p in problems(text))


def test_bands_must_end_at_100() -> None:
    text = rule() + TAIL.replace("max = 100", "max = 90")
    assert any("must end at 100" in p for p in problems(text))


def test_bands_out_of_order() -> None:
    low, high = TAIL.split("[[bands]]")[1:3]
    high = high.split("[corridors]")[0]
    text = rule() + "[[bands]]" + high + "[[bands]]" + low + "[corridors]" + TAIL.split("[corridors]")[1]
    assert any("ascending order" in p for p in problems(text))


def test_decision_must_fit_event_kind() -> None:
    text = rule() + TAIL.replace('login = "deny"', 'login = "block"')
    assert any("not valid for login" in p for p in problems(text))


def test_action_band_must_exist() -> None:
    text = rule() + TAIL + '\n[[actions]]\nband = "severe"\napplies_to = ["login"]\naction = "restrict"\n'
    assert any("unknown band 'severe'" in p for p in problems(text))


def test_lock_action_needs_kind() -> None:
    text = rule() + TAIL + '\n[[actions]]\nband = "high"\napplies_to = ["login"]\naction = "lock"\n'
    assert any("needs lock_kind" in p for p in problems(text))


def test_unknown_section_rejected_but_appeals_section_is_accepted() -> None:
    assert any("Extra inputs" in p for p in problems(rule() + TAIL + "\n[surprise]\nx = 1\n"))
    parse_ruleset((rule() + TAIL + "\n[appeals.brute_force]\nmethods = ['contact_code']\n").encode())


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert problems("[[rules]\n")[0].startswith("not valid TOML")
    with pytest.raises(RuleFileError, match="cannot read"):
        load_ruleset(tmp_path / "missing.toml")


def test_version_key_is_refused() -> None:
    assert problems('version = "1"\n' + rule() + TAIL) == [
        "'version' is computed from the file hash; do not set it"
    ]


def test_corridors() -> None:
    ruleset = load_ruleset(DEFAULT_RULES)
    de = ruleset.corridors.allowed_destinations("DE")
    assert {"DE", "FR", "GB", "US", "JP"} <= de
    assert "NG" not in de
    assert ruleset.corridors.region_of("BR") == "other"
    assert ruleset.corridors.allowed_destinations("BR") == frozenset({"BR", "ZZ"})


def test_corridor_country_codes_checked() -> None:
    text = rule() + TAIL.replace('countries = ["ZZ"]', 'countries = ["zz"]')
    assert any("ISO 3166" in p for p in problems(text))


def test_brute_force_cap_below_base() -> None:
    text = rule() + TAIL.replace("max_lock_seconds = 3600", "max_lock_seconds = 30")
    assert any("max_lock_seconds must be >= base_lock_seconds" in p for p in problems(text))
