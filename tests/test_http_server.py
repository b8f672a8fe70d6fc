"""The engine's own HTTP server (``engine.start()``): protocol errors as JSON, slow clients cut.

Raw sockets to 127.0.0.1, since what is tested happens before aiohttp parses a request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from support.blueprints import API_BLUEPRINTS

from avtomatika import Config, OrchestratorEngine
from avtomatika.storage import MemoryStorage

SETTINGS: dict[str, Any] = {
    "CLIENT_TOKEN": None,
    "GLOBAL_WORKER_TOKEN": None,
    "CLIENTS_CONFIG_PATH": None,
    "WORKERS_CONFIG_PATH": None,
    "EXECUTOR_CONCURRENCY": 2,
    "LOG_FORMAT": "text",
}


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[OrchestratorEngine]:
    engine = OrchestratorEngine(MemoryStorage(), Config(**{**SETTINGS, **settings}))
    for blueprint in API_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    await engine.start("127.0.0.1", 0)
    try:
        yield engine
    finally:
        await engine.stop()


async def raw(engine: OrchestratorEngine, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; (status, headers, body) of the answer, read to the connection's end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",  # URL over the line limit
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",  # header too long
        b"GE<T / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # not a method
        b"GET /\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n",  # a NUL in the URL
        b"POST /api/v1/jobs/simple HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # TLS spoken to plain HTTP
    ],
    ids=["long-url", "long-header", "bad-method", "nul", "bad-chunk", "bad-version", "tls"],
)
async def test_protocol_errors_answer_json(request_bytes: bytes) -> None:
    async with serving() as engine:
        status, headers, body = await raw(engine, request_bytes)
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert isinstance(error, str)
    assert error
    assert "Traceback" not in error


async def test_half_sent_requests_are_cut_after_the_header_timeout() -> None:
    async with serving(HEADER_READ_TIMEOUT_SECONDS=0.3) as engine:
        connections = [await asyncio.open_connection("127.0.0.1", engine.port) for _ in range(50)]
        for i, (_, writer) in enumerate(connections):
            half = b"GET /_public/status HTTP/1.1\r\nHost: localhost\r\n" if i % 2 else b"GET /_pub"
            writer.write(half)
            await writer.drain()
        # The server closes every one of them: each read ends (no answer is owed to half a request).
        ends = await asyncio.gather(*(reader.read() for reader, _ in connections))
        assert all(b"200" not in end for end in ends)
        for _, writer in connections:
            writer.close()
        # A silent connection is cut the same way.
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.port)
        assert await reader.read() == b""
        writer.close()


async def test_a_request_that_arrived_is_not_cut_by_the_header_timeout() -> None:
    async with serving(HEADER_READ_TIMEOUT_SECONDS=0.2, WORKER_POLL_TIMEOUT_SECONDS=1.0) as engine:
        base = f"http://127.0.0.1:{engine.port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/_worker/workers/register", json={"worker_id": "w1"}) as registered:
                assert registered.status == 200
            # A long poll longer than the header timeout ends with its own 204.
            async with http.get(f"{base}/_worker/workers/w1/tasks/next") as polled:
                assert polled.status == 204
            # An event stream stays open past it, and carries what happens later.
            async with http.get(f"{base}/studio/live/jobs", headers={"Accept": "text/event-stream"}) as stream:
                assert stream.status == 200
                await asyncio.sleep(0.5)
                job = await engine.create_job("simple", {})
                seen = b""
                while job.id[:8].encode() not in seen:
                    seen += await stream.content.readany()
