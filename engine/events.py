"""Typed events: every change the engine makes is published once, after it is committed.

Subscribers (history writer, metrics, the studio's SSE streams, notebook widgets) register a
callback; callbacks must be quick and must not raise (hand work to a queue of your own).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .event_kinds import EventKind  # re-exported: the place to import it from
from .models import now

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Event:
    """One thing that happened. ``data`` carries the kind-specific details (task ids, errors...)."""

    kind: EventKind
    job_id: str | None = None
    blueprint: str | None = None
    state: str | None = None
    status: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "job_id": self.job_id,
            "blueprint": self.blueprint,
            "state": self.state,
            "status": self.status,
            "data": self.data,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            EventKind(data["kind"]),
            data.get("job_id"),
            data.get("blueprint"),
            data.get("state"),
            data.get("status"),
            data.get("data") or {},
            data.get("at") or now(),
        )


def task_taken(job_id: str, state: str, task_id: str, task_type: str, worker_id: str, attempt: int, at: float) -> Event:
    """A worker took a task; storage records it with the take (Redis builds the same in its take script)."""
    data = {"task_id": task_id, "task_type": task_type, "worker_id": worker_id, "attempt": attempt}
    return Event(EventKind.TASK_TAKEN, job_id=job_id, state=state, data=data, at=at)


def task_progress(job_id: str, state: str, task_id: str, progress: float | None, message: str | None) -> Event:
    """A worker reported how far it is with a task."""
    data = {"task_id": task_id, "progress": progress, "message": message}
    return Event(EventKind.TASK_PROGRESS, job_id=job_id, state=state, data=data)


def task_result(
    job_id: str, state: str, task_id: str, task_type: str, result: dict[str, Any], worker_id: str, queued_at: float
) -> Event:
    """A worker answered a task (the status the job moved to is set when the answer is committed)."""
    data = {
        "task_id": task_id,
        "task_type": task_type,
        "result": result,
        "worker_id": worker_id,
        "queued_at": queued_at,
    }
    return Event(EventKind.TASK_RESULT, job_id=job_id, state=state, data=data)


def job_rerun(job_id: str, rerun_job_id: str, state: str, **by: Any) -> Event:
    """A job was rerun: ``rerun_job_id`` started at ``state`` with its data there; ``by``: who asked."""
    return Event(EventKind.JOB_RERUN, job_id=job_id, data={"rerun_job_id": rerun_job_id, "state": state, **by})


def worker_registered(worker_id: str, supported_tasks: list[str]) -> Event:
    return Event(EventKind.WORKER_REGISTERED, data={"worker_id": worker_id, "supported_tasks": supported_tasks})


def worker_expired(worker_id: str, task_ids: list[str]) -> Event:
    """A worker stopped heart-beating; ``task_ids``: its unanswered tasks, handed on."""
    return Event(EventKind.WORKER_EXPIRED, data={"worker_id": worker_id, "task_ids": task_ids})


Subscriber = Callable[[Event], None]


class EventTransport(Protocol):
    """Carries events between engine processes that share live state (Redis pub/sub).

    ``listen_events`` sends :data:`LISTENING` once it listens; ``listeners`` counts the other
    processes listening now.
    """

    async def publish_events(self, payloads: list[bytes]) -> None: ...

    def listen_events(self) -> AsyncIterator[bytes]: ...

    async def listeners(self) -> int: ...


#: Events waiting to be sent to other processes; past this, the oldest are dropped (and counted).
OUTBOX_LIMIT = 100_000
#: Least time between two sends of this process's events to the others: what comes meanwhile goes in
#: one message (with Redis, one PUBLISH for several commits rather than one each), at most this late.
SHARE_EVERY_S = 0.005
#: How often a process asks whether another listens to its events (while none does, it sends none).
LISTENERS_EVERY_S = 1.0
#: What a process sends (followed by a token of its own) once it listens to the others' events: those
#: sending none start at once.
LISTENING = b"\x1eavtomatika-listening:"


class EventBus:
    """Publish/subscribe within this process and, with a transport, across engine processes.

    A subscriber sees this process's events, and with ``remote=True`` (the default) those of every
    other process sharing the transport too. Writers that must see each event once across all
    processes (history, counters) subscribe with ``remote=False``: each process writes its own.
    """

    def __init__(self, origin: str | None = None) -> None:
        self.origin = origin or uuid.uuid4().hex
        # How this process's payloads end ("origin" is their last key, see publish).
        self._own_suffix = orjson.dumps({"origin": self.origin})[1:]
        self._local: list[Subscriber] = []
        self._everything: list[Subscriber] = []
        #: Both lists in the order events reach them (local ones first), for publish: one loop.
        self._subscribers: tuple[Subscriber, ...] = ()
        self._outbox: deque[bytes] = deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._transport: EventTransport | None = None
        #: Whether another process listens to this one's events (unknown: yes). While none does (an
        #: engine alone on its Redis), events are neither serialised nor sent: no other engine's
        #: waiting clients, studio pages or widgets are there to want them.
        self._shared = True
        self._joined = 0  # LISTENING messages received
        self.dropped = 0

    def subscribe(self, callback: Subscriber, *, remote: bool = True) -> Callable[[], None]:
        """Call ``callback`` with every event from now on; returns a function that unsubscribes."""
        target = self._everything if remote else self._local
        target.append(callback)
        self._subscribers = (*self._local, *self._everything)

        def unsubscribe() -> None:
            if callback in target:
                target.remove(callback)
                self._subscribers = (*self._local, *self._everything)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver ``event`` here, and queue it for the other processes when there is a transport."""
        self._deliver(event, self._subscribers)
        if self._transport is not None and self._shared:
            if len(self._outbox) == self._outbox.maxlen:
                self.dropped += 1
            self._outbox.append(orjson.dumps({**event.to_dict(), "origin": self.origin}))
            self._outbox_ready.set()

    def _deliver(self, event: Event, subscribers: Sequence[Subscriber]) -> None:
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s", callback, event.kind)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._local or self._everything)

    async def run_transport(self, transport: EventTransport) -> None:
        """Send this process's events and deliver the others' until cancelled."""
        self._transport = transport
        self._shared = True
        try:
            await asyncio.gather(self._send_outbox(transport), self._receive(transport), self._watch(transport))
        finally:
            self._transport = None

    async def _send_outbox(self, transport: EventTransport) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 500))]
                try:
                    await transport.publish_events(batch)
                except Exception as exc:
                    logger.warning("could not share %d events with other engines: %s", len(batch), exc)
                    self._outbox.extendleft(reversed(batch))
                    await asyncio.sleep(1.0)
            await asyncio.sleep(SHARE_EVERY_S)

    async def _receive(self, transport: EventTransport) -> None:
        while True:
            try:
                async for payload in transport.listen_events():
                    if payload.endswith(self._own_suffix):
                        continue  # our own event coming back: not even parsed
                    if payload.startswith(LISTENING):
                        self._joined += 1
                        self._shared = True
                        continue
                    data = orjson.loads(payload)
                    if data.get("origin") != self.origin:
                        self._deliver(Event.from_dict(data), self._everything)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("lost the event stream of other engines (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _watch(self, transport: EventTransport) -> None:
        """Whether another process listens, at once and then every :data:`LISTENERS_EVERY_S`; a
        process that starts listening says so (:data:`LISTENING`), and wins over an answer asked before."""
        while True:
            joined = self._joined
            try:
                others = await transport.listeners()
            except Exception as exc:
                logger.debug("could not count the engines listening to events: %r", exc)
                others = 1  # unknown: keep sending
            if joined == self._joined:
                self._shared = others > 0
            await asyncio.sleep(LISTENERS_EVERY_S)
