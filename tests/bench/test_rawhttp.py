"""The load generator's HTTP client: keep-alive reuse and the one safe retry on a stale connection."""

from __future__ import annotations

import asyncio

import pytest

from bench.rawhttp import HttpError, RawClient

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


async def _serve(handler: object) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def test_reuses_connections_and_resends_once_on_a_connection_the_server_closed() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        seen.append(await _read_request(reader))
        writer.write(RESPONSE)
        await writer.drain()
        writer.close()  # like gunicorn after its keep-alive timeout: the next request on it gets EOF

    async def scenario() -> tuple[list[int], int]:
        server, url = await _serve(handler)
        client = RawClient(url, headers={"Authorization": "Bearer k"}, max_connections=1, timeout=5)
        statuses = [(await client.post("/v1/x", b'{"n": 1}'))[0], (await client.post("/v1/x", b'{"n": 2}'))[0]]
        await client.aclose()
        server.close()
        await server.wait_closed()
        return statuses, client.stale_retries

    statuses, retries = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert retries == 1
    assert connections == 2
    # Each body reached the server exactly once, with the client's headers.
    assert [request.endswith(body) for request, body in zip(seen, (b'{"n": 1}', b'{"n": 2}'), strict=True)] == [
        True, True]
    assert all(b"Authorization: Bearer k" in request for request in seen)


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def scenario() -> int:
        server, url = await _serve(handler)
        client = RawClient(url, headers={}, max_connections=1, timeout=5)
        try:
            with pytest.raises(HttpError):
                await client.post("/v1/x", b"{}")
        finally:
            server.close()
            await server.wait_closed()
        return client.stale_retries

    assert asyncio.run(scenario()) == 0
