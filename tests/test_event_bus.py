"""EventBus across processes: what a transport brings back is delivered once, never our own echo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from avtomatika import events
from avtomatika.events import LISTENING, Event, EventBus, EventKind


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

    async def listeners(self) -> int:
        return 1


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


class CountingTransport(LoopbackTransport):
    """Keeps what is published; says ``others`` processes listen, once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__([])
        self.sent: list[str] = []
        self.others = 0
        self.asked = 0
        self.answer = asyncio.Event()
        self.answer.set()

    async def publish_events(self, payloads: list[bytes]) -> None:
        self.sent += [orjson.loads(payload)["job_id"] for payload in payloads]

    async def listeners(self) -> int:
        self.asked += 1
        await self.answer.wait()
        return self.others


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@contextlib.asynccontextmanager
async def _running(bus: EventBus, transport: CountingTransport) -> AsyncIterator[None]:
    running = asyncio.create_task(bus.run_transport(transport))
    await asyncio.sleep(0)  # the bus has its transport
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_events_are_sent_only_while_another_process_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent until the first look finds no one listening; then none (not even serialised) until a
    process says it listens."""
    monkeypatch.setattr(events, "LISTENERS_EVERY_S", 0.01)
    bus, transport = EventBus(), CountingTransport()
    transport.answer.clear()
    async with _running(bus, transport):
        bus.publish(Event(EventKind.JOB_CREATED, "unknown yet"))  # while the first count is asked
        await _until(lambda: transport.sent == ["unknown yet"])
        transport.answer.set()
        await _until(lambda: transport.asked >= 2)  # the first answer (no one) is in
        bus.publish(Event(EventKind.JOB_CREATED, "alone"))
        transport.others = 1
        transport.queue.put_nowait(LISTENING)
        await _until(lambda: transport.queue.empty())
        bus.publish(Event(EventKind.JOB_CREATED, "listened to"))
        await _until(lambda: len(transport.sent) >= 2)
    assert transport.sent == ["unknown yet", "listened to"]


async def test_a_process_joining_while_the_count_is_asked_wins_over_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "LISTENERS_EVERY_S", 0.01)
    bus, transport = EventBus(), CountingTransport()
    transport.answer.clear()
    async with _running(bus, transport):
        await _until(lambda: transport.asked >= 1)  # asked before the other process subscribed
        transport.queue.put_nowait(LISTENING)
        await _until(lambda: transport.queue.empty())
        transport.answer.set()  # ... and the count, taken before, says no one
        transport.answer.clear()  # (the next count waits)
        asked = transport.asked
        await _until(lambda: transport.asked > asked)
        bus.publish(Event(EventKind.JOB_CREATED, "sent"))
        await _until(lambda: bool(transport.sent))
    assert transport.sent == ["sent"]
