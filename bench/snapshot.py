"""A copy of a benchmark database as it was seeded, so every run that reuses it starts from the same history.

The runs that reuse the big database instead of seeding it (``--sizes-only``, ``--compare-only``,
``--logins-only``, ``--reuse-big``) restore this copy first. Before they did, they measured whatever the
earlier runs had left: every load step adds about one event per account inside the features' recent
windows, and round 11 measured a reused 1M SQLite database 45% slower than a freshly seeded one with the
same code (bench/README.md, "What changed in round 11").

* PostgreSQL: the database ``<name>_seeded``, made and restored with ``CREATE DATABASE ... TEMPLATE``
  (``STRATEGY FILE_COPY``: a copy of the files, planner statistics included). Both need the source
  database to have no open sessions, so callers dispose of their engines first; a restore ends any session
  left on the database it replaces.
* SQLite: the file ``<database>.seeded``, written with SQLite's online backup, so the copy is consistent
  even if the database was opened in WAL mode; restored by copying it back (to a temporary name, then
  renamed over the database).

Seeding a database without saving a snapshot discards the old one (:func:`discard`), so a snapshot never
describes another seed or size than the database it restores. ``bench.run`` creates its PostgreSQL
databases with the same :func:`admin_session`, :func:`database_exists` and :func:`quote`.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import NullPool

from security.db import sqlite_file

SUFFIX: Final = "_seeded"


def _is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def _sqlite_files(url: URL) -> tuple[Path, Path]:
    file = sqlite_file(url)
    if file is None:
        raise ValueError(f"a snapshot needs a database file, not {url.render_as_string()}")
    database = Path(file)
    return database, database.with_name(database.name + ".seeded")


@contextmanager
def admin_session(url: URL) -> Iterator[Connection]:
    """An autocommit session on the server's ``postgres`` database (CREATE/DROP DATABASE need one)."""
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (database names are not bind parameters)."""
    return '"' + name.replace('"', '""') + '"'


def database_exists(conn: Connection, name: str) -> bool:
    """Whether the server has a database called ``name``."""
    return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None


def _copy_database(conn: Connection, source: str, target: str) -> None:
    conn.execute(text(f"DROP DATABASE IF EXISTS {quote(target)} WITH (FORCE)"))
    conn.execute(text(f"CREATE DATABASE {quote(target)} TEMPLATE {quote(source)} STRATEGY FILE_COPY"))


def exists(database_url: str) -> bool:
    """Whether a snapshot of ``database_url`` has been saved."""
    url = make_url(database_url)
    if _is_postgres(url):
        with admin_session(url) as conn:
            return database_exists(conn, f"{url.database}{SUFFIX}")
    return _sqlite_files(url)[1].exists()


def save(database_url: str) -> float:
    """Copy the database to its snapshot (replacing an older one); return the seconds it took."""
    url = make_url(database_url)
    started = time.monotonic()
    if _is_postgres(url):
        with admin_session(url) as conn:
            _copy_database(conn, str(url.database), f"{url.database}{SUFFIX}")
    else:
        database, copy = _sqlite_files(url)
        partial = copy.with_name(copy.name + ".partial")
        partial.unlink(missing_ok=True)
        source, target = sqlite3.connect(database), sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        partial.replace(copy)
    return round(time.monotonic() - started, 1)


def restore(database_url: str) -> float | None:
    """Replace the database with its snapshot; return the seconds it took, or None if there is none."""
    url = make_url(database_url)
    started = time.monotonic()
    if _is_postgres(url):
        with admin_session(url) as conn:
            if not database_exists(conn, f"{url.database}{SUFFIX}"):
                return None
            _copy_database(conn, f"{url.database}{SUFFIX}", str(url.database))
    else:
        database, copy = _sqlite_files(url)
        if not copy.exists():
            return None
        partial = database.with_name(database.name + ".partial")
        shutil.copyfile(copy, partial)
        for suffix in ("-wal", "-shm"):  # the snapshot is complete without them; stale ones would corrupt it
            database.with_name(database.name + suffix).unlink(missing_ok=True)
        partial.replace(database)
    return round(time.monotonic() - started, 1)


def discard(database_url: str) -> None:
    """Remove the snapshot of ``database_url`` if there is one."""
    url = make_url(database_url)
    if _is_postgres(url):
        with admin_session(url) as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote(f'{url.database}{SUFFIX}')} WITH (FORCE)"))
    else:
        _sqlite_files(url)[1].unlink(missing_ok=True)
