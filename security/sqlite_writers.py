"""One SQLite transaction at a time, queued instead of polled (pure: no Flask, no SQLAlchemy).

Every transaction on SQLite begins with ``BEGIN IMMEDIATE`` (``security.db``), so SQLite lets one
transaction at a time run on a database file. A transaction that finds the file's write lock taken does
not wait in a queue: SQLite's busy handler sleeps and tries again, 1, 2, 5, 10 ... up to 100 ms between
tries, until ``busy_timeout``. Under load several threads of several gunicorn workers sleep at once, the
lock stands idle between a commit and the next waker's try, and an unlucky request waits seconds (measured
in ``bench/README.md``: p99 0.3-0.7 s, longest 2-3 s, with 2 workers x 4 threads).

:class:`WriterQueue` makes them queue instead. A transaction takes, in this order:

1. the process's own turn (a thread lock; the thread holding it may take it again), waiting at most
   ``busy_timeout``;
2. an exclusive ``flock`` on a lock file next to the database (``<database>-writers``), one per process,
   which the kernel hands to the next waiting process as soon as it is released;

and releases both when its connection commits, rolls back or closes. SQLite's own lock is then free
whenever ``BEGIN IMMEDIATE`` runs, except for programs that do not queue here (``sqlite3`` in a shell,
another program): those still meet the busy handler, as before.

Waiting for another process has no time limit, as PostgreSQL's row locks have none (no
``lock_timeout`` is set): a process holds the file lock only while one of its transactions runs, and the
kernel releases it when the process ends, however it ends (a crashed worker leaves nothing locked).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

#: Appended to the database file's path to name the lock file (SQLite itself adds ``-wal`` and ``-shm``).
LOCK_FILE_SUFFIX = "-writers"


class WriterQueueTimeout(sqlite3.OperationalError):
    """This process's other transactions held the database for longer than ``busy_timeout``."""


class WriterQueue:
    """The queue of one SQLite database file's transactions in this process (see the module docstring);
    :func:`queue_for` gives every engine of the same file the same one.

    ``take`` and ``release`` pair up per transaction; a thread may take it again while it holds it (a
    second connection in the same thread then waits for SQLite's own lock, as without the queue). The
    release may come from another thread than the take (a connection the garbage collector returns to the
    pool is rolled back wherever the collection runs), so the turn is a plain lock with its holder
    recorded, not a re-entrant lock that only its owner may release.
    """

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self.reset()

    def reset(self) -> None:
        """Forget every holder (a forked child: its parent's threads and open lock file are not its own)."""
        self._turn = threading.Lock()
        self._holder: int | None = None
        self._depth = 0
        self._fd: int | None = None

    def take(self, timeout_s: float) -> None:
        """Wait for this process's turn, then for the database's (raises :class:`WriterQueueTimeout`)."""
        me = threading.get_ident()
        if self._holder == me:  # only this thread sets or clears its own ident while holding the turn
            self._depth += 1
            return
        if not self._turn.acquire(timeout=timeout_s):
            raise WriterQueueTimeout("database is locked (this process's other transactions held it for "
                                     f"more than {timeout_s:g} s)")
        try:
            if self._fd is None:
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._turn.release()
            raise
        self._holder, self._depth = me, 1

    def release(self) -> None:
        """End one :meth:`take`."""
        self._depth -= 1
        if self._depth > 0:
            return
        self._holder = None
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._turn.release()


_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


def queue_for(database_path: str) -> WriterQueue:
    """This process's queue for the SQLite database file at ``database_path`` (one per file)."""
    lock_path = os.path.realpath(database_path) + LOCK_FILE_SUFFIX
    with _queues_lock:
        found = _queues.get(lock_path)
        if found is None:
            found = _queues[lock_path] = WriterQueue(lock_path)
        return found


def _after_fork_in_child() -> None:
    # flock is held per open file: a child (a gunicorn worker) must open the lock file anew, and starts
    # with no holder, whatever its parent's threads were doing.
    global _queues_lock  # noqa: PLW0603 - a fresh lock: the parent's may have been held at the fork
    _queues_lock = threading.Lock()
    for queue in _queues.values():
        queue.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


class QueuedConnection(sqlite3.Connection):
    """A pysqlite connection that leaves its :class:`WriterQueue` when its transaction ends.

    ``security.db`` takes the queue before ``BEGIN IMMEDIATE``; the queue is left after the ``COMMIT`` or
    ``ROLLBACK`` has run (so the next transaction does not find SQLite's lock still taken), and when the
    connection is closed or returned to the pool (which rolls back).
    """

    writer_queue: WriterQueue | None = None
    queue_timeout_s: float = 0.0
    _queued = False

    def enter_queue(self) -> None:
        """Take the queue for the transaction about to begin on this connection."""
        if self.writer_queue is not None and not self._queued:
            self.writer_queue.take(self.queue_timeout_s)
            self._queued = True

    def leave_queue(self) -> None:
        """Release the queue if this connection holds it (idempotent)."""
        if self._queued:
            self._queued = False
            assert self.writer_queue is not None  # noqa: S101 - only a queued connection is _queued
            self.writer_queue.release()

    def commit(self) -> None:
        try:
            super().commit()
        except BaseException:
            # A COMMIT that fails (a deferred constraint, a disk error) leaves SQLite's transaction open,
            # and SQLAlchemy, which counts the transaction as ended, never rolls it back (not even when the
            # pool takes the connection back): its lock would stay taken for every other connection.
            if self.in_transaction:
                super().rollback()
            raise
        finally:
            self.leave_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.leave_queue()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.leave_queue()
