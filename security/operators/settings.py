"""The ``[operators]`` settings section, validated by this slice (``Settings.section("operators")``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from security.config import RateLimitText, Settings
from security.operators.policy import LockoutPolicy, SessionPolicy


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Console sessions end after this much inactivity, and in any case this long after sign-in.
    session_idle_minutes: int = Field(default=15, ge=1)
    session_absolute_hours: int = Field(default=8, ge=1)
    # Bearer tokens for /v1/review/... expire this long after they are issued (no renewal).
    api_token_minutes: int = Field(default=60, ge=1)
    # Consecutive failed sign-ins (either factor) before the operator is locked out, and for how long.
    max_failed_sign_ins: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # Sign-in attempts (console and POST /v1/review/tokens together) per client IP, whatever the operator
    # name, in the `limits` notation: guessing across many operator names meets this before any lockout.
    sign_ins_per_ip: RateLimitText = "30 per 15 minutes"
    # Secure cookies (and the __Host- prefix). Turn off ONLY for a plain-http development server.
    secure_cookies: bool = True
    # Shown in authenticator apps next to the operator's name.
    totp_issuer: str = "Foxguard Console"

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorSettings:
        """Validate the raw ``[operators]`` section (missing keys take the defaults above)."""
        return cls.model_validate(settings.section("operators"))

    @property
    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(
            idle=timedelta(minutes=self.session_idle_minutes), absolute=timedelta(hours=self.session_absolute_hours)
        )

    @property
    def lockout_policy(self) -> LockoutPolicy:
        return LockoutPolicy(max_failures=self.max_failed_sign_ins, lock_for=timedelta(minutes=self.lockout_minutes))

    @property
    def api_token_lifetime(self) -> timedelta:
        return timedelta(minutes=self.api_token_minutes)
