"""Database plumbing: declarative base, engine construction, session factory.

The web layer owns the transaction (one session per request, committed or rolled back by
``security.web.transaction``); services only add, flush and query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from security.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model; constraint names are deterministic so migrations stay stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The ``Table`` a model is mapped to, typed as one (for Core statements on hot paths)."""
    return Base.metadata.tables[model.__tablename__]


def _prepare_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """Make SQLite transactional the way the service needs.

    pysqlite's own transaction handling begins lazily and never for SAVEPOINT, so (per SQLAlchemy's
    documented recipe) we switch it off and emit ``BEGIN IMMEDIATE`` ourselves. IMMEDIATE takes the write
    lock up front, so two writers queue on ``busy_timeout`` instead of one failing with SQLITE_BUSY when it
    upgrades a read to a write. WAL lets readers proceed meanwhile.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(settings: Settings) -> Engine:
    """Create the engine for ``settings.database``."""
    db = settings.database
    url = make_url(db.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=db.echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": db.sqlite_busy_timeout_ms / 1000},
        )
        _prepare_sqlite(engine, db.sqlite_busy_timeout_ms)
        return engine
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        echo=db.echo,
        # Bound values (token digests, e-mail addresses) never appear in exception messages or logs.
        hide_parameters=True,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        # A dead connection (database restarted) is noticed and replaced instead of failing a request.
        pool_pre_ping=True,
        pool_timeout=db.connect_timeout_s,
        connect_args={"connect_timeout": db.connect_timeout_s},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (views render after the commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


def is_sqlite(session_or_engine: Session | Engine) -> bool:
    """True when talking to SQLite (some statements differ: SKIP LOCKED, advisory locks)."""
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "sqlite"


@contextmanager
def session_scope(factory: Callable[[], Session]) -> Iterator[Session]:
    """A session committed when the block succeeds, rolled back otherwise, and always closed
    (for work outside a request: CLI commands, the dispatcher, the demo)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
