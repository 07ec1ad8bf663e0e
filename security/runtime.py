"""What one running app holds: settings, engine, session factory, clock, entropy and shared services.

Built once by ``create_app``; nothing correctness-relevant lives here beyond immutable configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from security.clock import Clock
from security.config import Settings
from security.credentials.passwords import PasswordHasher, PasswordPolicy
from security.crypto import SecretBox
from security.entropy import Entropy

EXTENSION_KEY = "foxguard"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: Callable[[], Session]
    clock: Clock
    entropy: Entropy
    secret_box: SecretBox
    password_hasher: PasswordHasher
    password_policy: PasswordPolicy
    # Slices may park immutable, start-up-built objects here (e.g. a parsed rule set).
    extras: dict[str, Any]


def runtime(app: Flask | None = None) -> Runtime:
    """The runtime of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    value: Runtime = target.extensions[EXTENSION_KEY]
    return value
