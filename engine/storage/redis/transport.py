"""Events and worker commands carried between engine processes by Redis pub/sub."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .connection import SharedConnection

#: Starts a message that carries several payloads, each after its length (4 bytes, big-endian).
BATCH_MARK = b"\x1eavtomatika-batch\n"


def pack_batch(payloads: list[bytes]) -> bytes:
    """Payloads as one message; a single one is sent as it is (unless it could be taken for a batch)."""
    if len(payloads) == 1 and not payloads[0].startswith(BATCH_MARK):
        return payloads[0]
    return BATCH_MARK + b"".join(len(payload).to_bytes(4, "big") + payload for payload in payloads)


def unpack_batch(message: bytes) -> Iterator[bytes]:
    """The payloads of a message built by :func:`pack_batch`."""
    if not message.startswith(BATCH_MARK):
        yield message
        return
    at = len(BATCH_MARK)
    while at < len(message):
        size = int.from_bytes(message[at : at + 4], "big")
        yield message[at + 4 : at + 4 + size]
        at += 4 + size


class RedisEvents:
    """Carries the engine's events between the processes sharing one Redis, by pub/sub.

    Delivery is at most once: a process that is not subscribed at the moment (starting, reconnecting)
    misses what is published meanwhile, and a process sends nothing while no other listens (see
    ``EventBus``). History does not depend on it: each process records its own events. A batch is
    published as one message (:func:`pack_batch`), which costs Redis and every subscriber one
    message instead of one per event.

    Args:
        redis_client: The client to subscribe with (and to publish with, without ``connection``).
        channel: The pub/sub channel (``keys.EVENTS`` under the storage's namespace).
        connection: The storage's shared connection, to publish with.
        announce: A payload published each time this process subscribes: the events channel's
            :data:`~avtomatika.events.LISTENING`, so that engines sending no events (none listened)
            start again at once.
    """

    def __init__(
        self,
        redis_client: aioredis.Redis,
        channel: str,
        connection: SharedConnection | None = None,
        *,
        announce: bytes | None = None,
    ) -> None:
        self.redis = redis_client
        self.channel = channel
        self.connection = connection
        #: Published once this process listens (each time it subscribes again), with a token of this
        #: transport's after it, by which it leaves its own out of what it hears: see ``listeners``.
        self.announce = announce
        self._own_announcement = announce + uuid.uuid4().hex.encode() if announce is not None else None
        self._subscribed = False

    async def publish_events(self, payloads: list[bytes]) -> None:
        """Publish a batch of serialized events in one message."""
        if not payloads:
            return
        message = pack_batch(payloads)
        if self.connection is not None:
            await self.connection.execute("PUBLISH", self.channel, message)
        else:
            await self.redis.publish(self.channel, message)

    async def listen_events(self) -> AsyncIterator[bytes]:
        """Every event published from now on, until the connection fails (the caller reconnects)."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self._subscribed = True
            if self._own_announcement is not None:
                await self.publish_events([self._own_announcement])
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    for payload in unpack_batch(message["data"]):
                        if payload != self._own_announcement:
                            yield payload
        finally:
            self._subscribed = False
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1

    async def listeners(self) -> int:
        """How many other processes are subscribed to the channel now (``PUBSUB NUMSUB``)."""
        reply = await self.redis.pubsub_numsub(self.channel)
        subscribed = int(reply[0][1]) if reply else 0
        return max(0, subscribed - 1) if self._subscribed else subscribed
