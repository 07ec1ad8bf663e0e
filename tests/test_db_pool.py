"""PostgreSQL pool: a connection idle for a while is tested before use; one in use a moment ago is not.

``security.db._ping_when_idle`` replaces ``pool_pre_ping`` (a round trip on every checkout). The outage
under load is covered by ``tests/proof/test_outage.py``; here the two halves one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import security.db
from security.config import Settings
from security.db import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def pool(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[Any]]]:
    engine = make_engine(settings)
    pings: list[Any] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    yield engine, pings
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(engine: Engine, pid: int) -> None:
    """End the server process of a pooled connection from outside the pool (it stays idle in there)."""
    outside = create_engine(engine.url, poolclass=NullPool)
    with outside.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    outside.dispose()


def test_a_connection_in_use_a_moment_ago_is_not_tested(pool: tuple[Engine, list[Any]]) -> None:
    engine, pings = pool
    first = backend_pid(engine)
    assert backend_pid(engine) == first  # the same pooled connection, handed out again
    assert pings == []


def test_an_idle_connection_that_died_is_replaced_before_use(pool: tuple[Engine, list[Any]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    engine, pings = pool
    dead = backend_pid(engine)
    terminate(engine, dead)
    monkeypatch.setattr(security.db, "PING_AFTER_IDLE_S", 0.0)  # every pooled connection counts as idle

    assert backend_pid(engine) != dead  # no error: the ping found it dead and the pool reconnected
    assert pings


def test_a_recently_used_connection_that_died_fails_once_then_the_pool_recovers(
        pool: tuple[Engine, list[Any]]) -> None:
    engine, pings = pool
    dead = backend_pid(engine)
    terminate(engine, dead)

    with pytest.raises(DBAPIError) as caught:
        backend_pid(engine)  # the one request that finds out answers 503 (see security.web.problems)
    assert caught.value.connection_invalidated
    assert backend_pid(engine) != dead
    assert pings == []
