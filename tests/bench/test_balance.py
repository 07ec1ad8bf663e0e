"""Spreading the load generator's keep-alive connections evenly over a pre-fork server's workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from bench.balance import answered_by, balanced, owner_of, wait_for_every_worker
from bench.rawhttp import RawClient

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")

WORKERS = 2


@pytest.fixture
def prefork() -> Iterator[tuple[int, list[int]]]:
    """A listening socket shared by two forked workers that accept connections and hold them open,
    the way gunicorn's workers do; yields (port, worker pids)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            held = []
            try:
                while True:
                    connection, _ = listener.accept()
                    held.append(connection)
            finally:
                os._exit(0)
        pids.append(pid)
    try:
        yield listener.getsockname()[1], pids
    finally:
        listener.close()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_finds_which_worker_accepted_a_connection(prefork: tuple[int, list[int]]) -> None:
    port, workers = prefork

    async def scenario() -> tuple[int | None, int | None]:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        local = writer.get_extra_info("sockname")[1]
        owner = None
        for _ in range(500):
            owner = owner_of(local, port, workers)
            if owner is not None:
                break
            await asyncio.sleep(0.002)
        stranger = owner_of(local, port, [os.getpid()])  # this process holds only the client's end
        writer.close()
        return owner, stranger

    owner, stranger = asyncio.run(scenario())
    assert owner in workers
    assert stranger is None


def test_opens_connections_evenly_over_the_workers(prefork: tuple[int, list[int]]) -> None:
    port, workers = prefork

    async def still_open(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), 0.2) != b""
        except TimeoutError:
            return True  # nothing to read and no EOF: the worker still holds it

    async def scenario() -> tuple[list[bool], dict[int, int], int, int]:
        client = RawClient(f"http://127.0.0.1:{port}", headers={}, max_connections=8, timeout=5)
        found = await balanced(client.connect_with_port, 8, workers, port)
        for spare in found.surplus:
            spare.close()
        # Independent check of who holds what: when the first worker dies, exactly its connections close.
        os.kill(workers[0], signal.SIGKILL)
        alive = [await still_open(c.reader) for c in found.connections]
        client.adopt(found.connections)
        await client.aclose()
        return alive, found.per_worker, found.attempts, found.unplaced

    alive, per_worker, attempts, unplaced = asyncio.run(scenario())
    assert per_worker == {workers[0]: 4, workers[1]: 4}
    assert unplaced == 0
    assert attempts >= 8
    # Interleaved by worker (first, second, first, ...), so taking them in turn alternates the workers.
    assert alive == [False, True] * 4


def test_gives_up_after_the_attempt_limit_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that never gets a connection: the balancer stops at its limit, keeps what it has, and
    its report shows the uneven split instead of hiding it."""

    async def scenario() -> tuple[dict[str, object], int]:
        opened = 0

        async def connect() -> tuple[str, int]:
            nonlocal opened
            opened += 1
            return f"c{opened}", opened

        monkeypatch.setattr("bench.balance.owner_of", lambda *_: 101)  # every connection lands on 101
        found = await balanced(connect, 4, [101, 102], 8000, max_attempts=10)
        return found.report(), len(found.surplus)

    report, surplus = asyncio.run(scenario())
    assert report == {"connections_per_worker": [2, 0], "connect_attempts": 10, "unplaced": 0}
    assert surplus == 8


def _answer_http(listener: socket.socket, start_after_s: float) -> None:  # pragma: no cover - a child
    """A worker that starts accepting after ``start_after_s`` (a slow boot), answers one GET per
    connection with 200 and keeps the connection open, as a keep-alive server does."""
    time.sleep(start_after_s)
    held = []
    while True:
        connection, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = connection.recv(4096)
            if not chunk:
                break
            request += chunk
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        held.append(connection)


@pytest.fixture
def http_prefork() -> Iterator[Callable[[list[float]], tuple[int, list[int]]]]:
    """Start HTTP workers on one shared listening socket, one per boot delay given; yields the starter."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    pids: list[int] = []

    def start(delays: list[float]) -> tuple[int, list[int]]:
        for delay in delays:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    _answer_http(listener, delay)
                finally:
                    os._exit(0)
            pids.append(pid)
        return listener.getsockname()[1], list(pids)

    try:
        yield start
    finally:
        listener.close()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_answered_by_names_the_worker_that_answered(http_prefork) -> None:
    port, workers = http_prefork([0.0, 0.0])
    assert answered_by(port, workers) in workers
    assert answered_by(port, [os.getpid()]) is None  # not among the given workers


def test_waits_for_a_worker_that_boots_late(http_prefork) -> None:
    """The first worker answers at once; the second starts accepting 0.8 s later. Until then every
    connection lands on the first, so the wait must not end at the first answer."""
    port, workers = http_prefork([0.0, 0.8])
    started = time.monotonic()
    assert wait_for_every_worker(port, lambda: workers, 2, timeout_s=20) == workers
    assert time.monotonic() - started >= 0.7


def test_names_the_worker_that_never_answers(http_prefork) -> None:
    port, workers = http_prefork([0.0, 3600.0])
    with pytest.raises(TimeoutError) as raised:
        wait_for_every_worker(port, lambda: workers, 2, timeout_s=1.0)
    assert f"workers [{workers[1]}]" in str(raised.value)


def test_waits_until_the_server_has_all_its_workers(http_prefork) -> None:
    """Fewer worker processes than expected (the master has not forked them all yet) is not ready."""
    port, workers = http_prefork([0.0])
    with pytest.raises(TimeoutError, match="wanted 2"):
        wait_for_every_worker(port, lambda: workers, 2, timeout_s=0.5)
