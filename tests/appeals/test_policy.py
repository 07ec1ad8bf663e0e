"""The [appeals] policy: defaults from the shipped file, validation, loading order and progress()."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from security.appeals.policy import (
    AppealPolicy,
    AttemptRefusal,
    LockKind,
    NextStep,
    OneOf,
    PolicyError,
    RequiredAction,
    VerificationMethod,
    attempt_refusal,
    load_policy,
    parse_policy,
    progress,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
M = VerificationMethod


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return tomllib.loads((CONFIG / "rules.toml").read_text())["appeals"]


@pytest.fixture(scope="module")
def policy() -> AppealPolicy:
    return load_policy(CONFIG)


def test_shipped_defaults_follow_the_issue(policy: AppealPolicy) -> None:
    brute = policy.for_kind(LockKind.BRUTE_FORCE)
    assert brute.verifications == (M.CONTACT_CODE,)
    assert (brute.review, brute.reviewers) == (False, 0)
    assert brute.required_actions == (RequiredAction.RESET_PASSWORD,)

    risk = policy.for_kind("risk")
    assert risk.verifications == (
        M.CONTACT_CODE, OneOf(one_of=(M.TOTP, M.RECOVERY_CODE, M.RECENT_TRANSACTION, M.IDENTITY_DOCUMENT)),
    )
    assert (risk.review, risk.reviewers, risk.required_actions) == (True, 1, ())

    for kind in (LockKind.USER_REPORTED, LockKind.OPERATOR):
        strict = policy.for_kind(kind)
        assert strict.verifications == (M.CONTACT_CODE, M.IDENTITY_DOCUMENT)
        assert (strict.review, strict.reviewers) == (True, 2)
        assert strict.required_actions == (RequiredAction.RESET_PASSWORD, RequiredAction.ENROLL_TOTP)

    assert policy.amount_tolerance == Decimal("0.01")
    assert policy.contact_code_digits >= 6
    assert policy.max_attempts[M.CONTACT_CODE] == 5
    assert policy.recent_transaction_count == 10


def test_policy_is_read_from_a_rules_file_in_the_config_dir(tmp_path: Path) -> None:
    edited = (CONFIG / "rules.toml").read_text().replace("appeal_ttl_hours = 72", "appeal_ttl_hours = 5")
    (tmp_path / "rules.toml").write_text(edited)
    assert load_policy(tmp_path).appeal_ttl == timedelta(hours=5)


def test_missing_section_everywhere_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('[[rules]]\nid = "x"\n')
    with pytest.raises(PolicyError, match=r"no \[appeals\] section"):
        load_policy(tmp_path)


def test_broken_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text("[appeals\n")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path)


def _broken(raw: dict[str, Any], edit: Any) -> list[str]:
    section = copy.deepcopy(raw)
    edit(section)
    with pytest.raises(PolicyError) as caught:
        parse_policy(section)
    return caught.value.problems


def test_validation_lists_each_problem(raw: dict[str, Any]) -> None:
    def several(section: dict[str, Any]) -> None:
        section["contact_code_digits"] = 4
        del section["kinds"]["operator"]
        section["max_attempts"].pop("totp")

    problems = _broken(raw, several)
    assert any(p.startswith("appeals.contact_code_digits") for p in problems)
    assert any("no policy for lock kind: operator" in p for p in problems)
    assert any("no attempt limit for: totp" in p for p in problems)


@pytest.mark.parametrize(
    ("kind_edit", "message"),
    [
        ({"review": True, "reviewers": 0}, "review = true needs reviewers >= 1"),
        ({"review": False, "reviewers": 2}, "reviewers must be 0"),
        ({"verifications": ["identity_document"]}, "contact_code must be a required verification"),
        ({"verifications": ["contact_code", {"one_of": ["contact_code", "totp"]}]}, "more than one requirement"),
        ({"verifications": ["contact_code", {"one_of": ["totp"]}]}, "at least 2"),
        ({"verifications": ["contact_code", "fingerprint"]}, "verifications"),
        ({"required_actions": ["reset_password", "reset_password"]}, "lists an action twice"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_kind_policy_validation(raw: dict[str, Any], kind_edit: dict[str, Any], message: str) -> None:
    problems = _broken(raw, lambda s: s["kinds"]["risk"].update(kind_edit))
    assert any(message in p for p in problems), problems
    assert all(p.startswith("appeals.") for p in problems)


def test_float_tolerance_is_read_exactly(raw: dict[str, Any]) -> None:
    section = copy.deepcopy(raw)
    section["amount_tolerance"] = 0.01
    assert parse_policy(section).amount_tolerance == Decimal("0.01")


def test_progress_risk_needs_contact_code_and_one_more(policy: AppealPolicy) -> None:
    risk = policy.for_kind(LockKind.RISK)
    start = progress(risk, {}, AT)
    assert start.next_step is NextStep.VERIFY
    assert not start.verified
    assert start.useful_methods == set(M)

    half = progress(risk, {M.CONTACT_CODE: AT}, AT)
    assert half.satisfied == (M.CONTACT_CODE,)
    assert len(half.missing) == 1
    assert half.useful_methods == {M.TOTP, M.RECOVERY_CODE, M.RECENT_TRANSACTION, M.IDENTITY_DOCUMENT}

    done = progress(risk, {M.CONTACT_CODE: AT, M.RECENT_TRANSACTION: AT}, AT)
    assert done.verified
    assert done.next_step is NextStep.REVIEW
    assert done.useful_methods == frozenset()


def test_progress_brute_force_approves_automatically(policy: AppealPolicy) -> None:
    result = progress(policy.for_kind(LockKind.BRUTE_FORCE), {M.CONTACT_CODE: AT}, AT)
    assert result.next_step is NextStep.APPROVE


def test_progress_ignores_methods_outside_the_policy(policy: AppealPolicy) -> None:
    result = progress(policy.for_kind(LockKind.USER_REPORTED), {M.CONTACT_CODE: AT, M.TOTP: AT}, AT)
    assert result.missing == (M.IDENTITY_DOCUMENT,)
    assert result.next_step is NextStep.VERIFY


def test_progress_stale_and_future_proofs_do_not_count(policy: AppealPolicy) -> None:
    strict = policy.for_kind(LockKind.USER_REPORTED)
    old = AT - strict.proof_ttl - timedelta(seconds=1)
    result = progress(strict, {M.CONTACT_CODE: old, M.IDENTITY_DOCUMENT: AT}, AT)
    assert result.stale == (M.CONTACT_CODE,)
    assert result.missing == (M.CONTACT_CODE,)
    edge = progress(strict, {M.CONTACT_CODE: AT - strict.proof_ttl, M.IDENTITY_DOCUMENT: AT}, AT)
    assert edge.verified
    future = progress(strict, {M.CONTACT_CODE: AT + timedelta(seconds=1), M.IDENTITY_DOCUMENT: AT}, AT)
    assert not future.verified


def test_attempt_limits(policy: AppealPolicy) -> None:
    limit = policy.max_attempts[M.IDENTITY_DOCUMENT]
    assert attempt_refusal(policy, M.IDENTITY_DOCUMENT, method_attempts=limit - 1, appeal_attempts=0) is None
    assert (attempt_refusal(policy, M.IDENTITY_DOCUMENT, method_attempts=limit, appeal_attempts=0)
            is AttemptRefusal.METHOD_EXHAUSTED)
    total = policy.max_attempts_per_appeal
    assert attempt_refusal(policy, M.TOTP, method_attempts=0, appeal_attempts=total) is AttemptRefusal.APPEAL_EXHAUSTED
