"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for the load generator.

Why not httpx: on a 2-core machine the generator shares the CPU with the server, and httpx spends about
1.5 ms of CPU per request here; this client spends a fraction of that, so the server keeps more of the
machine and the cheap floor app is not penalised more than the service (which would flatter the ratio).
It speaks just enough HTTP for our two servers: POST with a JSON body, responses framed by
``Content-Length`` (what Flask under gunicorn sends), ``Connection: close`` honoured.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

HEADER_END = b"\r\n\r\n"
MAX_HEADER_BYTES = 65536


class HttpError(Exception):
    """Transport failure or an answer this client cannot frame."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class RawClient:
    """A pool of keep-alive connections to one host; ``post`` returns (status, body)."""

    def __init__(self, base_url: str, *, headers: dict[str, str], max_connections: int, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("only http://host:port base URLs are supported")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._timeout = timeout
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._fixed = f"Host: {parts.netloc}\r\n{extra}Content-Type: application/json\r\n"
        #: Idle kept-alive connections, taken oldest first: every connection gets its turn, so the load
        #: spreads over the server's workers the way the connections do (see :meth:`adopt`).
        self._idle: deque[Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        #: Requests re-sent because the server had closed an idle kept-alive connection (see ``post``).
        self.stale_retries = 0
        #: Connections opened because none was idle (beyond those given to :meth:`adopt`).
        self.opened_on_demand = 0

    @property
    def port(self) -> int:
        return self._port

    async def _connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return Connection(reader, writer)

    async def connect_with_port(self) -> tuple[Connection, int]:
        """A new connection (not pooled) and its local port, for :func:`bench.balance.balanced`."""
        connection = await self._connect()
        return connection, connection.writer.get_extra_info("sockname")[1]

    def adopt(self, connections: list[Connection]) -> None:
        """Pool these open connections (used in this order, then round and round)."""
        self._idle.extend(connections)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send one request; a request that met a connection the server had already closed is re-sent once.

        gunicorn closes kept-alive connections idle for longer than its ``keepalive``; a request written
        into such a socket gets an immediate EOF without a single response byte, and the server never
        read it (verified: none of those event ids was stored). Re-sending it on a fresh connection is
        what every HTTP client does for a stale pooled connection; anything else is an error.
        """
        async with self._slots:
            reused = bool(self._idle)
            if reused:
                connection = self._idle.popleft()
            else:
                self.opened_on_demand += 1
                connection = await self._connect()
            try:
                try:
                    result = await asyncio.wait_for(self._exchange(connection, path, body), self._timeout)
                except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                    never_answered = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                    if not (reused and never_answered):
                        raise
                    connection.close()
                    self.stale_retries += 1
                    connection = await self._connect()
                    result = await asyncio.wait_for(self._exchange(connection, path, body), self._timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError) as exc:
                connection.close()
                raise HttpError(repr(exc)) from exc
            status, payload, keep = result
            if keep:
                self._idle.append(connection)
            else:
                connection.close()
            return status, payload

    async def _exchange(self, connection: Connection, path: str, body: bytes) -> tuple[int, bytes, bool]:
        head = f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Length: {len(body)}\r\n\r\n"
        connection.writer.write(head.encode("latin-1") + body)
        await connection.writer.drain()
        raw = await connection.reader.readuntil(HEADER_END)
        if len(raw) > MAX_HEADER_BYTES:
            raise HttpError("response header too large")
        lines = raw[: -len(HEADER_END)].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
            elif name == "transfer-encoding":
                raise HttpError("chunked responses are not supported")
        if length is None:
            raise HttpError("response without Content-Length")
        payload = await connection.reader.readexactly(length)
        return status, payload, keep

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
