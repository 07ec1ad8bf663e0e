"""Applying and inspecting Alembic migrations from code (start-up, /readyz, tests, CLI)."""

from __future__ import annotations

import fcntl
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from security.db import sqlite_file

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
# Arbitrary constant naming the PostgreSQL advisory lock that serialises concurrent migrators.
MIGRATION_LOCK_KEY = 7_245_113_001


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    """The head revision(s) of the migration scripts (immutable while the process runs)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def is_at_head(connection: Connection) -> bool:
    return current_revisions(connection) == head_revisions()


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database to ``revision``; safe when several processes start at once."""
    if engine.dialect.name == "sqlite":
        database = sqlite_file(engine.url)
        if database is None:
            _upgrade(engine, revision)
            return
        with Path(database).with_suffix(".migrate.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _upgrade(engine, revision)
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            _upgrade(engine, revision)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)
        connection.commit()


def downgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()
