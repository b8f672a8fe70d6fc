"""Pub/sub wake-ups of this process's long polls (``take_task``) when any process queues a task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from . import keys
from .background import Backoff, cancel_and_wait, stop_if_cancelled

if TYPE_CHECKING:
    from .storage import RedisStorage

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Waiter:
    """One long poll waiting in this process."""

    topics: list[bytes]
    event: asyncio.Event
    #: Woken alone for one queued task (rather than with everyone): passes it on if it cannot take it.
    chosen: bool = False
    topic: bytes = b""


class TaskWakeups:
    """Wakes this process's long polls when any process queues a task they may take.

    One pub/sub subscription per process; each poll registers the topics it cares about
    (``t:<type>`` for its worker's task types, ``w:<worker id>`` for its inbox). A notification
    (one queued task) wakes one poll, in turn; if that one cannot take it (not eligible, or taken
    meanwhile elsewhere), it wakes the others once (:meth:`pass_on`), rather than every poll of the
    process reading the queues for every task.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self._waiters: dict[bytes, dict[Waiter, None]] = {}  # insertion order: who is woken next
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (once); waits briefly for the subscription so a task queued after is not missed."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="avtomatika-redis-wakeups")
        if not self._subscribed.is_set():
            with contextlib.suppress(TimeoutError):  # Redis down: polls fall back to re-checking
                async with asyncio.timeout(self.storage.recheck_s):
                    await self._subscribed.wait()

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await cancel_and_wait([listener])
        self._subscribed.clear()

    @contextlib.contextmanager
    def waiting(self, topics: list[bytes]) -> Iterator[Waiter]:
        waiter = Waiter(topics, asyncio.Event())
        for topic in topics:
            self._waiters.setdefault(topic, {})[waiter] = None
        try:
            yield waiter
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._waiters[topic]

    def _wake_one(self, topic: bytes) -> None:
        waiters = self._waiters.get(topic, {})
        for waiter in waiters:
            if not waiter.event.is_set():
                waiter.chosen, waiter.topic = True, topic
                waiter.event.set()
                del waiters[waiter]  # to the back of the line for this topic
                waiters[waiter] = None
                return

    def _wake_all(self, topics: Iterable[bytes]) -> None:
        for topic in topics:
            for waiter in self._waiters.get(topic, {}):
                waiter.event.set()

    def wake_everyone(self) -> None:
        """Wake every poll waiting in this process."""
        self._wake_all(list(self._waiters))

    def pass_on(self, woken: Waiter) -> None:
        """``woken`` was chosen for a task it did not take: wake every other poll for that topic."""
        self._wake_all([woken.topic])

    async def _listen(self) -> None:
        channel = self.storage.keys.key(keys.TASK_WAKE)
        backoff = Backoff()
        while True:
            pubsub = self.storage.redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                while (message := await pubsub.get_message(timeout=None)) is None or message["type"] != "subscribe":
                    stop_if_cancelled()
                self._subscribed.set()
                self.wake_everyone()  # whatever was published while we were not listening
                backoff.reset()
                while True:
                    stop_if_cancelled()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "message":
                        self._wake_one(message["data"])
            except (RedisError, OSError) as error:
                stop_if_cancelled()
                self._subscribed.clear()
                logger.warning("task wake-up subscription failed (%s); polls re-check meanwhile", error)
                await backoff.sleep()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
