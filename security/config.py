"""Typed settings: ``config/default.toml`` -> ``config/<env>.toml`` -> ``FOXGUARD_*`` environment -> overrides.

Environment variables map onto the nested settings with a double underscore between levels, e.g.
``FOXGUARD_PASSWORDS__TIME_COST=3``. A few common ones have flat aliases (``FOXGUARD_DATABASE_URL``,
``FOXGUARD_SECRET_KEY``, ``FOXGUARD_REDIS_URL``, ``FOXGUARD_ENV``). Values are parsed as TOML scalars/arrays
when they look like one, so ``FOXGUARD_ENCRYPTION_KEYS='["k1","k2"]'`` works.

Settings are validated at start; production refuses to run with the development secrets.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse as parse_rate
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ENV_PREFIX = "FOXGUARD_"
# Flat environment names kept for convenience; they point into the nested structure.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "DATABASE_URL": ("database", "url"),
    "SECRET_KEY": ("app", "secret_key"),
    "REDIS_URL": ("redis", "url"),
    "IDENTITY_HMAC_KEY": ("secrets", "identity_hmac_key"),
    "ENCRYPTION_KEYS": ("secrets", "encryption_keys"),
}
# Marker embedded in every development default secret; production refuses to start with any of them.
DEV_SECRET_MARKER = "dev-only-insecure"
# Public on purpose: a development encryption key, refused in production by Settings' validator.
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZW5jcnlwdGlvbi1rZXk="


def _valid_rate(value: str) -> str:
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ValueError(f"not a rate limit: {value!r}") from exc
    return value


#: A rate limit in the ``limits`` notation ("5 per hour"), checked when the settings load.
RateLimitText = Annotated[str, AfterValidator(_valid_rate)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSettings(Section):
    env: Literal["development", "testing", "production"] = "development"
    secret_key: str = f"{DEV_SECRET_MARKER}-secret-key"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    public_base_url: str = "http://127.0.0.1:5000"
    log_level: str = "INFO"
    # Trust X-Forwarded-For from this many proxies (0 = use the socket address).
    trusted_proxies: int = Field(default=0, ge=0, le=5)


class DatabaseSettings(Section):
    url: str = "sqlite:///instance/foxguard.sqlite3"
    # Apply migrations on start (the embedded SQLite default); production runs `flask db upgrade`.
    auto_migrate: bool = True
    echo: bool = False
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    # How long a SQLite writer waits for the lock before giving up (milliseconds).
    sqlite_busy_timeout_ms: int = Field(default=15_000, ge=0)
    # How long a PostgreSQL connection attempt may take before the request gets 503 (seconds).
    connect_timeout_s: int = Field(default=5, ge=1)


class SecretsSettings(Section):
    # Key for the keyed HMAC of identity-document numbers (never stored in the clear).
    identity_hmac_key: str = f"{DEV_SECRET_MARKER}-identity-hmac-key"
    # Fernet keys (urlsafe base64, 32 bytes), newest first; older ones still decrypt (rotation).
    encryption_keys: list[str] = Field(
        # A fixed development key: it is public, so production refuses it (see DEV_ENCRYPTION_KEY).
        default_factory=lambda: [DEV_ENCRYPTION_KEY]
    )


class PasswordSettings(Section):
    # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 as the minimum.
    time_cost: int = Field(default=2, ge=1)
    memory_cost_kib: int = Field(default=19_456, ge=8)
    parallelism: int = Field(default=1, ge=1)
    # Hashes at once per process: "cores" (as many as the CPUs this process may run on), a number, or 0 (no
    # limit). More hashes at once than cores only take turns and thrash each other's memory in the CPU
    # caches (security/credentials/passwords.py); a cap per core rather than 1 per process lets a worker
    # that holds most of the keep-alive connections still use every core.
    max_concurrent_hashes: Annotated[int, Field(ge=0)] | Literal["cores"] = "cores"
    min_length: int = Field(default=8, ge=8)
    max_length: int = Field(default=128, le=1024)
    # zxcvbn score (0-4) a password must reach.
    min_strength: int = Field(default=2, ge=0, le=4)

    def hash_slots(self) -> int:
        """``max_concurrent_hashes`` as a number (0: no limit)."""
        if self.max_concurrent_hashes == "cores":
            return available_cores()
        return self.max_concurrent_hashes


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class RedisSettings(Section):
    url: str | None = None


class Settings(BaseModel):
    """All settings of one running service."""

    model_config = ConfigDict(extra="allow", frozen=True)

    app: AppSettings = AppSettings()
    database: DatabaseSettings = DatabaseSettings()
    secrets: SecretsSettings = SecretsSettings()
    passwords: PasswordSettings = PasswordSettings()
    redis: RedisSettings = RedisSettings()

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.app.env != "production":
            return self
        problems = []
        if DEV_SECRET_MARKER in self.app.secret_key or len(self.app.secret_key) < 32:
            problems.append("app.secret_key (FOXGUARD_SECRET_KEY) must be set to a random value of 32+ chars")
        if DEV_SECRET_MARKER in self.secrets.identity_hmac_key or len(self.secrets.identity_hmac_key) < 32:
            problems.append("secrets.identity_hmac_key (FOXGUARD_IDENTITY_HMAC_KEY) must be set (32+ chars)")
        if DEV_ENCRYPTION_KEY in self.secrets.encryption_keys:
            problems.append("secrets.encryption_keys (FOXGUARD_ENCRYPTION_KEYS) must not contain the dev key")
        if self.passwords.memory_cost_kib < 19_456 or self.passwords.time_cost < 2:
            problems.append("passwords: argon2id below OWASP minimum (m=19456 KiB, t=2)")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def section(self, name: str) -> dict[str, Any]:
        """Raw dict of a section that has no typed model yet (slices may validate it themselves)."""
        extra = self.model_extra or {}
        value = extra.get(name, {})
        return dict(value) if isinstance(value, Mapping) else {}


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_env_value(raw: str) -> Any:
    """Read an environment value as a TOML value when it is one, else as a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}ENV":
            continue
        key = name[len(ENV_PREFIX) :]
        if key.startswith("TEST_"):
            continue  # test-runner settings, read by the test suite itself
        path = ENV_ALIASES.get(key) or tuple(part.lower() for part in key.split("__"))
        if len(path) < 2:
            continue
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return layer


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_settings(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_dir: Path = CONFIG_DIR,
) -> Settings:
    """Build validated settings from the layered sources."""
    environ = os.environ if environ is None else environ
    env = env or environ.get(f"{ENV_PREFIX}ENV") or "development"
    data = _read_toml(config_dir / "default.toml")
    data = _deep_merge(data, _read_toml(config_dir / f"{env}.toml"))
    data = _deep_merge(data, _env_layer(environ))
    data = _deep_merge(data, {"app": {"env": env}})
    if overrides:
        data = _deep_merge(data, overrides)
    return Settings.model_validate(data)
