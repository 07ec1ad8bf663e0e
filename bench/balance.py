"""Open keep-alive connections spread evenly over gunicorn's workers (Linux, from /proc).

gunicorn's workers share one listening socket, and whichever worker wakes first accepts a new connection
and keeps it until it closes. A load generator with a handful of keep-alive connections can therefore
find most of them, and so most of the work, on one worker, whose Python runs one thread at a time: the
same code then measures 10-30% slower. :func:`balanced` connects, looks up which worker accepted each
connection (the server side's socket inode in ``/proc/net/tcp*``, found among the workers' open files),
and keeps connections until every worker holds the same number; the surplus is closed.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

C = TypeVar("C")

#: How long a new connection may wait for a worker to accept it before it counts as unplaced.
ACCEPT_WAIT_S = 2.0
ESTABLISHED = "01"


def server_side_inodes(server_port: int) -> dict[int, int]:
    """{client port: inode of the server's end} of the established TCP connections to ``server_port``."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == ESTABLISHED and int(local.rpartition(":")[2], 16) == server_port:
                found[int(remote.rpartition(":")[2], 16)] = int(inode)
    return found


def socket_owners(pids: Sequence[int]) -> dict[int, int]:
    """{socket inode: pid} for the sockets the processes ``pids`` hold open."""
    owners: dict[int, int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # the worker ended
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue  # closed while we looked
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def owner_of(client_port: int, server_port: int, workers: Sequence[int]) -> int | None:
    """The worker holding the server's end of the connection from ``client_port``, if one accepted it."""
    inode = server_side_inodes(server_port).get(client_port)
    return None if inode is None else socket_owners(workers).get(inode)


def answered_by(port: int, workers: Sequence[int], path: str = "/healthz") -> int | None:
    """GET ``path`` on a new keep-alive connection to 127.0.0.1:``port``: the worker that accepted it and
    answered 200, or None (no answer, another status, or the connection not found among ``workers``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ACCEPT_WAIT_S)
    try:
        connection.connect()
        local_port = connection.sock.getsockname()[1]
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:  # noqa: PLR2004 - HTTP OK
            return None
        return owner_of(local_port, port, workers)  # the server keeps the connection: still established
    except OSError:
        return None
    finally:
        connection.close()


def wait_for_every_worker(port: int, workers: Callable[[], list[int]], count: int, *, timeout_s: float,
                          path: str = "/healthz") -> list[int]:
    """Wait until ``count`` workers (``workers()`` lists their pids now) have each answered ``path`` on a
    connection it accepted itself, and return their pids.

    A pre-fork server answers as soon as its first worker is up, while the others may still be importing
    the app; connections opened then all land on the first one, so a load step would start unbalanced.
    Raises TimeoutError naming the workers that did not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    answered: set[int] = set()
    pids: list[int] = []
    while time.monotonic() < deadline:
        pids = workers()
        if len(pids) == count:
            owner = answered_by(port, pids, path)
            if owner is not None:
                answered.add(owner)
            if answered >= set(pids):
                return pids
        time.sleep(0.02)
    raise TimeoutError(f"workers {sorted(set(pids) - answered)} of {pids} (wanted {count}) did not answer "
                       f"{path} within {timeout_s:g} s")


@dataclass
class Balanced(Generic[C]):
    """Connections interleaved by worker (w1, w2, w1, w2, ...), and how they were obtained."""

    connections: list[C]
    per_worker: dict[int, int]
    attempts: int
    unplaced: int = 0
    surplus: list[C] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        return {"connections_per_worker": sorted(self.per_worker.values(), reverse=True),
                "connect_attempts": self.attempts, "unplaced": self.unplaced}


async def balanced(connect: Callable[[], Awaitable[tuple[C, int]]], count: int, workers: Sequence[int],
                   server_port: int, *, max_attempts: int | None = None) -> Balanced[C]:
    """``count`` connections (rounded up to a multiple of the number of workers) held evenly by
    ``workers``. ``connect`` opens one and returns it with its local port. Connections landing on a
    worker that has its share already are kept open until the end (closing them at once would let the
    same worker accept the next one from its backlog just as likely) and returned in ``surplus`` for the
    caller to close. Gives up after ``max_attempts`` connects (default 20 per connection wanted) with
    whatever it has; :meth:`Balanced.report` says how even that is."""
    share = math.ceil(count / len(workers))
    held: dict[int, list[C]] = {pid: [] for pid in workers}
    surplus: list[C] = []
    attempts = unplaced = 0
    limit = max_attempts if max_attempts is not None else 20 * share * len(workers)
    while any(len(mine) < share for mine in held.values()) and attempts < limit:
        attempts += 1
        connection, port = await connect()
        owner = None
        deadline = time.monotonic() + ACCEPT_WAIT_S
        while owner is None and time.monotonic() < deadline:
            owner = owner_of(port, server_port, workers)
            if owner is None:
                await asyncio.sleep(0.002)
        if owner is None:
            unplaced += 1
            surplus.append(connection)
        elif len(held[owner]) < share:
            held[owner].append(connection)
        else:
            surplus.append(connection)
    interleaved = [mine[i] for i in range(share) for mine in held.values() if i < len(mine)]
    return Balanced(interleaved, {pid: len(mine) for pid, mine in held.items()}, attempts, unplaced, surplus)
