"""Events and worker commands carried between engine processes by Redis pub/sub."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class RedisEvents:
    """Carries the engine's events between the processes sharing one Redis, by pub/sub.

    Delivery is at most once: a process that is not subscribed at the moment (starting, reconnecting)
    misses what is published meanwhile. History does not depend on it: each process records its own
    events.

    Args:
        redis_client: The client to publish and subscribe with.
        channel: The pub/sub channel (``keys.EVENTS`` under the storage's namespace).
    """

    def __init__(self, redis_client: aioredis.Redis, channel: str) -> None:
        self.redis = redis_client
        self.channel = channel

    async def publish_events(self, payloads: list[bytes]) -> None:
        """Publish a batch of serialized events in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish(self.channel, payload)
            await pipe.execute()

    async def listen_events(self) -> AsyncIterator[bytes]:
        """Every event published from now on, until the connection fails (the caller reconnects)."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    yield message["data"]
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
