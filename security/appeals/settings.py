"""The ``[appeal_limits]`` settings section: rate limits of the public appeal and freeze endpoints.

Every value has a default, so the section may be absent. The appeal *policy* (verifications, reviewers,
attempt limits, expiry) is not here: it is a decision table and lives with the rules
(the ``[appeals]`` section of ``config/rules.toml``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from security.config import CONFIG_DIR, RateLimitText, Settings

SECTION = "appeal_limits"


class AppealLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Rate limits in the `limits` notation ("5 per hour").
    appeals_per_identifier: RateLimitText = "5 per hour"
    appeals_per_ip: RateLimitText = "30 per hour"
    verifications_per_ip: RateLimitText = "60 per hour"
    messages_per_ip: RateLimitText = "60 per hour"
    freeze_codes_per_identifier: RateLimitText = "5 per hour"
    freeze_codes_per_ip: RateLimitText = "30 per hour"
    freezes_per_identifier: RateLimitText = "10 per hour"
    freezes_per_ip: RateLimitText = "30 per hour"
    # Appeal submissions, freeze-code requests and freezes do more for a real account (codes, messages, a
    # password check) than for an unknown identifier; every answer is held until this long after the
    # request started, so the timing does not tell (as credentials.reset_min_response_ms).
    min_response_ms: int = Field(default=250, ge=0, le=5000)
    # Where the policy files are read from (tests and deployments may point elsewhere).
    policy_dir: str = str(CONFIG_DIR)

    @property
    def policy_path(self) -> Path:
        """Directory holding rules.toml."""
        return Path(self.policy_dir)


def appeal_limits(settings: Settings) -> AppealLimits:
    """Validate and return the ``[appeal_limits]`` section of ``settings``."""
    return AppealLimits.model_validate(settings.section(SECTION))
