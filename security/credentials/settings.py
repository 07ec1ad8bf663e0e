"""The ``[credentials]`` settings section (validated by the slice itself, see ARCHITECTURE.md).

Every value has a default, so the section may be absent; override e.g. with
``FOXGUARD_CREDENTIALS__TOTP_ISSUER="Acme Wallet"`` or a ``[credentials]`` table in ``config/*.toml``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from security.config import RateLimitText, Settings

SECTION = "credentials"


class CredentialSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Shown by authenticator apps next to the code; a colon would break the otpauth label.
    totp_issuer: str = Field(default="Foxguard", min_length=1, max_length=64, pattern=r"^[^:]+$")
    reset_token_ttl_minutes: int = Field(default=30, ge=5, le=24 * 60)
    # Wrong TOTP/recovery codes tolerated with one reset token before it is voided.
    reset_max_second_factor_failures: int = Field(default=5, ge=1, le=20)
    # Rate limits, in the `limits` notation ("5 per hour", "10/minute").
    reset_requests_per_identifier: RateLimitText = "5 per hour"
    reset_requests_per_ip: RateLimitText = "30 per hour"
    reset_confirms_per_ip: RateLimitText = "30 per hour"
    # A reset request for a real account writes more (token, messages) than one for an unknown identifier;
    # every answer is held until this long after the request started, so the timing does not tell.
    reset_min_response_ms: int = Field(default=250, ge=0, le=5000)
    # Namespace of the rate-limit counters in the shared storage (Redis).
    rate_limit_key_prefix: str = Field(default="foxguard", min_length=1, max_length=64)

    @property
    def reset_token_ttl(self) -> timedelta:
        return timedelta(minutes=self.reset_token_ttl_minutes)


def credential_settings(settings: Settings) -> CredentialSettings:
    """Validate and return the ``[credentials]`` section of ``settings``."""
    return CredentialSettings.model_validate(settings.section(SECTION))
