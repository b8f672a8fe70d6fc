"""EventBus across processes: what a transport brings back is delivered once, never our own echo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

from avtomatika.events import Event, EventBus, EventKind


class LoopbackTransport:
    """A transport that hands every published payload back, plus those "other engines" sent."""

    def __init__(self, others: list[bytes]) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        for payload in others:
            self.queue.put_nowait(payload)

    async def publish_events(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.queue.put_nowait(payload)

    async def listen_events(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.queue.get()


async def test_other_engines_events_are_delivered_and_our_own_echo_is_not() -> None:
    bus = EventBus()
    other = orjson.dumps({**Event(EventKind.JOB_CREATED, "theirs").to_dict(), "origin": "another-engine"})
    transport = LoopbackTransport([other])
    seen: list[tuple[str | None, bool]] = []
    bus.subscribe(lambda e: seen.append((e.job_id, True)))  # remote too
    bus.subscribe(lambda e: seen.append((e.job_id, False)), remote=False)
    running = asyncio.create_task(bus.run_transport(transport))
    try:
        await asyncio.sleep(0)
        bus.publish(Event(EventKind.JOB_CREATED, "ours"))
        for _ in range(100):
            if transport.queue.empty() and len(seen) >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert sorted(seen, key=str) == sorted([("theirs", True), ("ours", False), ("ours", True)], key=str)


def test_local_subscribers_come_first_and_one_leaving_mid_delivery_leaves_the_others_theirs() -> None:
    bus = EventBus()
    seen: list[str] = []
    unsubscribe = bus.subscribe(lambda e: (seen.append("remote"), unsubscribe()))
    bus.subscribe(lambda e: seen.append("remote 2"))
    bus.subscribe(lambda e: seen.append("local"), remote=False)
    bus.publish(Event(EventKind.JOB_CREATED, "j"))
    bus.publish(Event(EventKind.JOB_CREATED, "j"))
    assert seen == ["local", "remote", "remote 2", "local", "remote 2"]
