"""SQLite transactions queue for the database file (``security.sqlite_writers``) instead of polling for it.

Threads of one process take turns on a thread lock, processes on a ``flock`` of ``<database>-writers``;
a transaction leaves the queue when it commits, rolls back or its connection closes, a process that dies
leaves nothing locked, a forked worker queues on its own, and waiting for this process's other
transactions is bounded by ``busy_timeout`` (a database error, as SQLite's own wait gives). These tests
use their own SQLite files, whatever database the suite runs on.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from security.config import load_settings
from security.db import make_engine
from security.sqlite_writers import LOCK_FILE_SUFFIX, WriterQueueTimeout, queue_for

# Long enough that nothing here waits for it unless the test means it to.
PATIENCE_S = 10.0
# How long a waiter is given to show it is (wrongly) not waiting.
GRACE_S = 0.3


def sqlite_engine(path: Path, busy_timeout_ms: int = 15_000) -> Engine:
    settings = load_settings("testing", {"database": {"url": f"sqlite:///{path}", "auto_migrate": False,
                                                      "sqlite_busy_timeout_ms": busy_timeout_ms}})
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS marks (n INTEGER)"))
    return engine


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(db_path)
    yield engine
    engine.dispose()


def write_in_thread(engine: Engine, n: int) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """Start a thread that writes one mark; the event is set once its transaction has begun."""
    begun = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with engine.begin() as conn:
                begun.set()
                conn.execute(text("INSERT INTO marks VALUES (:n)"), {"n": n})
        except BaseException as error:
            errors.append(error)
            begun.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, begun, errors


def write_at_once(engine: Engine, n: int) -> None:
    """A transaction of another thread begins and commits without waiting out ``PATIENCE_S``."""
    thread, begun, errors = write_in_thread(engine, n)
    assert begun.wait(PATIENCE_S)
    thread.join(PATIENCE_S)
    assert not thread.is_alive() and errors == []


def marks(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT n FROM marks ORDER BY rowid"))]


def test_a_second_thread_begins_when_the_first_commits(engine: Engine, db_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO marks VALUES (1)"))
        thread, begun, errors = write_in_thread(engine, 2)
        assert not begun.wait(GRACE_S), "a second transaction began while the first held the database"
    assert begun.wait(PATIENCE_S)
    thread.join(PATIENCE_S)
    assert errors == []
    assert marks(engine) == [1, 2]
    assert Path(str(db_path) + LOCK_FILE_SUFFIX).exists()


def test_rollback_and_a_closed_connection_leave_the_queue(engine: Engine) -> None:
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO marks VALUES (1)"))
    conn.rollback()
    write_at_once(engine, 2)

    conn.begin()
    conn.execute(text("INSERT INTO marks VALUES (3)"))
    conn.close()  # returned to the pool mid-transaction: rolled back
    write_at_once(engine, 4)
    assert marks(engine) == [2, 4]


def test_a_transaction_ended_from_another_thread_leaves_the_queue(engine: Engine) -> None:
    """The pool may roll a connection back in another thread than the one that began its transaction (the
    garbage collector returning a forgotten connection): the queue is released all the same."""
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO marks VALUES (1)"))
    closer = threading.Thread(target=conn.close)  # returned to the pool mid-transaction: rolled back
    closer.start()
    closer.join(PATIENCE_S)
    write_at_once(engine, 2)
    with engine.begin() as again:  # and this thread, which began the first transaction, is not its holder
        again.execute(text("INSERT INTO marks VALUES (3)"))
    assert marks(engine) == [2, 3]


def test_a_failed_commit_rolls_back_and_leaves_the_queue(engine: Engine) -> None:
    """A COMMIT that fails leaves SQLite's transaction open, and SQLAlchemy never rolls it back (it counts
    the transaction as ended, and its pool skips the rollback on return): the connection rolls it back
    itself, so neither its lock nor the queue stays taken."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE parents (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE children (parent INTEGER REFERENCES parents (id) "
                          "DEFERRABLE INITIALLY DEFERRED)"))
    with engine.connect() as conn:
        conn.begin()
        conn.execute(text("INSERT INTO marks VALUES (1)"))
        conn.execute(text("INSERT INTO children VALUES (1)"))  # checked at COMMIT: fails there
        with pytest.raises(IntegrityError):
            conn.commit()
        assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        thread, begun, errors = write_in_thread(engine, 2)
        assert begun.wait(PATIENCE_S)
        thread.join(PATIENCE_S)
    assert errors == [] and marks(engine) == [2]


def test_waiting_for_this_processs_transactions_is_bounded_by_busy_timeout(db_path: Path) -> None:
    engine = sqlite_engine(db_path, busy_timeout_ms=200)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO marks VALUES (1)"))
            started = time.monotonic()
            thread, begun, errors = write_in_thread(engine, 2)
            thread.join(PATIENCE_S)
            waited = time.monotonic() - started
        assert len(errors) == 1 and isinstance(errors[0], OperationalError)
        assert isinstance(errors[0].orig, WriterQueueTimeout)
        assert "database is locked" in str(errors[0])
        assert 0.2 <= waited < PATIENCE_S
        # The one that timed out holds nothing: the next transaction goes ahead at once.
        write_at_once(engine, 3)
        assert marks(engine) == [1, 3]
    finally:
        engine.dispose()


def test_a_failed_begin_leaves_the_queue(db_path: Path) -> None:
    engine = sqlite_engine(db_path, busy_timeout_ms=100)
    outsider = sqlite3.connect(db_path, isolation_level=None)  # does not queue: meets SQLite's busy wait
    try:
        outsider.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"), engine.begin():
            pass
        outsider.execute("ROLLBACK")
        write_at_once(engine, 1)
    finally:
        outsider.close()
        engine.dispose()


def test_a_second_connection_in_the_same_thread_fails_instead_of_hanging(db_path: Path) -> None:
    engine = sqlite_engine(db_path, busy_timeout_ms=100)
    try:
        with engine.begin() as first:
            first.execute(text("INSERT INTO marks VALUES (1)"))
            with pytest.raises(OperationalError, match="database is locked"), engine.begin():
                pass
        assert marks(engine) == [1]
    finally:
        engine.dispose()


HOLDER = """
import sys, time
from security.sqlite_writers import queue_for
queue_for(sys.argv[1]).take(10.0)
print("held", flush=True)
time.sleep(60)
"""


def test_another_process_waits_and_a_killed_holder_releases(engine: Engine, db_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent.parent)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        thread, begun, errors = write_in_thread(engine, 1)
        assert not begun.wait(GRACE_S), "a transaction began while another process held the database"
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
        assert begun.wait(PATIENCE_S)
        thread.join(PATIENCE_S)
        assert errors == [] and marks(engine) == [1]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def _child_takes(path: str, result: multiprocessing.Queue[str]) -> None:
    queue = queue_for(path)
    taken = threading.Event()
    threading.Thread(target=lambda: (queue.take(PATIENCE_S), taken.set()), daemon=True).start()
    result.put("waited" if not taken.wait(GRACE_S) else "did not wait")
    result.put("taken" if taken.wait(PATIENCE_S) else "never taken")


@pytest.mark.skipif(sys.platform != "linux", reason="fork-based worker start is what gunicorn does on Linux")
def test_a_forked_worker_queues_on_its_own(db_path: Path) -> None:
    """A child forked while its parent holds the queue (gunicorn forks its workers) must not inherit the
    parent's turn: it waits for the parent's transaction like any other process."""
    queue = queue_for(str(db_path))
    queue.take(PATIENCE_S)
    context = multiprocessing.get_context("fork")
    result: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_child_takes, args=(str(db_path), result))
    try:
        child.start()
        assert result.get(timeout=PATIENCE_S) == "waited"
    finally:
        queue.release()
    assert result.get(timeout=PATIENCE_S) == "taken"
    child.join(PATIENCE_S)
    assert child.exitcode == 0


def test_every_engine_of_one_file_shares_the_queue(db_path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert queue_for(str(db_path)) is queue_for(db_path.name)
    assert queue_for(str(db_path)) is not queue_for(str(tmp_path / "other.sqlite3"))
