"""Workers' answers: results, timeouts and lost workers, and the retry/quarantine/fail rules.

PROTOCOL.md, "Results and failures": a status listed in the task's transitions moves the job on;
``failure`` is retried (TRANSIENT_ERROR or no code), quarantined (PERMANENT_ERROR) or failed
(INVALID_INPUT_ERROR); ``cancelled`` cancels unless a transition is declared; anything else fails.

A result is taken once: the task's status decides, in the same atomic change that records it, so a
result posted twice (to one engine or two at once) is a duplicate the second time, and a result
racing its task's timeout either lands (the timeout then finds the task answered) or finds the task
withdrawn (409, the retry does the work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import JobNotFound, ResultRejected
from ..events import Event, EventKind, task_result
from ..models import WAITING_ON_TASKS, Job, JobStatus, Task, TaskStatus
from ..storage.base import BranchAnswer, Commit
from ..timers import TimerKind
from .outcomes import backoff_s, dispatched, end, event, move_to, next_attempt, stop_on_workers, waited_via

if TYPE_CHECKING:
    from .commits import Build
    from .shared import Runtime

logger = logging.getLogger(__name__)

TRANSIENT, PERMANENT, INVALID_INPUT = "TRANSIENT_ERROR", "PERMANENT_ERROR", "INVALID_INPUT_ERROR"
#: Acknowledgements of a result already taken, and of a cancellation the engine asked for.
DUPLICATE, CANCELLED = "result_accepted_duplicate", "result_accepted_cancelled"
#: Statuses of a job that still waits for the tasks it lists.
_WAITING = frozenset({*WAITING_ON_TASKS, JobStatus.AWAITING_RETRY})


class _Answered(Exception):
    """The task was answered since it was read: the result in hand is a duplicate."""


class ResultProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def submit(self, job_id: str, task_id: str, worker_id: str, result: dict[str, Any]) -> str:
        """Apply a worker's result; returns the acknowledgement status for the worker."""
        task = await self.runtime.storage.get_task(task_id)
        if task is None or task.job_id != job_id:
            raise ResultRejected(task_id, "no such task for this job", status=404)
        if task.worker_id != worker_id:
            raise ResultRejected(task_id, "the task was not given to this worker", status=403)
        if task.status == TaskStatus.DONE:
            return DUPLICATE
        if task.status == TaskStatus.WITHDRAWN and result.get("status") == "cancelled":
            # The worker confirms a cancel_task we sent: acknowledged (SDK 1.0b1 re-posts anything
            # but a 200, holding a slot for half a minute), and nothing changes.
            return CANCELLED
        if task.status != TaskStatus.ASSIGNED:
            raise ResultRejected(task_id, f"the task is no longer waiting for a result (it is {task.status})")
        status = str(result.get("status"))
        with self.runtime.tracer.result_span(task, result, worker_id):
            answered = _result_event(task, result, worker_id)
            try:
                if task.aggregate_into and task.transitions.get(status) == task.aggregate_into:
                    await self._branch_done(task, result, answered)
                else:
                    await self.runtime.committer.update_job(job_id, self._taker(task, result, answered))
            except _Answered:
                return DUPLICATE
        return f"result_accepted_{status}" if status.isidentifier() else "result_accepted"

    async def _branch_done(self, task: Task, result: dict[str, Any], answered: Event) -> None:
        """One fan-out branch succeeded: recorded without rewriting the job, which lists every branch
        (rewriting it for each made a fan-out quadratic). The last one queues the job, which the
        runner then moves into its aggregation state."""
        branch_result = {**result, "task_type": task.type}
        answer = await self.runtime.storage.add_branch_result(task.job_id, task.id, branch_result, [answered])
        if answer == BranchAnswer.DUPLICATE:
            raise _Answered
        if answer == BranchAnswer.CLOSED:
            raise ResultRejected(task.id, "the job is no longer waiting for this task")
        self.runtime.committer.events.publish(answered)

    def _taker(self, task: Task, result: dict[str, Any], answered: Event) -> Build:
        """The build of the commit that takes ``result``. The task is read again after a conflict, or
        when the job no longer waits for it: answered meanwhile (the same result posted to another
        engine), this one is a duplicate."""
        read: list[Task] = []

        async def build(job: Job) -> Commit | None:
            current = task
            if read or not _waits_for(job, task):
                fresh = await self.runtime.storage.get_task(task.id)
                if fresh is None:
                    raise ResultRejected(task.id, "no such task for this job", status=404)
                if fresh.status == TaskStatus.DONE:
                    raise _Answered
                current = fresh
            read.append(current)
            commit = await self._apply(job, current, result)
            if commit is not None:
                commit.events = [answered, *commit.events]
            return commit

        return build

    async def _apply(self, job: Job, task: Task, result: dict[str, Any]) -> Commit | None:
        if task.status != TaskStatus.ASSIGNED:
            raise ResultRejected(task.id, f"the task is no longer waiting for a result (it is {task.status})")
        if not _waits_for(job, task):
            raise ResultRejected(task.id, f"the job is {job.status} and no longer waits for this task")
        status = str(result.get("status"))
        task.status = TaskStatus.DONE
        if status in task.transitions and status != "failure":
            return self._follow(job, task, status, result, await self._closing(job, task))
        if status == "failure":
            return await self._failure(job, task, result)
        if status == "cancelled":
            return end(job, JobStatus.CANCELLED, "the worker cancelled the task", await self._closing(job, task))
        return end(job, JobStatus.FAILED, f"Worker returned unhandled status: {status}", await self._closing(job, task))

    def _follow(self, job: Job, task: Task, status: str, result: dict[str, Any], closing: list[Task]) -> Commit:
        """Move on by the task's transition; a fan-out left this way withdraws its other branches."""
        data = result.get("data")
        merged = isinstance(data, dict)
        if merged:
            job.state_history.update(data)
        others = closing[1:]
        how = waited_via(job, "dispatch", status, task_id=task.id)
        commit = move_to(job, task.transitions[status], how=how, merged=task.id if merged else None)
        commit.close_tasks = {task.id: TaskStatus.DONE, **{t.id: TaskStatus.WITHDRAWN for t in others}}
        commit.cancel_timers = [TimerKind.RETRY_TASK.of(t.id) for t in others]
        stop_on_workers(commit, others)
        return commit

    async def _failure(self, job: Job, task: Task, result: dict[str, Any]) -> Commit:
        raw = result.get("error")
        error = raw if isinstance(raw, dict) else {}
        code = str(error.get("code") or TRANSIENT)
        message = error.get("message") or (raw if isinstance(raw, str) and raw else code)
        if code == INVALID_INPUT:
            return end(job, JobStatus.FAILED, f"{INVALID_INPUT}: {message}", await self._closing(job, task))
        if code == PERMANENT:
            return await self._quarantine(job, task, f"{PERMANENT}: {message}")
        return await self.transient(job, task, f"{code}: {message}")

    async def _quarantine(self, job: Job, task: Task, reason: str) -> Commit:
        """Quarantine, holding the failed task and the job's other unanswered tasks for a release."""
        closing = await self._closing(job, task)
        held = [task.id, *(t.id for t in closing[1:] if t.status != TaskStatus.DONE)]
        return end(job, JobStatus.QUARANTINED, reason, closing, held)

    async def transient(self, job: Job, task: Task, reason: str) -> Commit:
        """Retry ``task`` with backoff, or, when retries are spent, take ``failure`` or quarantine."""
        config = self.runtime.config
        closed = {task.id: TaskStatus.DONE if task.status == TaskStatus.DONE else TaskStatus.WITHDRAWN}
        if task.attempt > config.JOB_MAX_RETRIES:
            if "failure" in task.transitions and not task.aggregate_into:
                how = waited_via(job, "dispatch", "failure", task_id=task.id)
                commit = move_to(job, task.transitions["failure"], how=how)
                commit.close_tasks = closed
                stop_on_workers(commit, [task])
                job.error = reason
                return commit
            return await self._quarantine(job, task, f"retries exhausted: {reason}")
        delay = backoff_s(task.attempt, config.RETRY_BACKOFF_BASE_SECONDS, config.RETRY_BACKOFF_MAX_SECONDS)
        retry = next_attempt(task, delay_s=delay)
        # Always through the timer, also with no backoff: retry_due is what queues it and wakes the job.
        retry.status = TaskStatus.RETRY_SCHEDULED
        wait = dict(job.wait or {})
        wait["task_ids"] = [retry.id if t == task.id else t for t in wait.get("task_ids", [])]
        job.wait = wait
        job.retry_count += 1
        job.error = reason
        if not task.aggregate_into:
            job.status = JobStatus.AWAITING_RETRY
        retry_at = time.time() + delay
        retried = event(
            EventKind.TASK_RETRY,
            job,
            task_id=task.id,
            next_task_id=retry.id,
            attempt=retry.attempt,
            error=reason,
            retry_in_s=round(delay, 3),
        )
        timers = {TimerKind.RETRY_TASK.of(retry.id): retry_at}
        commit = Commit(job, tasks=[retry], close_tasks=closed, timers=timers, events=[retried])
        stop_on_workers(commit, [task])
        return commit

    async def _closing(self, job: Job, task: Task) -> list[Task]:
        """``task`` followed by the job's other tasks that are still open."""
        others = []
        for task_id in (job.wait or {}).get("task_ids", []):
            other = await self.runtime.storage.get_task(task_id) if task_id != task.id else None
            if other is not None and other.status != TaskStatus.DONE:
                others.append(other)
        return [task, *others]

    # -- timers: timeouts, lost workers, backoffs ------------------------------------------------
    async def task_timed_out(self, task_id: str) -> None:
        """A taken task's deadline passed without a result: retry it."""

        def why(task: Task) -> str:
            return f"no result from worker '{task.worker_id}' within {self.runtime.task_timeout_s(task):g} s"

        await self._lost(task_id, why)

    async def task_lost(self, task_id: str) -> None:
        """The worker running the task expired: retry it."""
        await self._lost(task_id, lambda task: f"worker '{task.worker_id}' expired while running the task")

    async def _lost(self, task_id: str, why: Callable[[Task], str]) -> None:
        """The task, still taken and waited for, counts as a transient failure."""

        async def retry(job: Job, task: Task) -> Commit | None:
            if not _waits_for(job, task):
                return None
            return await self.transient(job, task, f"{TRANSIENT}: {why(task)}")

        if not await self._change_while(task_id, TaskStatus.ASSIGNED, retry):
            logger.warning("task %s timed out for a job that is gone", task_id)

    async def retry_due(self, task_id: str) -> None:
        """A task's backoff is over: queue it, if its job still waits for it."""

        async def queue(job: Job, task: Task) -> Commit | None:
            if job.status not in _WAITING or task.id not in (job.wait or {}).get("task_ids", []):
                return None  # quarantined, cancelled or moved on in the same instant
            task.status = TaskStatus.QUEUED
            await self.runtime.assign_workers([task])
            task.tracing_context = self.runtime.tracer.dispatch_span(job, task)
            if job.status == JobStatus.AWAITING_RETRY:
                job.status = JobStatus.WAITING_FOR_WORKER
            return Commit(job, tasks=[task], events=[dispatched(job, task)])

        await self._change_while(task_id, TaskStatus.RETRY_SCHEDULED, queue)

    async def _change_while(
        self, task_id: str, status: TaskStatus, change: Callable[[Job, Task], Awaitable[Commit | None]]
    ) -> bool:
        """``change`` the job of a task while the task is ``status`` (both read afresh on each try of the
        commit; nothing once the task has moved on). False when the job is gone."""

        async def build(job: Job) -> Commit | None:
            task = await self.runtime.storage.get_task(task_id)
            if task is None or task.status != status:
                return None  # moved on meanwhile (answered, withdrawn, queued)
            return await change(job, task)

        task = await self.runtime.storage.get_task(task_id)
        if task is None or task.status != status:
            return True
        try:
            await self.runtime.committer.update_job(task.job_id, build)
        except JobNotFound:
            return False
        return True


def _waits_for(job: Job, task: Task) -> bool:
    return job.status in WAITING_ON_TASKS and task.id in (job.wait or {}).get("task_ids", [])


def _result_event(task: Task, result: dict[str, Any], worker_id: str) -> Event:
    return task_result(task.job_id, task.state, task.id, task.type, result, worker_id, task.queued_at)
