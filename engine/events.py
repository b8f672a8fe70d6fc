"""Typed events: every change the engine makes is published once, after it is committed.

Subscribers (history writer, metrics, the studio's SSE streams, notebook widgets) register a
callback; callbacks must be quick and must not raise (hand work to a queue of your own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .models import now

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    JOB_CREATED = "job_created"
    STATE_ENTERED = "state_entered"
    STEP_FINISHED = "step_finished"
    TASK_DISPATCHED = "task_dispatched"
    TASK_TAKEN = "task_taken"
    TASK_PROGRESS = "task_progress"
    TASK_RESULT = "task_result"
    TASK_RETRY = "task_retry"
    HANDLER_RETRY = "handler_retry"
    JOB_WAITING = "job_waiting"
    JOB_QUARANTINED = "job_quarantined"
    JOB_RELEASED = "job_released"
    JOB_RETRIED = "job_retried"
    JOB_FINISHED = "job_finished"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    WORKER_REGISTERED = "worker_registered"
    WORKER_EXPIRED = "worker_expired"


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


Subscriber = Callable[[Event], None]


class EventBus:
    """In-process publish/subscribe."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every event from now on; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s", callback, event.kind)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)
