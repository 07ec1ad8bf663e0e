"""The ``[appeal_limits]`` settings section: rate limits of the public appeal and freeze endpoints.

Every value has a default, so the section may be absent. The appeal *policy* (verifications, reviewers,
attempt limits, expiry) is not here: it is a decision table and lives with the rules
(the ``[appeals]`` section of ``config/rules.toml``).
"""

from __future__ import annotations

from pathlib import Path

from limits import parse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from security.config import CONFIG_DIR, Settings

SECTION = "appeal_limits"


class AppealLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Rate limits in the `limits` notation ("5 per hour").
    appeals_per_identifier: str = "5 per hour"
    appeals_per_ip: str = "30 per hour"
    verifications_per_ip: str = "60 per hour"
    messages_per_ip: str = "60 per hour"
    freeze_codes_per_identifier: str = "5 per hour"
    freeze_codes_per_ip: str = "30 per hour"
    freezes_per_identifier: str = "10 per hour"
    freezes_per_ip: str = "30 per hour"
    # Appeal submissions, freeze-code requests and freezes do more for a real account (codes, messages, a
    # password check) than for an unknown identifier; every answer is held until this long after the
    # request started, so the timing does not tell (as credentials.reset_min_response_ms).
    min_response_ms: int = Field(default=250, ge=0, le=5000)
    # Where the policy files are read from (tests and deployments may point elsewhere).
    policy_dir: str = str(CONFIG_DIR)

    @field_validator(
        "appeals_per_identifier", "appeals_per_ip", "verifications_per_ip", "messages_per_ip",
        "freeze_codes_per_identifier", "freeze_codes_per_ip", "freezes_per_identifier", "freezes_per_ip",
    )
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit: {value!r}") from exc
        return value

    @property
    def policy_path(self) -> Path:
        """Directory holding rules.toml."""
        return Path(self.policy_dir)


def appeal_limits(settings: Settings) -> AppealLimits:
    """Validate and return the ``[appeal_limits]`` section of ``settings``."""
    return AppealLimits.model_validate(settings.section(SECTION))
