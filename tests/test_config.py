from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from security.config import load_settings

STRONG = "x" * 40


def test_layers_default_then_env_file_then_environment_then_overrides():
    settings = load_settings("testing", environ={"FOXGUARD_PASSWORDS__TIME_COST": "3",
                                                 "FOXGUARD_DATABASE_URL": "sqlite:////tmp/x.db"})
    assert settings.passwords.memory_cost_kib == 64  # testing.toml
    assert settings.passwords.time_cost == 3  # environment
    assert settings.database.url == "sqlite:////tmp/x.db"  # flat alias
    overridden = load_settings("testing", {"passwords": {"time_cost": 5}}, environ={})
    assert overridden.passwords.time_cost == 5


def test_default_argon2_parameters_are_owasp_strength():
    settings = load_settings("development", environ={})
    assert settings.passwords.memory_cost_kib >= 19_456
    assert settings.passwords.time_cost >= 2


def test_argon2_runs_at_most_one_hash_per_core_by_default():
    default = load_settings("development", environ={}).passwords
    assert default.max_concurrent_hashes == "cores"
    assert default.hash_slots() == len(os.sched_getaffinity(0))
    assert load_settings("development", environ={"FOXGUARD_PASSWORDS__MAX_CONCURRENT_HASHES": "3"}
                         ).passwords.hash_slots() == 3
    assert load_settings("development", {"passwords": {"max_concurrent_hashes": 0}}, environ={}
                         ).passwords.hash_slots() == 0  # no limit
    for wrong in (-1, "all"):
        with pytest.raises(ValidationError, match="max_concurrent_hashes"):
            load_settings("development", {"passwords": {"max_concurrent_hashes": wrong}}, environ={})


def test_environment_values_are_typed():
    settings = load_settings("testing", environ={"FOXGUARD_ENCRYPTION_KEYS": '["a", "b"]',
                                                 "FOXGUARD_APP__MAX_BODY_BYTES": "4096"})
    assert settings.secrets.encryption_keys == ["a", "b"]
    assert settings.app.max_body_bytes == 4096


def test_unknown_setting_is_refused():
    with pytest.raises(ValidationError):
        load_settings("testing", {"passwords": {"tyme_cost": 1}}, environ={})


def test_production_refuses_default_secrets():
    with pytest.raises(ValidationError, match="refusing to start in production"):
        load_settings("production", environ={})


def test_production_starts_with_real_secrets():
    from cryptography.fernet import Fernet

    settings = load_settings("production", environ={
        "FOXGUARD_SECRET_KEY": STRONG,
        "FOXGUARD_IDENTITY_HMAC_KEY": STRONG,
        "FOXGUARD_ENCRYPTION_KEYS": f'["{Fernet.generate_key().decode()}"]',
    })
    assert settings.app.env == "production"
    assert settings.database.auto_migrate is False


def test_production_refuses_weak_argon2():
    from cryptography.fernet import Fernet

    with pytest.raises(ValidationError, match="OWASP"):
        load_settings("production", environ={
            "FOXGUARD_SECRET_KEY": STRONG, "FOXGUARD_IDENTITY_HMAC_KEY": STRONG,
            "FOXGUARD_ENCRYPTION_KEYS": f'["{Fernet.generate_key().decode()}"]',
            "FOXGUARD_PASSWORDS__MEMORY_COST_KIB": "1024",
        })
