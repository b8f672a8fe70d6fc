"""The storage contract: what the engine needs from live state, whatever keeps it.

Every method is atomic on its own: a backend shared by several engine processes (Redis) makes each
one a single transaction. ``commit`` is the heart of it: one step's whole outcome (the job's new
document, the tasks it queues or withdraws, the timers it sets or clears, whether it runs again)
lands at once or not at all, and only if nobody changed the job since it was read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import Job, Task, WorkerRecord


@dataclass(slots=True)
class Commit:
    """The outcome of one engine step, applied atomically by :meth:`Storage.commit`.

    ``tasks`` are stored, and queued when their status is ``queued`` (to their worker's inbox when
    ``worker_id`` is set). ``close_tasks`` end tasks: their worker's load and timeout are cleared.
    """

    job: Job
    run: bool = False
    tasks: Sequence[Task] = ()
    close_tasks: dict[str, str] = field(default_factory=dict)  # task id -> final TaskStatus
    timers: dict[str, float] = field(default_factory=dict)
    cancel_timers: Sequence[str] = ()
    clear_branches: bool = False


@dataclass(slots=True)
class JobFilter:
    status: str | None = None
    blueprint: str | None = None
    client: str | None = None
    state: str | None = None


class Storage(ABC):
    """Live state of jobs, task queues, timers and workers."""

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open connections; called by the engine on start."""

    async def close(self) -> None:
        """Release connections; called by the engine on stop."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    # -- jobs ------------------------------------------------------------------------------------
    @abstractmethod
    async def create_job(self, job: Job, *, run: bool = True) -> Job:
        """Store a new job (version 1) and, with ``run``, queue it to be stepped."""

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """The job as last committed, or None."""

    @abstractmethod
    async def commit(self, change: Commit) -> Job:
        """Apply ``change`` atomically if the stored version is still ``change.job.version``.

        Returns the stored job (version incremented). Raises ``VersionConflict`` otherwise.
        """

    @abstractmethod
    async def list_jobs(self, where: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        """Jobs matching ``where``, newest first."""

    @abstractmethod
    async def count_jobs(self) -> dict[tuple[str, str, str], int]:
        """Number of jobs by (blueprint, status, state)."""

    # -- the queue of jobs to step ---------------------------------------------------------------
    @abstractmethod
    async def take_runnable(self, timeout_s: float) -> str | None:
        """A job id due to be stepped, leased to this process; None after ``timeout_s``."""

    @abstractmethod
    async def ack_runnable(self, job_id: str) -> None:
        """The step of a job taken with :meth:`take_runnable` is committed; end its lease."""

    # -- tasks -----------------------------------------------------------------------------------
    @abstractmethod
    async def get_task(self, task_id: str) -> Task | None: ...

    @abstractmethod
    async def update_task(self, task_id: str, **changes: Any) -> Task | None:
        """Change fields of a live task (progress); None if it is gone."""

    @abstractmethod
    async def take_task(
        self,
        worker: WorkerRecord,
        timeout_s: float,
        deadline_for: Callable[[Task], float],
        eligible: Callable[[Task], bool],
    ) -> Task | None:
        """Give ``worker`` its next task, waiting up to ``timeout_s``.

        Tasks assigned to this worker come first, then the queues of its ``supported_tasks`` by
        priority (higher first), first in first out among equal priorities, skipping tasks it is
        not ``eligible`` for. The task is marked assigned and its timeout timer set atomically.
        """

    @abstractmethod
    async def queue_lengths(self) -> dict[str, int]:
        """Number of queued (not yet taken) tasks by task type."""

    @abstractmethod
    async def worker_load(self) -> dict[str, int]:
        """Number of tasks assigned to each worker and not yet answered."""

    # -- fan-in ----------------------------------------------------------------------------------
    @abstractmethod
    async def add_branch_result(self, job_id: str, task_id: str, result: dict[str, Any]) -> int:
        """Record one branch's result; returns how many branches have reported (atomically)."""

    @abstractmethod
    async def branch_results(self, job_id: str) -> dict[str, dict[str, Any]]: ...

    # -- timers ----------------------------------------------------------------------------------
    @abstractmethod
    async def pop_due_timers(self, at: float, limit: int = 100) -> list[str]:
        """Claim timers due at ``at``: each is returned to exactly one caller."""

    @abstractmethod
    async def next_timer_at(self) -> float | None: ...

    # -- workers ---------------------------------------------------------------------------------
    @abstractmethod
    async def save_worker(self, record: WorkerRecord) -> None: ...

    @abstractmethod
    async def get_worker(self, worker_id: str) -> WorkerRecord | None: ...

    @abstractmethod
    async def list_workers(self) -> list[WorkerRecord]: ...

    @abstractmethod
    async def pop_expired_workers(self, at: float) -> list[tuple[WorkerRecord, list[str]]]:
        """Claim workers expired at ``at`` with the ids of their unanswered tasks (one caller each)."""


def task_sort_key(task: Task, sequence: int) -> tuple[float, int]:
    """Queue order: higher priority first, then first in first out."""
    return (-task.priority, sequence)


def ids(tasks: Iterable[Task]) -> list[str]:
    return [t.id for t in tasks]
