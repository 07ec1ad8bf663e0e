"""Appeal policy per lock kind, loaded and validated from an ``[appeals]`` TOML section (pure).

The lock kind decides the assurance an appeal needs (DESIGN.md "Appeals and identity verification"):
which verifications (some as "one of" groups), whether an operator must review, how many *distinct*
operators must approve (four-eyes), which actions the user must complete before the lock is released,
attempt limits and expiry. The section lives in ``config/rules.toml`` beside the risk rules (DESIGN.md).

:func:`progress` is the pure decision "what is still needed, and can the appeal advance?".
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from security.locks.states import LockKind, RequiredAction

SECTION: Final = "appeals"
RULES_FILE: Final = "rules.toml"
#: Shortest contact code accepted by the policy (NIST SP 800-63B: 6+ digits for an out-of-band code).
MIN_CODE_DIGITS: Final = 6
MAX_CODE_DIGITS: Final = 10


class VerificationMethod(StrEnum):
    """Ways a user proves to be the account owner."""

    CONTACT_CODE = "contact_code"  # possession of the registered e-mail/phone
    TOTP = "totp"  # possession of the enrolled authenticator
    RECOVERY_CODE = "recovery_code"  # possession of a printed recovery code
    RECENT_TRANSACTION = "recent_transaction"  # knowledge: amount and day of a recent transaction
    IDENTITY_DOCUMENT = "identity_document"  # proof of identity: the document number on record


class NextStep(StrEnum):
    """What happens to an appeal next, per :func:`progress`."""

    VERIFY = "verify"  # the user still has verifications to do
    REVIEW = "review"  # verified; operators decide
    APPROVE = "approve"  # verified and no review needed: approved automatically


class PolicyError(ValueError):
    """The appeals section is missing or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: invalid [appeals] policy: " + "; ".join(self.problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOf(_Model):
    """A requirement met by any one of several methods."""

    one_of: tuple[VerificationMethod, ...] = Field(min_length=2)

    @field_validator("one_of")
    @classmethod
    def _distinct(cls, value: tuple[VerificationMethod, ...]) -> tuple[VerificationMethod, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a one_of group lists a method twice")
        return value


Requirement = Annotated[VerificationMethod | OneOf, Field(union_mode="left_to_right")]


def requirement_methods(requirement: VerificationMethod | OneOf) -> tuple[VerificationMethod, ...]:
    """Return the methods that satisfy ``requirement`` (one for a plain method)."""
    return requirement.one_of if isinstance(requirement, OneOf) else (requirement,)


class KindPolicy(_Model):
    """What an appeal against one lock kind needs."""

    verifications: tuple[Requirement, ...] = Field(min_length=1)
    review: bool
    # Distinct operators who must approve (four-eyes = 2); 0 exactly when there is no review.
    reviewers: int = Field(ge=0, le=3)
    required_actions: tuple[RequiredAction, ...] = ()
    # A verification counts towards advancing only this long (a stale possession proof is re-done).
    proof_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.review and self.reviewers < 1:
            raise ValueError("review = true needs reviewers >= 1")
        if not self.review and self.reviewers != 0:
            raise ValueError("reviewers must be 0 when review = false")
        seen: list[VerificationMethod] = [m for r in self.verifications for m in requirement_methods(r)]
        if len(set(seen)) != len(seen):
            raise ValueError("a verification method appears in more than one requirement")
        if VerificationMethod.CONTACT_CODE not in seen:
            # The contact code is what makes an appeal start: it is always part of the proof.
            raise ValueError("contact_code must be a required verification")
        if len(set(self.required_actions)) != len(self.required_actions):
            raise ValueError("required_actions lists an action twice")
        return self

    @property
    def proof_ttl(self) -> timedelta:
        """How long a successful verification counts."""
        return timedelta(hours=self.proof_ttl_hours)

    @property
    def methods(self) -> frozenset[VerificationMethod]:
        """Every method that can contribute to this policy."""
        return frozenset(m for r in self.verifications for m in requirement_methods(r))


class AppealPolicy(_Model):
    """The whole ``[appeals]`` section."""

    # How long an appeal may stay unverified (submitted/verifying) before it expires.
    appeal_ttl_hours: int = Field(ge=1, le=24 * 30)
    contact_code_ttl_minutes: int = Field(ge=1, le=24 * 60)
    contact_code_digits: int = Field(ge=MIN_CODE_DIGITS, le=MAX_CODE_DIGITS)
    # Attempts per method (each limit applies within one appeal) and in total per appeal.
    max_attempts: Mapping[VerificationMethod, Annotated[int, Field(ge=1, le=100)]]
    max_attempts_per_appeal: int = Field(ge=1, le=500)
    # Contact codes a user may have (re)sent per appeal (the first one included).
    max_contact_codes: int = Field(ge=1, le=20)
    recent_transaction_count: int = Field(ge=1, le=100)
    # Relative tolerance on the amount of a recent transaction (0.01 = within 1 %).
    amount_tolerance: Decimal = Field(ge=Decimal(0), le=Decimal("0.1"))
    kinds: Mapping[LockKind, KindPolicy]

    @field_validator("max_attempts")
    @classmethod
    def _every_method_limited(
        cls, value: Mapping[VerificationMethod, int]
    ) -> Mapping[VerificationMethod, int]:
        missing = sorted(set(VerificationMethod) - set(value))
        if missing:
            raise ValueError(f"no attempt limit for: {', '.join(missing)}")
        return value

    @field_validator("kinds")
    @classmethod
    def _every_kind_covered(cls, value: Mapping[LockKind, KindPolicy]) -> Mapping[LockKind, KindPolicy]:
        missing = sorted(set(LockKind) - set(value))
        if missing:
            raise ValueError(f"no policy for lock kind: {', '.join(missing)}")
        return value

    @field_validator("amount_tolerance", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        # TOML floats are binary; "0.01" as a string keeps the tolerance exact.
        return str(value) if isinstance(value, float) else value

    def for_kind(self, kind: LockKind | str) -> KindPolicy:
        """Return the policy of one lock kind."""
        return self.kinds[LockKind(kind)]

    @property
    def appeal_ttl(self) -> timedelta:
        """Lifetime of an appeal until it is verified."""
        return timedelta(hours=self.appeal_ttl_hours)

    @property
    def contact_code_ttl(self) -> timedelta:
        """Lifetime of one contact code."""
        return timedelta(minutes=self.contact_code_ttl_minutes)


def _format(error: Mapping[str, Any]) -> str:
    path = ".".join(str(p) for p in error.get("loc", ()) if p not in {"OneOf", "VerificationMethod"})
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{SECTION}.{path}: {message}" if path else f"{SECTION}: {message}"


def parse_policy(section: Mapping[str, Any], *, source: str = "<appeals>") -> AppealPolicy:
    """Validate a raw ``[appeals]`` mapping; raise :class:`PolicyError` listing every problem."""
    try:
        return AppealPolicy.model_validate(dict(section))
    except ValidationError as exc:
        problems = list(dict.fromkeys(_format(e) for e in exc.errors()))
        raise PolicyError(source, problems) from exc


def _read_section(path: Path) -> Mapping[str, Any] | None:
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(str(path), [f"cannot read: {exc}"]) from exc
    section = document.get(SECTION)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise PolicyError(str(path), [f"[{SECTION}] must be a table"])
    return section


def load_policy(config_dir: Path | str, *, files: Iterable[str] = (RULES_FILE,)) -> AppealPolicy:
    """Load the ``[appeals]`` section from the first of ``files`` (in ``config_dir``) that has one."""
    directory = Path(config_dir)
    names = list(files)
    for name in names:
        path = directory / name
        section = _read_section(path)
        if section is not None:
            return parse_policy(section, source=str(path))
    raise PolicyError(str(directory), [f"no [{SECTION}] section in any of: {', '.join(names)}"])


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an appeal stands against its kind's policy."""

    #: Requirements met by a fresh verification, in policy order.
    satisfied: tuple[VerificationMethod | OneOf, ...]
    #: Requirements still to meet, in policy order.
    missing: tuple[VerificationMethod | OneOf, ...]
    #: Methods that succeeded once but no longer count (older than the proof TTL).
    stale: tuple[VerificationMethod, ...]
    next_step: NextStep

    @property
    def verified(self) -> bool:
        """Every required verification is met."""
        return not self.missing

    @property
    def useful_methods(self) -> frozenset[VerificationMethod]:
        """Methods that would meet a missing requirement (others are refused as not needed)."""
        return frozenset(m for r in self.missing for m in requirement_methods(r))


def progress(
    policy: KindPolicy, verifications_done: Mapping[VerificationMethod, datetime], at: datetime
) -> Progress:
    """Return what is still needed and the next step for an appeal under ``policy``.

    ``verifications_done`` maps each method that succeeded to when it (last) succeeded. A success counts
    only within ``policy.proof_ttl`` before ``at``; a success dated after ``at`` is treated as not done.
    """
    fresh = {m for m, when in verifications_done.items() if at - policy.proof_ttl <= when <= at}
    stale = tuple(m for m in VerificationMethod if m in verifications_done and m not in fresh)
    satisfied: list[VerificationMethod | OneOf] = []
    missing: list[VerificationMethod | OneOf] = []
    for requirement in policy.verifications:
        (satisfied if fresh.intersection(requirement_methods(requirement)) else missing).append(requirement)
    if missing:
        step = NextStep.VERIFY
    elif policy.review:
        step = NextStep.REVIEW
    else:
        step = NextStep.APPROVE
    return Progress(satisfied=tuple(satisfied), missing=tuple(missing), stale=stale, next_step=step)


class AttemptRefusal(StrEnum):
    """Why a verification attempt is not even evaluated."""

    METHOD_EXHAUSTED = "method_attempts_exhausted"
    APPEAL_EXHAUSTED = "appeal_attempts_exhausted"


def attempt_refusal(
    policy: AppealPolicy, method: VerificationMethod, *, method_attempts: int, appeal_attempts: int
) -> AttemptRefusal | None:
    """Return why one more attempt with ``method`` is refused, or ``None`` if it may be evaluated.

    ``method_attempts`` / ``appeal_attempts`` count attempts already made (successful ones included).
    """
    if appeal_attempts >= policy.max_attempts_per_appeal:
        return AttemptRefusal.APPEAL_EXHAUSTED
    if method_attempts >= policy.max_attempts[method]:
        return AttemptRefusal.METHOD_EXHAUSTED
    return None
