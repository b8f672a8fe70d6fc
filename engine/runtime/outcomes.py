"""Building blocks of a committed change: a job's next document plus what else must happen with it.

Every path that changes a job (a step, a worker's result, a timer, an operator) builds a
:class:`~avtomatika.storage.Commit` with these helpers, so "fail", "quarantine", "move to a state"
mean one thing, and what follows from them (asking workers to stop, resuming a parent, cancelling a
sub-job) is part of the same atomic change, as timers due at once (see :mod:`avtomatika.timers`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..events import Event, EventKind
from ..models import Breakpoint, Job, JobStatus, Task, TaskStatus, new_id, now
from ..storage.base import Commit
from ..timers import TimerKind
from .breakpoints import held_wait

if TYPE_CHECKING:
    from ..blueprint import StateMachineBlueprint


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


def via(kind: str, label: str = "", condition: str | None = None, **more: Any) -> dict[str, Any]:
    """How a job moved to its next state, as ``state_entered`` records it: which edge of the graph
    (``kind`` and ``label`` as :class:`~avtomatika.blueprint.Edge` has them, the ``condition`` of the
    ``.when()`` handler that chose it, none for a default handler) or which operation (``retry``,
    ``release``), and who or what answered (``actor``, ``task_id``...)."""
    found: dict[str, Any] = {"kind": kind}
    if label:
        found["label"] = label
    if condition is not None:
        found["condition"] = condition
    found.update({k: v for k, v in more.items() if v is not None})
    return found


def waited_via(job: Job, kind: str, label: str, **more: Any) -> dict[str, Any]:
    """:func:`via` of a job leaving a wait (a task's result, a decision, a sub-job): the condition of
    the handler that set the wait up is kept in it (``wait["condition"]``, or ``wait["otherwise"]`` for
    the default handler of a state that has ``.when()`` ones; see the runner)."""
    wait = job.wait or {}
    return via(kind, label, wait.get("condition"), otherwise=wait.get("otherwise"), **more)


def changes_of(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """What changed in ``state_history`` from ``before`` to ``after``, top-level keys set or removed
    (``{"set": {...}, "unset": [...]}``), or None: history rebuilds a job's ``state_history`` at every
    step from these."""
    if before == after:
        return None
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    removed = [k for k in before if k not in after]
    found: dict[str, Any] = {}
    if changed:
        found["set"] = changed
    if removed:
        found["unset"] = removed
    return found or None


def move_to(
    job: Job,
    state: str,
    *,
    run: bool = True,
    how: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
    merged: str | None = None,
) -> Commit:
    """The job enters ``state`` and is due to run its handler.

    ``how`` (see :func:`via`) says which edge or operation brought it there; ``changes`` what that
    changed in ``state_history`` (see :func:`changes_of`); ``merged`` the task whose result's data was
    merged into ``state_history`` (history holds that data in the task's ``task_result`` line).
    """
    previous = job.state
    job.state = state
    job.status = JobStatus.RUNNING
    job.wait = None
    job.error = None
    job.handler_attempts = 0
    job.visits[state] = job.visits.get(state, 0) + 1
    entered = event(EventKind.STATE_ENTERED, job, previous=previous)
    if how is not None:
        entered.data["via"] = how
    if changes is not None:
        entered.data["changes"] = changes
    if merged is not None:
        entered.data["merged"] = merged
    return Commit(job, run=run, events=[entered])


def hold(job: Job, breakpoint: Breakpoint) -> Commit:
    """The job stops before its state's handler runs, at ``breakpoint``, until an operator continues
    it: no handler, no timer (it never times out while held)."""
    job.status = JobStatus.HELD
    job.wait = held_wait(breakpoint)
    held = event(EventKind.JOB_HELD, job, breakpoint_id=breakpoint.id, step=breakpoint.once, set_by=breakpoint.actor)
    return Commit(job, events=[held])


def stop_on_workers(commit: Commit, tasks: Iterable[Task]) -> None:
    """Ask the workers running ``tasks`` (those taken) to stop them, once ``commit`` lands."""
    at = now()
    for task in tasks:
        if task.status == TaskStatus.ASSIGNED and task.worker_id:
            commit.timers[TimerKind.CANCEL_TASK.of(task.id)] = at


def end(
    job: Job, status: JobStatus, reason: str | None, closing: list[Task] | None = None, held: list[str] | None = None
) -> Commit:
    """The job stops in ``status`` (failed, quarantined, cancelled, finished).

    ``closing`` are the tasks it was waiting on: answered ones (status done) are closed as done,
    the others withdrawn, and workers running them asked to stop. A quarantined job names the
    tasks to dispatch again on release in ``wait.held_task_ids`` (``held``). A sub-job that ends
    for good resumes its parent; a job that waited for a sub-job and is cancelled or failed
    cancels it.
    """
    child = (job.wait or {}).get("child_job_id")
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
    # created_at: any engine sharing the storage can time the job (orchestrator_job_duration_seconds).
    ended = event(kind, job, error=reason, created_at=job.created_at)
    if child:
        ended.data["child_job_id"] = child
    commit = Commit(
        job,
        close_tasks={t.id: TaskStatus.DONE if t.status == TaskStatus.DONE else TaskStatus.WITHDRAWN for t in closing},
        # A job never retried has no retry timer (retry_count counts each one set) to cancel.
        cancel_timers=[
            *([TimerKind.RETRY_JOB.of(job.id)] if job.retry_count else []),
            *(TimerKind.RETRY_TASK.of(t.id) for t in closing),
        ],
        events=[ended],
    )
    stop_on_workers(commit, closing)
    if status != JobStatus.QUARANTINED:
        if job.parent_job_id:
            commit.timers[TimerKind.RESUME_PARENT.of(job.id)] = now()
        if child and status in (JobStatus.CANCELLED, JobStatus.FAILED):
            commit.timers[TimerKind.CANCEL_JOB.of(child)] = now()
    return commit


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


def new_job(
    blueprint: StateMachineBlueprint,
    initial_data: dict[str, Any] | None,
    *,
    job_id: str | None = None,
    client: str | None = None,
    parent_job_id: str | None = None,
    tracing_context: dict[str, str] | None = None,
) -> Job:
    """A job of ``blueprint`` at its start state; ``initial_data`` checked by its input model, if any."""
    data = dict(initial_data or {})
    if blueprint.input_model is not None:
        data = blueprint.input_model.model_validate(data).model_dump(mode="json")  # type: ignore[attr-defined]
    start = blueprint.start_state or ""
    return Job(
        id=job_id or new_id(),
        blueprint=blueprint.name,
        state=start,
        initial_data=data,
        client=client,
        parent_job_id=parent_job_id,
        visits={start: 1},
        tracing_context=dict(tracing_context or {}),
    )


def created(job: Job, blueprint: StateMachineBlueprint, actor: str | None = None) -> Event:
    """The event of ``job`` created; ``actor`` is who asked when not its client (an operator)."""
    return event(
        EventKind.JOB_CREATED,
        job,
        initial_data=job.initial_data,
        client=job.client,
        actor=actor or (f"client:{job.client}" if job.client else None),
        parent_job_id=job.parent_job_id,
        blueprint_version=blueprint.version,
    )
