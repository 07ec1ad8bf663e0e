"""Fault injection for the outage tests: a TCP proxy that can be cut, and a SQLite lock holder."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine

BUFFER = 65536


class Outage(Protocol):
    """Something that can make the database unreachable for the app under test, and bring it back."""

    def down(self) -> None:
        """From now on the app cannot use the database (open connections included)."""
        ...

    def up(self) -> None:
        """The database is reachable again."""
        ...


def free_port_outside_ephemeral_range() -> int:
    """A free port below the kernel's ephemeral range.

    While the proxy is down, the app keeps connecting to its port; were that port in the ephemeral range, a
    connect could pick it as its own source port and "connect" to itself (TCP self-connect), squatting the
    port so that ``up()`` could not listen on it again.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(max(1025, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the proxy")


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database. ``down()`` refuses new connections and severs the open
    ones (as a crashed server or a cut network would); ``up()`` listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port_outside_ephemeral_range()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the port listening.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by down()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class SqliteLock:
    """SQLite has no server to stop: a writer holding an exclusive lock makes every transaction of the app
    wait its busy timeout and fail with "database is locked", which is the same outage for a client."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def down(self) -> None:
        connection = self.engine.connect()
        # The engine's "begin" hook already emitted BEGIN IMMEDIATE: the write lock is held from here on.
        connection.begin()
        connection.exec_driver_sql("UPDATE audit_head SET seq = seq WHERE id = 1")
        self._connection = connection

    def up(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.rollback()
            connection.close()
