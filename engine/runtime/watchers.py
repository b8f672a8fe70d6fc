"""Clients that wait for a job instead of polling it (``GET /api/v1/jobs/{id}?wait_s=N``).

A waiting client costs one future in a dict keyed by its job: no coroutine of the engine's, no
executor slot, no storage connection. The engine's events (this process's, and with Redis every
engine's, through the one pub/sub connection the event bus already holds) wake the waiters of the
job they concern; each waiter then reads the job once and answers if what it waits for has happened.
Pub/sub may miss an event (an engine reconnecting to Redis), so a waiter also looks at the job every
``RECHECK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from enum import StrEnum

from ..events import Event, EventBus
from ..models import TERMINAL_STATUSES, Job

#: Longest a waiter goes without looking at its job (a missed event costs at most this).
RECHECK_S = 2.0


class Until(StrEnum):
    """What a waiting client waits for."""

    #: The job is finished, failed, cancelled or quarantined.
    TERMINAL = "terminal"
    #: The job's status or state differs from what it was when the client asked.
    CHANGE = "change"


class JobWatcher:
    """Wakes the clients waiting for a job when an event concerns it."""

    def __init__(self, bus: EventBus) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._ended = False
        bus.subscribe(self._on_event)

    @property
    def waiting(self) -> int:
        """Clients waiting now."""
        return sum(len(futures) for futures in self._waiting.values())

    def _on_event(self, event: Event) -> None:
        for future in self._waiting.get(event.job_id or "", ()):
            if not future.done():
                future.set_result(None)

    def end_waits(self) -> None:
        """Answer every waiting client now, with the job as it is (the engine is stopping)."""
        self._ended = True
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def reopen(self) -> None:
        """Let clients wait again (the engine is started again)."""
        self._ended = False

    async def wait(
        self, job: Job, wait_s: float, until: Until, read: Callable[[str], Awaitable[Job | None]]
    ) -> Job | None:
        """``job`` as it is once ``until`` holds, or after ``wait_s`` at the latest (None if it is gone)."""
        status, state = job.status, job.state
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_s
        current: Job | None = job
        while current is not None and not _happened(current, until, status, state):
            remaining = give_up_at - loop.time()
            if remaining <= 0 or self._ended:
                break
            future: asyncio.Future[None] = loop.create_future()
            waiters = self._waiting.setdefault(job.id, set())
            waiters.add(future)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, RECHECK_S)):
                        await future
            finally:
                waiters.discard(future)
                if not waiters:
                    self._waiting.pop(job.id, None)
            current = await read(job.id)
        return current


def _happened(job: Job, until: Until, status: str, state: str) -> bool:
    if until == Until.TERMINAL:
        return job.status in TERMINAL_STATUSES
    return (job.status, job.state) != (status, state)
