"""Spreading the load generator's keep-alive connections evenly over a pre-fork server's workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator

import pytest

from bench.balance import balanced, owner_of
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
