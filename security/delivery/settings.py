"""Delivery settings, read from the ``[webhooks]`` and ``[delivery]`` config sections and validated here.

::

    [[webhooks.endpoints]]          # one outbox message per endpoint and event
    name = "backend"
    url = "https://wallet-backend.internal/hooks/foxguard"
    secrets = ["whsec_NEW...", "whsec_OLD..."]   # newest first; every one signs (rotation)

    [webhooks]
    timeout_s = 15

    [delivery]
    background = false              # in-process dispatcher thread (development server)
    poll_interval_s = 1.0
    lease_s = 300                   # a killed dispatcher's messages are retried after this
    retry_delays_s = [5, 300, 1800, 7200, 18000, 36000]
    jitter_ratio = 0.1
    mailer = "log"                  # "log" | "smtp"
    sms = "log"                     # "log" (plug a provider in by implementing SmsSender)
    reveal_secrets_in_log = false   # default: true only when app.env = "development"

    [delivery.links]                # links in e-mail/SMS; {base_url} = app.public_base_url
    reset_url = "{base_url}/reset-password#token={token}"
    appeal_url = "{base_url}/appeal"
    freeze_url = "{base_url}/freeze"

    [delivery.smtp]
    host = "smtp.example.com"
    port = 587
    security = "starttls"           # "starttls" | "tls" | "none"
    username = "foxguard"
    password = "..."                # FOXGUARD_DELIVERY__SMTP__PASSWORD
    from_address = "Foxguard <security@example.com>"

Environment overrides follow the usual scheme, e.g.
``FOXGUARD_WEBHOOKS__ENDPOINTS='[{name="backend", url="https://...", secrets=["whsec_..."]}]'``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from security.config import Settings
from security.delivery.backoff import DEFAULT_JITTER_RATIO, DEFAULT_RETRY_DELAYS, BackoffPolicy
from security.delivery.messages import DEFAULT_LINKS
from security.delivery.senders import DEFAULT_SMTP_TIMEOUT, DEFAULT_WEBHOOK_TIMEOUT, SmtpSecurity, SmtpSettings
from security.delivery.signing import WebhookSecret, parse_secrets

DEFAULT_ENDPOINT = "backend"
# A relay on the same host may take credentials without TLS; anything else must encrypt them.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Far longer than any single send may take (HTTP and SMTP timeouts are per phase), so a live
# dispatcher never loses its lease mid-send; short enough that a killed one's work resumes soon.
DEFAULT_LEASE_S = 300.0
DEFAULT_POLL_INTERVAL_S = 1.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookEndpoint(_Strict):
    """One receiver of webhooks. Without a URL, development logs the webhooks instead of sending."""

    name: str = Field(min_length=1, max_length=64)
    url: str | None = None
    secrets: tuple[str, ...] = Field(default=(), repr=False)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")
        return value

    @field_validator("secrets")
    @classmethod
    def _valid_secrets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            parse_secrets(value)  # raises with a clear message
        return value

    @model_validator(mode="after")
    def _secret_for_url(self) -> WebhookEndpoint:
        if self.url and not self.secrets:
            raise ValueError(f"webhook endpoint {self.name!r} has a url but no signing secret")
        return self

    def parsed_secrets(self) -> tuple[WebhookSecret, ...]:
        """The signing secrets, newest first."""
        return parse_secrets(self.secrets)


class WebhooksSection(_Strict):
    endpoints: tuple[WebhookEndpoint, ...] = ()
    timeout_s: float = Field(default=DEFAULT_WEBHOOK_TIMEOUT, gt=0, le=120)

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, value: tuple[WebhookEndpoint, ...]) -> tuple[WebhookEndpoint, ...]:
        names = [endpoint.name for endpoint in value]
        if len(names) != len(set(names)):
            raise ValueError("webhook endpoint names must be unique")
        return value


class SmtpSection(_Strict):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    from_address: str = "Foxguard <no-reply@foxguard.invalid>"
    timeout_s: float = Field(default=DEFAULT_SMTP_TIMEOUT, gt=0, le=300)

    @model_validator(mode="after")
    def _no_cleartext_credentials(self) -> SmtpSection:
        if self.username and self.security is SmtpSecurity.NONE and self.host not in LOCAL_HOSTS:
            raise ValueError("delivery.smtp: credentials need security = 'starttls' or 'tls' (not sent in clear)")
        return self

    def to_settings(self) -> SmtpSettings:
        """The sender-level settings."""
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            from_address=self.from_address,
            timeout=self.timeout_s,
        )


class DeliverySection(_Strict):
    background: bool = False
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, gt=0, le=60)
    lease_s: float = Field(default=DEFAULT_LEASE_S, gt=0)
    retry_delays_s: tuple[float, ...] = tuple(d.total_seconds() for d in DEFAULT_RETRY_DELAYS)
    jitter_ratio: float = Field(default=DEFAULT_JITTER_RATIO, ge=0, lt=1)
    mailer: Literal["log", "smtp"] = "log"
    sms: Literal["log"] = "log"
    reveal_secrets_in_log: bool | None = None
    smtp: SmtpSection | None = None
    # Link patterns for e-mail/SMS templates; {base_url} is app.public_base_url, other
    # placeholders are message fields (URL-encoded).
    links: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LINKS))

    @model_validator(mode="after")
    def _smtp_when_chosen(self) -> DeliverySection:
        if self.mailer == "smtp" and self.smtp is None:
            raise ValueError("delivery.mailer = 'smtp' needs a [delivery.smtp] section")
        if any(delay < 0 for delay in self.retry_delays_s):
            raise ValueError("delivery.retry_delays_s must not be negative")
        return self


class DeliveryConfig(_Strict):
    """Everything the dispatcher needs from configuration."""

    env: str
    public_base_url: str = "http://127.0.0.1:5000"
    webhooks: WebhooksSection
    delivery: DeliverySection

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> DeliveryConfig:
        # A lease that can run out while a send is still in progress lets a second dispatcher send
        # the same message in parallel.
        longest = max(self.webhooks.timeout_s, self.delivery.smtp.timeout_s if self.delivery.smtp else 0.0)
        if self.delivery.lease_s <= longest:
            raise ValueError(
                f"delivery.lease_s ({self.delivery.lease_s:g}) must be longer than the send timeout ({longest:g} s)"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_real_endpoints(self) -> DeliveryConfig:
        if self.env != "production":
            return self
        if not self.webhooks.endpoints:
            raise ValueError("refusing to start in production: no [[webhooks.endpoints]] configured")
        unsent = [e.name for e in self.webhooks.endpoints if not e.url]
        if unsent:
            raise ValueError(f"refusing to start in production: webhook endpoint(s) without url: {unsent}")
        if self.delivery.reveal_secrets_in_log:
            raise ValueError("refusing to start in production: delivery.reveal_secrets_in_log is on")
        return self

    @property
    def endpoints(self) -> dict[str, WebhookEndpoint]:
        """Configured endpoints by name."""
        return {endpoint.name: endpoint for endpoint in self.webhooks.endpoints}

    @property
    def reveal_secrets(self) -> bool:
        """Whether log sinks may print codes and tokens (development only, by default)."""
        if self.delivery.reveal_secrets_in_log is not None:
            return self.delivery.reveal_secrets_in_log
        return self.env == "development"

    @property
    def log_unsent_webhooks(self) -> bool:
        """Whether a webhook to an endpoint without URL is logged and counted delivered.

        Only outside production: there, such a message stays pending and eventually goes dead, so
        it can be re-sent once the endpoint is configured (nothing is lost silently).
        """
        return self.env != "production"

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.delivery.lease_s)

    def backoff(self) -> BackoffPolicy:
        """The retry schedule."""
        return BackoffPolicy(
            delays=tuple(timedelta(seconds=s) for s in self.delivery.retry_delays_s),
            jitter_ratio=self.delivery.jitter_ratio,
        )


def delivery_config(settings: Settings) -> DeliveryConfig:
    """Validate the delivery-related sections of ``settings`` (raises ``pydantic.ValidationError``)."""
    return DeliveryConfig.model_validate(
        {
            "env": settings.app.env,
            "public_base_url": settings.app.public_base_url,
            "webhooks": settings.section("webhooks"),
            "delivery": settings.section("delivery"),
        }
    )
