"""Building blocks of a committed change: a job's next document plus what else must happen with it.

Every path that changes a job (a step, a worker's result, a timer, an operator) builds an
:class:`Outcome` with these helpers, so "fail", "quarantine", "move to a state" mean one thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .events import Event, EventKind
from .models import Job, JobStatus, Task, TaskStatus, new_id, now
from .storage.base import Commit


@dataclass(slots=True)
class Outcome:
    commit: Commit
    events: list[Event] = field(default_factory=list)
    cancel_on_workers: list[Task] = field(default_factory=list)  # assigned tasks to stop over WebSocket
    children: list[Job] = field(default_factory=list)  # sub-jobs to create once this is committed

    @property
    def job(self) -> Job:
        return self.commit.job


def event(kind: EventKind, job: Job, **data: Any) -> Event:
    return Event(kind, job.id, job.blueprint, job.state, job.status, data)


def dispatched(job: Job, task: Task) -> Event:
    """The event of a task queued (a first dispatch, a retry, a release)."""
    return event(
        EventKind.TASK_DISPATCHED,
        job,
        task_id=task.id,
        task_type=task.type,
        params=task.params,
        attempt=task.attempt,
        worker_id=task.worker_id,
        priority=task.priority,
    )


def move_to(job: Job, state: str, *, run: bool = True) -> Outcome:
    """The job enters ``state`` and is due to run its handler."""
    previous = job.state
    job.state = state
    job.status = JobStatus.RUNNING
    job.wait = None
    job.error = None
    job.handler_attempts = 0
    job.visits[state] = job.visits.get(state, 0) + 1
    return Outcome(Commit(job, run=run), [event(EventKind.STATE_ENTERED, job, previous=previous)])


def end(
    job: Job, status: JobStatus, reason: str | None, closing: list[Task] | None = None, held: list[str] | None = None
) -> Outcome:
    """The job stops in ``status`` (failed, quarantined, cancelled, finished).

    ``closing`` are the tasks it was waiting on: answered ones (status done) are closed as done,
    the others withdrawn, and workers running them asked to stop. A quarantined job names the
    tasks to dispatch again on release in ``wait.held_task_ids`` (``held``).
    """
    job.status = status
    job.error = reason
    closing = closing or []
    if status == JobStatus.QUARANTINED:
        job.wait = {**(job.wait or {"kind": "none"}), "held_task_ids": list(held or [])}
    else:
        job.wait = None
    kind = {
        JobStatus.FAILED: EventKind.JOB_FAILED,
        JobStatus.QUARANTINED: EventKind.JOB_QUARANTINED,
        JobStatus.CANCELLED: EventKind.JOB_CANCELLED,
        JobStatus.FINISHED: EventKind.JOB_FINISHED,
    }[status]
    commit = Commit(
        job,
        close_tasks={t.id: TaskStatus.DONE if t.status == TaskStatus.DONE else TaskStatus.WITHDRAWN for t in closing},
        cancel_timers=[f"retry_job:{job.id}", *(f"retry_task:{t.id}" for t in closing)],
    )
    assigned = [t for t in closing if t.status == TaskStatus.ASSIGNED]
    # created_at: any engine sharing the storage can time the job (orchestrator_job_duration_seconds).
    return Outcome(commit, [event(kind, job, error=reason, created_at=job.created_at)], assigned)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with a little jitter: base, 2 * base, 4 * base... capped at ``max_s``."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * (1 + random.random() * 0.1)


def next_attempt(task: Task, *, params: dict[str, Any] | None = None, delay_s: float = 0.0) -> Task:
    """A new task (new id, so late answers to the old one are refused) for another attempt."""
    return Task(
        id=new_id(),
        job_id=task.job_id,
        type=task.type,
        params=dict(task.params if params is None else params),
        transitions=task.transitions,
        priority=task.priority,
        timeout_s=task.timeout_s,
        strategy=task.strategy,
        requirements=task.requirements,
        max_cost=task.max_cost,
        aggregate_into=task.aggregate_into,
        state=task.state,
        attempt=task.attempt + 1,
        status=TaskStatus.RETRY_SCHEDULED if delay_s > 0 else TaskStatus.QUEUED,
        tracing_context=task.tracing_context,
        queued_at=now() + delay_s,
    )
