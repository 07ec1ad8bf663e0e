"""Shared fixtures.

The database is migrated once per run; each test runs inside an outer transaction on one connection and
the app's sessions join it with savepoints, so every test starts from the migrated, empty schema
(warehouse's pattern). Tests that need real commits and several connections (races, dispatchers) use
``live_app`` instead, which truncates every table afterwards.

Backends: SQLite by default; PostgreSQL when FOXGUARD_TEST_DATABASE_URL is set (CI runs both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from security import create_app
from security.audit.services import AuditLog
from security.clients.services import ClientService
from security.clock import FrozenClock
from security.config import Settings, load_settings
from security.db import make_engine
from security.entropy import SystemEntropy
from security.migrate import upgrade
from security.models import Base
from security.permissions import ALL_SCOPES

# A Monday morning; tests move the clock explicitly.
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEST_DATABASE_ENV = "FOXGUARD_TEST_DATABASE_URL"
TEST_REDIS_ENV = "FOXGUARD_TEST_REDIS_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="run the long variants too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = os.environ.get(TEST_DATABASE_ENV, "").startswith("postgresql")
    run_long = config.getoption("--long")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason=f"needs PostgreSQL: set {TEST_DATABASE_ENV}"))
        if "slow" in item.keywords and not run_long:
            item.add_marker(pytest.mark.skip(reason="long variant: run with --long"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get(TEST_DATABASE_ENV) or f"sqlite:///{tmp_path_factory.mktemp('db')}/foxguard-test.sqlite3"


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # environ={} keeps the developer's own FOXGUARD_* variables out of the tests.
    return load_settings("testing", {"database": {"url": database_url, "auto_migrate": False}}, environ={})


def reset_schema(engine: Engine) -> None:
    """Start from nothing: drop every table (including Alembic's version table)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        with engine.begin() as conn:
            tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars().all()
            for name in tables:
                if not name.startswith("sqlite_"):
                    conn.execute(text(f'DROP TABLE "{name}"'))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    reset_schema(engine)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        if outer.is_active:
            outer.rollback()


def joined_session(connection: Connection) -> Session:
    return Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def db_session(connection: Connection) -> Iterator[Session]:
    session = joined_session(connection)
    yield session
    session.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def app(settings: Settings, connection: Connection, clock: FrozenClock) -> Flask:
    return create_app(settings, clock=clock, session_factory=lambda: joined_session(connection))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def truncate_all(engine: Engine) -> None:
    """Empty every table and reset the audit chain (for tests that really commit)."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
        conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64})


@pytest.fixture
def live_app(settings: Settings, engine: Engine, clock: FrozenClock) -> Iterator[Flask]:
    """An app whose requests really commit, on their own connections (concurrency tests)."""
    truncate_all(engine)
    app = create_app(settings, clock=clock)
    yield app
    runtime_engine = app.extensions["foxguard"].engine
    runtime_engine.dispose()
    truncate_all(engine)


@dataclass
class ApiClient:
    """A Flask test client that sends a service-client key on every request."""

    client: FlaskClient
    key: str

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(headers or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.put(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.delete(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)


def issue_key(session: Session, clock: FrozenClock, name: str, scopes: list[str] | tuple[str, ...]) -> str:
    service = ClientService(session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(session, clock=clock))
    key = service.create(name, scopes, actor="test").api_key
    session.commit()
    return key


@pytest.fixture
def service_key(db_session: Session, clock: FrozenClock) -> str:
    """An API key holding every scope."""
    return issue_key(db_session, clock, "wallet-backend", ALL_SCOPES)


@pytest.fixture
def api(client: FlaskClient, service_key: str) -> ApiClient:
    return ApiClient(client, service_key)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(TEST_REDIS_ENV)
    if not url:
        pytest.skip(f"needs Redis: set {TEST_REDIS_ENV}")
    return url
