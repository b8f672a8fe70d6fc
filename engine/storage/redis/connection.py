"""One connection per process for every command that answers at once: pipelined, replies in order.

redis-py hands each call a pooled connection and waits for the reply on it: about 100 µs of CPU per
command, most of a step's cost. Here every command issued in one turn of the event loop is written
at once on one connection, and each reply resolves its caller's future as it is parsed (hiredis): a
few µs per command, and fewer reads and writes for Redis too. Blocking reads (``XREADGROUP BLOCK``)
and pub/sub would hold the connection up, so they keep redis-py's pool.

The connection is opened by redis-py (TLS, authentication, database, Sentinel: whatever the client
was configured with), then its socket is read here. Commands whose connection is lost before they
are answered are sent again on a new one: the storage's scripts recognise a call applied twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Error replies by their first word; any other is a ResponseError.
_ERRORS: dict[str, type[ResponseError]] = {"NOSCRIPT": NoScriptError, "READONLY": ReadOnlyError}
#: What a command survives by being sent again on a new connection.
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)

Command = Sequence[Any]


@dataclass(slots=True)
class _Batch:
    """Commands sent together and the replies that came back for them so far."""

    future: asyncio.Future[list[Any]]
    count: int
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    """The socket of one connection: writes what was queued in a loop turn, parses replies in order."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer  # kept: collecting redis-py's StreamWriter would close the socket
        self.transport = writer.transport
        self.loop = asyncio.get_running_loop()
        self.parser = hiredis.Reader()
        self.waiting: deque[_Batch] = deque()
        self.outgoing: list[bytes] = []
        self.lost: Exception | None = None

    def send(self, commands: Iterable[Command]) -> asyncio.Future[list[Any]]:
        if self.lost is not None:
            raise RedisConnectionError(f"connection to Redis lost: {self.lost}")
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        count = len(self.outgoing)
        self.outgoing += (hiredis.pack_command(tuple(command)) for command in commands)
        batch = _Batch(self.loop.create_future(), len(self.outgoing) - count)
        self.waiting.append(batch)
        return batch.future

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.lost is None and outgoing:
            self.transport.write(b"".join(outgoing))

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            batch = self.waiting[0]
            batch.replies.append(_error(reply) if isinstance(reply, hiredis.ReplyError) else reply)
            if len(batch.replies) == batch.count:
                self.waiting.popleft()
                if not batch.future.done():  # its caller may have been cancelled
                    batch.future.set_result(batch.replies)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("closed by Redis")
        error = RedisConnectionError(f"connection to Redis lost: {self.lost}")
        while self.waiting:
            batch = self.waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)

    def close(self) -> None:
        self.transport.close()


def _error(reply: hiredis.ReplyError) -> RedisError:
    """The redis-py exception for an error reply (raised by ``execute_many``)."""
    message = str(reply)
    code = message.split(" ", 1)[0]
    if code == "LOADING":  # a ConnectionError to redis-py too: Redis is starting, try again
        return BusyLoadingError(message)
    return _ERRORS.get(code, ResponseError)(message)


class SharedConnection:
    """Commands of every caller of this process on one connection, each sent again if it was lost.

    Args:
        redis_client: Whose connection settings to use (its pool's connection class and arguments).
        retries: How many times a command is sent again on a new connection before it fails.
        backoff: The wait before each new attempt.
    """

    def __init__(
        self,
        redis_client: aioredis.Redis,
        retries: int,
        backoff: EqualJitterBackoff | None = None,
    ) -> None:
        self.redis = redis_client
        self.retries = retries
        self.backoff = backoff or EqualJitterBackoff(cap=1.0, base=0.05)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    async def execute(self, *command: Any) -> Any:
        """Send one command; its reply (raised if it is an error)."""
        return (await self.execute_many([command]))[0]

    async def execute_many(self, commands: Sequence[Command], again: Sequence[Command] | None = None) -> list[Any]:
        """Send commands back to back (no other caller's in between); their replies, in order.

        Every reply is awaited; then the first error among them, if any, is raised. ``again``: what
        to send instead once the commands' connection was lost (they may have run), if not the same.
        """
        if not commands:
            return []
        failures = 0
        while True:
            try:
                protocol = await self._connected()
                replies = await protocol.send(commands)
                for reply in replies:
                    if isinstance(reply, RedisError):
                        raise reply
                return replies
            except _LOST:  # BusyLoadingError too: a restarted Redis answers so until it has read its data
                failures += 1
                if failures > self.retries or self._closed:
                    raise
                await asyncio.sleep(self.backoff.compute(failures))
                commands = again or commands

    async def _connected(self) -> _Protocol:
        if self._closed:
            raise RedisConnectionError("the storage's connection to Redis is closed")
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:  # one connection attempt at a time, whoever asks
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        pool = self.redis.connection_pool
        connection = pool.make_connection()
        connection.retry = Retry(NoBackoff(), 0)  # retried by execute_many, with its backoff
        await connection.connect()
        # redis-py opened it (TLS, AUTH, SELECT...); from here on its socket is ours, not redis-py's.
        writer, connection._writer, connection._reader = connection._writer, None, None
        assert writer is not None
        protocol = _Protocol(writer)
        writer.transport.set_protocol(protocol)
        self._protocol = protocol
        return protocol

    def open(self) -> None:
        """Allow commands again after :meth:`close` (a connection is opened by the first one)."""
        self._closed = False

    async def close(self) -> None:
        """Close the connection; commands still waiting for a reply, and later ones, fail."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class Script:
    """A Lua script run by its SHA1, loaded again when Redis has forgotten it (a restart)."""

    def __init__(self, connection: SharedConnection, source: str) -> None:
        self.connection = connection
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any], again: Sequence[Any] | None = None) -> Any:
        """Run the script; ``again``: the arguments to send it instead once it may have run (its
        connection was lost before the reply, or Redis forgot the script, perhaps restarted after
        running it), if not the same."""
        again = args if again is None else again
        head = ("EVALSHA", self.sha, len(keys), *keys)
        try:
            return (await self.connection.execute_many([(*head, *args)], [(*head, *again)]))[0]
        except NoScriptError:
            return await self.connection.execute("EVAL", self.source, len(keys), *keys, *again)
