"""benchmarks.http_client: the harness's lean HTTP/1.1 client against a scripted server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from benchmarks.http_client import Connection, HttpError

BIG = b"x" * 100_000


async def _answer(path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
    """Write the scripted response for ``path``; whether the connection stays open."""
    if path == "/echo":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    elif path == "/split":  # head and body in several segments
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"ngth: %d\r\n\r\n" % len(BIG) + BIG[:50_000])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(BIG[50_000:])
    elif path == "/204":
        writer.write(b"HTTP/1.1 204 No Content\r\nServer: t\r\n\r\n")
    elif path == "/404":
        writer.write(b'HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n{"error":"no"}')
    elif path == "/chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
    elif path == "/reset":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        writer.transport.abort()
        return False
    elif path == "/close":
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        return False
    elif path == "/garbage":
        writer.write(b"SSH-2.0-x\r\n\r\n")
    elif path == "/hang":
        await asyncio.sleep(5)
    await writer.drain()
    return True


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Handlers end quietly when the test is over (cancelled) or the client went away.
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        while request_line := await reader.readline():
            length = 0
            while (header := await reader.readline()) != b"\r\n":
                name, _, value = header.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if not await _answer(request_line.split()[1].decode(), body, writer):
                return
        writer.close()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await _serve(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        # Closed while the loop runs: a writer collected after the loop closed warns from __del__,
        # in whatever the next test happens to be doing.
        for writer in writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


async def test_keep_alive_requests_bodies_and_statuses(url: str) -> None:
    connection = Connection(url, {"X-Token": "t"}, timeout_s=2)
    assert (await connection.request("POST", "/echo", b'{"a":1}')).json() == {"a": 1}
    assert await connection.request("GET", "/204") == (204, b"")
    missing = await connection.request("GET", "/404")
    assert (missing.status, missing.json()) == (404, {"error": "no"})
    assert await connection.request("GET", "/split") == (200, BIG)
    connection.close()


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/chunked", HttpError, "without Content-Length"),
        ("/reset", HttpError, "connection closed"),
        ("/garbage", HttpError, "not an HTTP/1.x response"),
        ("/hang", TimeoutError, "no response in time"),
    ],
)
async def test_failures_raise_and_the_next_request_reconnects(
    url: str, path: str, error: type[Exception], message: str
) -> None:
    connection = Connection(url, timeout_s=0.5)
    with pytest.raises(error, match=message):
        await connection.request("GET", path)
    assert await connection.request("POST", "/echo", b"1") == (200, b"1")
    connection.close()


async def test_connection_close_and_cancellation_reconnect(url: str) -> None:
    connection = Connection(url, timeout_s=2)
    assert await connection.request("GET", "/close") == (200, b"ok")
    assert await connection.request("POST", "/echo", b"2") == (200, b"2")
    hanging = asyncio.ensure_future(connection.request("GET", "/hang"))
    await asyncio.sleep(0.05)
    hanging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging
    assert await connection.request("POST", "/echo", b"3") == (200, b"3")
    connection.close()


async def test_refused_connection_raises() -> None:
    with pytest.raises(ConnectionRefusedError):
        await Connection("http://127.0.0.1:1", timeout_s=1).request("GET", "/")
