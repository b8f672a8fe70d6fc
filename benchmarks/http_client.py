"""A lean HTTP/1.1 client for the harness: the load generator and the benchmark workers.

aiohttp's client costs 0.25-0.35 ms of CPU per request on the benchmark machine, about what the
engine spends answering one; the harness shares the CPUs with the engine, so it has to be lean (as
wrk is). A :class:`Connection` is one keep-alive TCP connection carrying one request at a time,
written as bytes by an :class:`asyncio.Protocol`. Responses are read by ``Content-Length``, which
aiohttp's server sends with every ``web.Response`` the engine answers (204 and 304 have no body).
Anything else (a chunked or close-delimited body, a malformed head, the connection closed or reset
before the whole response, no response within the timeout) raises :class:`HttpError` or
``TimeoutError`` and drops the connection: a workload fails clearly rather than hangs. The next
request opens a new connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import orjson

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_CONTENT_LENGTH = b"\r\ncontent-length:"
_NO_BODY = frozenset({204, 304})


class HttpError(Exception):
    """The response could not be read: malformed or unsupported, or the connection was lost."""


class Response(NamedTuple):
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Protocol(asyncio.Protocol):
    """Reads one response per request written; hands it (or the failure) to the request's future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Response] | None = None
        self._buffer = bytearray()
        self._status = 0
        self._length = -1  # body length once the head is read; -1 while reading the head
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f": {type(exc).__name__}: {exc}" if exc else ""
        self._settle(HttpError(f"connection closed before the response was complete{reason}"))

    def send(self, data: bytes, waiter: asyncio.Future[Response]) -> None:
        assert self.transport is not None
        assert self._waiter is None, "one request at a time"
        self._waiter = waiter
        self.transport.write(data)

    def abort(self, exc: Exception) -> None:
        """Fail the pending request (if any) and drop the connection."""
        self._settle(exc)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.abort(HttpError(f"unexpected bytes from the server: {data[:80]!r}"))
            return
        self._buffer += data
        try:
            if self._length < 0 and not self._read_head():
                return
            if len(self._buffer) >= self._length:
                self._complete()
        except (HttpError, ValueError) as exc:
            self.abort(exc if isinstance(exc, HttpError) else HttpError(f"malformed response head: {exc}"))

    def _read_head(self) -> bool:
        """Parse the status line and headers once they are all buffered; whether they were."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise HttpError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return False
        head = bytes(buffer[:end]).lower()
        del buffer[: end + 4]
        if not head.startswith(b"http/1."):
            raise HttpError(f"not an HTTP/1.x response: {head[:80]!r}")
        self._status = int(head[9:12])
        self._keep_alive = not head.startswith(b"http/1.0") and b"\r\nconnection: close" not in head
        self._length = 0 if self._status in _NO_BODY else _content_length(head, self._status)
        return True

    def _complete(self) -> None:
        if len(self._buffer) > self._length:
            raise HttpError(f"{len(self._buffer) - self._length} bytes after the response body")
        response = Response(self._status, bytes(self._buffer))
        self._buffer.clear()
        self._length = -1
        if not self._keep_alive:
            self.closed = True
            assert self.transport is not None
            self.transport.close()
        self._settle(response)

    def _settle(self, outcome: Response | Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if isinstance(outcome, Exception):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _content_length(head: bytes, status: int) -> int:
    start = head.find(_CONTENT_LENGTH)
    if start < 0:
        raise HttpError(f"HTTP {status} without Content-Length (chunked or close-delimited bodies unsupported)")
    stop = head.find(b"\r\n", start + len(_CONTENT_LENGTH))
    length = int(head[start + len(_CONTENT_LENGTH) : stop if stop >= 0 else None])
    if not 0 <= length <= MAX_BODY_BYTES:
        raise HttpError(f"Content-Length {length} out of range")
    return length


class Connection:
    """One keep-alive connection to ``base_url``; requests go one at a time, each bounded by a timeout.

    ``headers`` are sent with every request. A request's body (bytes, usually JSON) is sent with
    ``Content-Type: application/json``. A lost connection is reopened by the next request; a request
    that fails (timeout, cancellation, unreadable response) drops the connection it used.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host:port URLs are supported, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        lines = [f"Host: {parts.netloc}", *(f"{name}: {value}" for name, value in (headers or {}).items())]
        self._headers = "".join(f"{line}\r\n" for line in lines).encode("latin-1")
        self._protocol: _Protocol | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, timeout_s: float | None = None
    ) -> Response:
        head = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._headers
        if body is None:
            data = head + b"\r\n"
        else:
            data = head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        protocol = await self._open()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        timer = loop.call_later(self.timeout_s if timeout_s is None else timeout_s, _time_out, protocol, method, path)
        try:
            protocol.send(data, waiter)
            return await waiter
        except asyncio.CancelledError:
            protocol.abort(HttpError("request cancelled"))
            raise
        finally:
            timer.cancel()

    async def _open(self) -> _Protocol:
        if self._protocol is None or self._protocol.closed:
            loop = asyncio.get_running_loop()
            connecting = loop.create_connection(_Protocol, self.host, self.port)
            _, self._protocol = await asyncio.wait_for(connecting, self.timeout_s)
        return self._protocol

    def close(self) -> None:
        if self._protocol is not None and not self._protocol.closed:
            self._protocol.abort(HttpError("connection closed by the client"))
        self._protocol = None


def _time_out(protocol: _Protocol, method: str, path: str) -> None:
    protocol.abort(TimeoutError(f"{method} {path}: no response in time"))
