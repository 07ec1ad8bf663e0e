"""Database plumbing: declarative base, engine construction, session factory.

The web layer owns the transaction (one session per request, committed or rolled back by
``security.web.transaction``); services only add, flush and query.
"""

from __future__ import annotations

import json
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from psycopg.types.json import JsonBinaryLoader, JsonLoader
from sqlalchemy import ClauseElement, Dialect, Engine, Index, MetaData, Table, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

from security.config import Settings
from security.sqlite_writers import QueuedConnection, WriterQueue, WriterQueueTimeout, queue_for

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


def only_on(dialect: str, index: Index) -> Index:
    """``index`` exists on ``dialect``'s databases only (where the backends need different columns).

    ``ddl_if`` keeps it out of other backends' DDL; the ``info`` mark lets the migrations' model check
    (``migrations/env.py``) compare it only there, since Alembic does not read ``ddl_if``.
    """
    index.info["dialect"] = dialect
    return index.ddl_if(dialect=dialect)


def exists_on(item: Any, dialect: str) -> bool:
    """Whether a schema item of the models exists on ``dialect``'s databases (see :func:`only_on`)."""
    wanted = getattr(item, "info", {}).get("dialect")
    return wanted is None or wanted == dialect


def table_of(model: type[Base]) -> Table:
    """The ``Table`` a model is mapped to, typed as one (for Core statements on hot paths)."""
    return Base.metadata.tables[model.__tablename__]


def sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names, or None for an in-memory database."""
    return url.database if url.database and url.database != ":memory:" else None


def _prepare_sqlite(engine: Engine, busy_timeout_ms: int, queue: WriterQueue | None) -> None:
    """Make SQLite transactional the way the service needs.

    pysqlite's own transaction handling begins lazily and never for SAVEPOINT, so (per SQLAlchemy's
    documented recipe) we switch it off and emit ``BEGIN IMMEDIATE`` ourselves. IMMEDIATE takes the write
    lock up front, so two writers wait for each other instead of one failing with SQLITE_BUSY when it
    upgrades a read to a write. On a database file they wait in :mod:`security.sqlite_writers`'s queue
    (SQLite's own wait sleeps between tries and left requests waiting seconds under load), at most
    ``busy_timeout`` for this process's other transactions. WAL lets readers proceed meanwhile.
    """
    timeout_s = busy_timeout_ms / 1000

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.writer_queue = queue
        dbapi_connection.queue_timeout_s = timeout_s
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        try:
            dbapi_connection.enter_queue()
        except WriterQueueTimeout as error:
            raise OperationalError("BEGIN IMMEDIATE", None, error) from error
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.leave_queue()
            raise


def json_dumps(value: Any) -> str:
    """The text of a JSON column (features, rule results, payloads, stored answers: written with every
    scored event, where orjson takes a fraction of ``json.dumps``'s time). Integers beyond 64 bits, which
    orjson refuses, are written by ``json.dumps``; what neither can write raises ``TypeError`` as before.
    A NaN or infinite float becomes ``null`` (``json.dumps`` wrote ``NaN``, which ``jsonb`` refuses)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


class _OwnJsonLoader(JsonLoader):
    """PostgreSQL ``json`` values (not the tables' ``jsonb``) parsed with orjson (see ``OwnJSON``)."""

    _loads = staticmethod(orjson.loads)


class _OwnJsonBinaryLoader(JsonBinaryLoader):
    _loads = staticmethod(orjson.loads)


def _read_own_json_with_orjson(engine: Engine) -> None:
    """Parse ``json`` (not ``jsonb``) results with orjson on every connection of ``engine``.

    Every table stores ``jsonb``, read with ``json.loads`` as before (orjson would read a client's
    integer beyond 64 bits as a float). ``json`` values come only from queries that build them from
    Foxguard's own columns (:class:`security.types.OwnJSON`: the feature probe, read with every event).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.adapters.register_loader("json", _OwnJsonLoader)
        dbapi_connection.adapters.register_loader("json", _OwnJsonBinaryLoader)


def make_engine(settings: Settings) -> Engine:
    """Create the engine for ``settings.database``."""
    db = settings.database
    url = make_url(db.url)
    if url.get_backend_name() == "sqlite":
        database_file = sqlite_file(url)
        if database_file:
            Path(database_file).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=db.echo,
            hide_parameters=True,
            json_serializer=json_dumps,
            connect_args={"check_same_thread": False, "timeout": db.sqlite_busy_timeout_ms / 1000,
                          "factory": QueuedConnection},
        )
        # A "file:" URI names no plain path for the queue's lock file; such a database waits as SQLite does.
        queue = queue_for(database_file) if database_file and not database_file.startswith("file:") else None
        _prepare_sqlite(engine, db.sqlite_busy_timeout_ms, queue)
        return engine
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(
        url,
        echo=db.echo,
        # Bound values (token digests, e-mail addresses) never appear in exception messages or logs.
        hide_parameters=True,
        json_serializer=json_dumps,
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        pool_timeout=db.connect_timeout_s,
        connect_args={"connect_timeout": db.connect_timeout_s},
    )
    _ping_when_idle(engine)
    _read_own_json_with_orjson(engine)
    return engine


#: A pooled connection unused for longer than this is tested before a request gets it.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection before handing it out, unless it was in use within ``PING_AFTER_IDLE_S``.

    A dead connection (database restarted, a proxy's idle timeout) is then replaced instead of failing a
    request. ``pool_pre_ping`` would test every checkout: one more round trip per request under load, when
    every connection comes back within milliseconds and a failure is noticed anyway: the failing request
    answers 503 (nothing was written) and SQLAlchemy replaces every connection opened before it.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise DisconnectionError("the pooled connection is gone") from error  # the pool reconnects
            raise


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


class _Compiled:
    """A statement compiled for one dialect, with the type processing its executions need."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # noqa: S101 - Core SELECT/INSERT statements only
        if compiled.post_compile_params or compiled.literal_execute_params:
            # Their SQL is only final per execution (an IN list's length); session.execute handles them.
            raise ValueError("DriverStatement takes no expanding or literal-execute parameters")
        self.sql = str(compiled)
        # The statement's own values (limits, literals); named parameters come with each execution.
        self.defaults = {name: bind.effective_value for bind, name in compiled.bind_names.items() if not bind.required}
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        binds = ((name, bind.type.dialect_impl(dialect).bind_processor(dialect))
                 for bind, name in compiled.bind_names.items())
        self.binds: dict[str, Callable[[Any], Any]] = {name: fn for name, fn in binds if fn is not None}
        columns = tuple(getattr(statement, "selected_columns", ()))
        self.types = tuple(column.type.dialect_impl(dialect) for column in columns)
        self.row: type[tuple[Any, ...]] | None = (
            namedtuple("DriverRow", [column.key if isinstance(column.key, str) else f"_{i}"  # noqa: PYI024
                                     for i, column in enumerate(columns)], rename=True) if columns else None
        )
        self.results: list[tuple[int, Callable[[Any], Any]]] | None = None

    def parameters(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        for name, process in self.binds.items():
            merged[name] = process(merged[name])
        return merged if self.order is None else tuple(merged[name] for name in self.order)

    def result_processors(self, dialect: Dialect, cursor: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        if self.results is None:
            description = cursor.description
            found = ((i, kind.result_processor(dialect, description[i][1])) for i, kind in enumerate(self.types))
            self.results = [(i, fn) for i, fn in found if fn is not None]
        return self.results


class DriverStatement:
    """A Core statement run straight on the driver's cursor of the session's connection (hot paths only).

    ``session.execute`` spends ~0.2 ms of CPU per statement in SQLAlchemy's layers (ORM execution, the
    compiled cache, the execution context, result metadata), more than psycopg's own work for a short
    indexed query (measured ~0.31 vs ~0.07 ms for the feature probe). Here the statement is compiled once
    per dialect and each execution does only what SQLAlchemy would have done for it: pending ORM changes
    are flushed first (autoflush), the same bind and result type processors are applied, the engine's
    ``before_cursor_execute``/``after_cursor_execute`` listeners see the statement, and a driver error
    becomes the same SQLAlchemy exception (a lost connection is invalidated), so error handling, outage
    handling and statement counting see no difference. Bind parameters are by name, as with
    ``session.execute``; rows have the selected columns' keys as attributes.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    @property
    def statement(self) -> ClauseElement:
        """The Core statement (to compile or EXPLAIN it)."""
        return self._statement

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self._statement, dialect)
        return found

    def execute(self, session: Session, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Any]:
        """Run with ``values`` (a list of mappings: executemany); return the rows (none for DML)."""
        session.flush()
        connection = session.connection()
        dialect = connection.dialect
        compiled = self.compiled(dialect)
        many = not isinstance(values, Mapping)
        parameters: Any = (compiled.parameters(values) if isinstance(values, Mapping)
                           else [compiled.parameters(v) for v in values])
        sql = compiled.sql
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None  # noqa: S101 - a session connection in a transaction has one
        cursor = dbapi_connection.cursor()
        try:
            for before in connection.dispatch.before_cursor_execute:
                sql, parameters = before(connection, cursor, sql, parameters, None, many)
            try:
                if many:
                    cursor.executemany(sql, parameters)
                else:
                    cursor.execute(sql, parameters)
                rows = cursor.fetchall() if compiled.row is not None else []
                # The result types are read once (psycopg builds the description anew on every access).
                processors = compiled.result_processors(dialect, cursor) if rows else []
            except dialect.loaded_dbapi.Error as error:
                lost = dialect.is_disconnect(error, dbapi_connection, cursor)
                if lost:
                    connection.invalidate(error)
                raise DBAPIError.instance(sql, parameters, error, dialect.loaded_dbapi.Error,
                                          hide_parameters=True, dialect=dialect, ismulti=many,
                                          connection_invalidated=lost) from error
            for after in connection.dispatch.after_cursor_execute:
                after(connection, cursor, sql, parameters, None, many)
        finally:
            cursor.close()
        if not rows:
            return []
        make = compiled.row
        assert make is not None  # noqa: S101 - rows were only fetched for a statement with columns
        if not processors:
            return [make(*row) for row in rows]
        out = []
        for row in rows:
            values_ = list(row)
            for i, process in processors:
                values_[i] = process(values_[i])
            out.append(make(*values_))
        return out
