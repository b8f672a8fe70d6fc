"""Workers' answers: results, timeouts and lost workers, and the retry/quarantine/fail rules.

PROTOCOL.md, "Results and failures": a status listed in the task's transitions moves the job on;
``failure`` is retried (TRANSIENT_ERROR or no code), quarantined (PERMANENT_ERROR) or failed
(INVALID_INPUT_ERROR); ``cancelled`` cancels unless a transition is declared; anything else fails.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import JobNotFound, ResultRejected
from .events import Event, EventKind
from .models import WAITING_ON_TASKS, Job, JobStatus, Task, TaskStatus
from .outcomes import Outcome, backoff_s, dispatched, end, event, move_to, next_attempt
from .storage.base import Commit

if TYPE_CHECKING:
    from .engine import OrchestratorEngine

logger = logging.getLogger(__name__)

TRANSIENT, PERMANENT, INVALID_INPUT = "TRANSIENT_ERROR", "PERMANENT_ERROR", "INVALID_INPUT_ERROR"


#: Fan-out rounds whose branch ids are remembered (the oldest are forgotten, and read again if needed):
#: a few tens of KB each for hundreds of branches.
MAX_ROUNDS = 128


class ResultProcessor:
    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine
        #: The branch ids of fan-out rounds being answered, by job id, oldest first (see _round_size).
        self._rounds: dict[str, frozenset[str]] = {}

    async def submit(self, job_id: str, task_id: str, worker_id: str, result: dict[str, Any]) -> str:
        """Apply a worker's result; returns the acknowledgement status for the worker."""
        storage = self.engine.storage
        task = await storage.get_task(task_id)
        if task is None or task.job_id != job_id:
            raise ResultRejected(task_id, "no such task for this job", status=404)
        if task.worker_id != worker_id:
            raise ResultRejected(task_id, "the task was not given to this worker", status=403)
        if task.status == TaskStatus.DONE:
            return "result_accepted_duplicate"
        if task.status == TaskStatus.WITHDRAWN and result.get("status") == "cancelled":
            # The worker confirms a cancel_task we sent: acknowledged (SDK 1.0b1 re-posts anything
            # but a 200, holding a slot for half a minute), and nothing changes.
            return "result_accepted_cancelled"
        if task.status != TaskStatus.ASSIGNED:
            raise ResultRejected(task_id, f"the task is no longer waiting for a result (it is {task.status})")
        status = str(result.get("status"))
        with self.engine.tracer.result_span(task, result, worker_id):
            self.engine.events.publish(_result_event(task, result, worker_id))
            if task.aggregate_into and task.transitions.get(status) == task.aggregate_into:
                await self._branch_done(task, result)
            else:
                await self.engine.update_job(job_id, lambda job: self._apply(job, task, result))
        return f"result_accepted_{status}" if status.isidentifier() else "result_accepted"

    async def _branch_done(self, task: Task, result: dict[str, Any]) -> None:
        """One fan-out branch succeeded; the last one moves the job into the aggregation state.

        The job's document stays as it is until the last branch: storage records the result and closes
        the task at once (decoding and rewriting the job, which lists every branch, for each of them
        made a fan-out quadratic).
        """
        size = await self._round_size(task)
        reported = await self.engine.storage.add_branch_result(task.job_id, task.id, {**result, "task_type": task.type})
        if reported >= size:
            self._rounds.pop(task.job_id, None)
            await self.engine.update_job(task.job_id, lambda job: self._close_branches(job, task, reported))

    async def _round_size(self, task: Task) -> int:
        """How many branches the fan-out of ``task`` has; ResultRejected if its job no longer waits for it.

        A round's branches are read from the job once and remembered: a retry or a release replaces a
        branch by another, so the count holds for the whole round. Whether the job still waits for
        the task needs no read: a job that stops waiting for a task closes it in the same commit, and
        the task was found assigned.
        """
        branches = self._rounds.get(task.job_id)
        if branches is None or task.id not in branches:
            job = await self.engine.storage.get_job(task.job_id)
            branches = frozenset((job.wait or {}).get("task_ids", [])) if job is not None else frozenset()
            if task.id not in branches:
                raise ResultRejected(task.id, "the job is no longer waiting for this task")
            self._rounds.pop(task.job_id, None)
            self._rounds[task.job_id] = branches
            while len(self._rounds) > MAX_ROUNDS:
                del self._rounds[next(iter(self._rounds))]
        return len(branches)

    async def _close_branches(self, job: Job, task: Task, reported: int) -> Outcome | None:
        """Every branch has reported: the job enters its aggregation state."""
        wait = job.wait or {}
        task_ids = wait.get("task_ids", [])
        if job.status != JobStatus.WAITING_FOR_PARALLEL_TASKS or task.id not in task_ids or reported < len(task_ids):
            return None
        outcome = move_to(job, wait["aggregate_into"])
        # Each branch was closed as it reported; closing them all again also ends the retry of a branch
        # whose answer was recorded as its timeout fired (several engines on one Redis).
        outcome.commit.close_tasks = dict.fromkeys(task_ids, TaskStatus.DONE)
        return outcome

    async def _apply(self, job: Job, task: Task, result: dict[str, Any]) -> Outcome | None:
        if job.status not in WAITING_ON_TASKS or task.id not in (job.wait or {}).get("task_ids", []):
            if job.status == JobStatus.QUARANTINED and task.id in (job.wait or {}).get("task_ids", []):
                return None  # a branch finishing while its job is quarantined changes nothing
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

    def _follow(self, job: Job, task: Task, status: str, result: dict[str, Any], closing: list[Task]) -> Outcome:
        """Move on by the task's transition; a fan-out left this way withdraws its other branches."""
        data = result.get("data")
        if isinstance(data, dict):
            job.state_history.update(data)
        others = closing[1:]
        outcome = move_to(job, task.transitions[status])
        outcome.commit.close_tasks = {task.id: TaskStatus.DONE, **{t.id: TaskStatus.WITHDRAWN for t in others}}
        outcome.commit.cancel_timers = [f"retry_task:{t.id}" for t in others]
        outcome.cancel_on_workers = [t for t in others if t.status == TaskStatus.ASSIGNED]
        return outcome

    async def _failure(self, job: Job, task: Task, result: dict[str, Any]) -> Outcome:
        raw = result.get("error")
        error = raw if isinstance(raw, dict) else {}
        code = str(error.get("code") or TRANSIENT)
        message = error.get("message") or (raw if isinstance(raw, str) and raw else code)
        if code == INVALID_INPUT:
            return end(job, JobStatus.FAILED, f"{INVALID_INPUT}: {message}", await self._closing(job, task))
        if code == PERMANENT:
            return await self._quarantine(job, task, f"{PERMANENT}: {message}")
        return await self.transient(job, task, f"{code}: {message}")

    async def _quarantine(self, job: Job, task: Task, reason: str) -> Outcome:
        """Quarantine, holding the failed task and the job's other unanswered tasks for a release."""
        closing = await self._closing(job, task)
        held = [task.id, *(t.id for t in closing[1:] if t.status != TaskStatus.DONE)]
        return end(job, JobStatus.QUARANTINED, reason, closing, held)

    async def transient(self, job: Job, task: Task, reason: str) -> Outcome:
        """Retry ``task`` with backoff, or, when retries are spent, take ``failure`` or quarantine."""
        config = self.engine.config
        closed = {task.id: TaskStatus.DONE if task.status == TaskStatus.DONE else TaskStatus.WITHDRAWN}
        if task.attempt > config.JOB_MAX_RETRIES:
            if "failure" in task.transitions and not task.aggregate_into:
                outcome = move_to(job, task.transitions["failure"])
                outcome.commit.close_tasks = closed
                job.error = reason
                return outcome
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
        commit = Commit(job, tasks=[retry], close_tasks=closed, timers={f"retry_task:{retry.id}": retry_at})
        stop = [task] if task.status == TaskStatus.ASSIGNED else []
        return Outcome(
            commit,
            cancel_on_workers=stop,
            events=[
                event(
                    EventKind.TASK_RETRY,
                    job,
                    task_id=task.id,
                    next_task_id=retry.id,
                    attempt=retry.attempt,
                    error=reason,
                    retry_in_s=round(delay, 3),
                )
            ],
        )

    async def _closing(self, job: Job, task: Task) -> list[Task]:
        """``task`` followed by the job's other tasks that are still open."""
        others = []
        for task_id in (job.wait or {}).get("task_ids", []):
            other = await self.engine.storage.get_task(task_id) if task_id != task.id else None
            if other is not None and other.status != TaskStatus.DONE:
                others.append(other)
        return [task, *others]

    # -- timers and lost workers -----------------------------------------------------------------
    async def task_timed_out(self, task_id: str) -> None:
        task = await self.engine.storage.get_task(task_id)
        if task is None or task.status != TaskStatus.ASSIGNED:
            return
        reason = f"{TRANSIENT}: no result from worker '{task.worker_id}' within {self.engine.task_timeout_s(task):g} s"
        await self._lost(task, reason)

    async def worker_lost(self, worker_id: str, task_ids: list[str]) -> None:
        for task_id in task_ids:
            task = await self.engine.storage.get_task(task_id)
            if task is None:
                continue
            try:
                if task.status == TaskStatus.QUEUED:  # given to the worker but never taken: queue it for anyone
                    await self.engine.update_job(task.job_id, lambda job, task=task: self._requeue(job, task))
                elif task.status == TaskStatus.ASSIGNED:
                    await self._lost(task, f"{TRANSIENT}: worker '{worker_id}' expired while running the task")
            except JobNotFound:
                continue
            except Exception:  # one task's trouble must not strand the worker's other tasks
                logger.exception("could not re-dispatch task %s of expired worker %s", task_id, worker_id)

    async def _lost(self, task: Task, reason: str) -> None:
        async def retry(job: Job) -> Outcome | None:
            if task.id not in (job.wait or {}).get("task_ids", []) or job.status not in WAITING_ON_TASKS:
                return None
            return await self.transient(job, task, reason)

        try:
            await self.engine.update_job(task.job_id, retry)
        except JobNotFound:
            logger.warning("task %s timed out for a job that is gone", task.id)

    async def _requeue(self, job: Job, task: Task) -> Outcome | None:
        if task.id not in (job.wait or {}).get("task_ids", []):
            return None
        task.worker_id = None
        await self.engine.assign_workers([task])
        return Outcome(Commit(job, tasks=[task]))

    async def retry_due(self, task_id: str) -> None:
        """A task's backoff is over: queue it."""
        task = await self.engine.storage.get_task(task_id)
        if task is None or task.status != TaskStatus.RETRY_SCHEDULED:
            return

        async def queue(job: Job) -> Outcome | None:
            if task.id not in (job.wait or {}).get("task_ids", []):
                return None
            task.status = TaskStatus.QUEUED
            await self.engine.assign_workers([task])
            task.tracing_context = self.engine.tracer.dispatch_span(job, task)
            if job.status == JobStatus.AWAITING_RETRY:
                job.status = JobStatus.WAITING_FOR_WORKER
            return Outcome(
                Commit(job, tasks=[task]),
                [dispatched(job, task)],
            )

        await self.engine.update_job(task.job_id, queue)


def _result_event(task: Task, result: dict[str, Any], worker_id: str) -> Event:
    data = {
        "task_id": task.id,
        "task_type": task.type,
        "result": result,
        "worker_id": worker_id,
        "queued_at": task.queued_at,
    }
    return Event(EventKind.TASK_RESULT, task.job_id, None, task.state, None, data)
