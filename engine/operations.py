"""What clients and operators do to jobs: cancel, retry, release, fail, answer an approval; and what
one job's end does to another (resume a parent, cancel a sub-job), carried out from their timers.

Every operation names its ``actor`` (a client, an operator, ``"webhook"``), which goes into the
event and so into history.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import InvalidOperation, JobNotFound
from .events import EventKind
from .models import ENDED_STATUSES, TERMINAL_STATUSES, Job, JobStatus, Task, TaskStatus
from .outcomes import dispatched, end, event, move_to, next_attempt, via, waited_via
from .storage.base import Commit

if TYPE_CHECKING:
    from .runtime import Runtime

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUARANTINED})


class Operations:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def cancel(self, job_id: str, actor: str) -> Job:
        async def build(job: Job) -> Commit:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot cancel a job that is {job.status}")
            return await self._stop(job, JobStatus.CANCELLED, actor, f"cancelled by {actor}")

        return await self.runtime.committer.update_job(job_id, build)

    async def retry(self, job_id: str, actor: str, from_state: str | None = None) -> Job:
        async def build(job: Job) -> Commit:
            if job.status not in RETRYABLE:
                raise InvalidOperation(
                    job_id, f"only failed, cancelled or quarantined jobs can be retried, not {job.status}"
                )
            target = from_state or job.state
            blueprint = self.runtime.blueprints.get(job.blueprint)
            if blueprint is None:
                raise InvalidOperation(job_id, f"blueprint '{job.blueprint}' is not registered with this engine")
            if target not in blueprint.states:
                raise InvalidOperation(job_id, f"blueprint '{blueprint.name}' has no state '{target}'")
            closing = await self._open_tasks(job)
            commit = move_to(job, target, how=via("retry", actor=actor))
            commit.close_tasks = {t.id: TaskStatus.WITHDRAWN for t in closing}
            commit.events = [event(EventKind.JOB_RETRIED, job, actor=actor, from_state=target), *commit.events]
            return commit

        return await self.runtime.committer.update_job(job_id, build)

    async def release(self, job_id: str, actor: str, params: dict[str, object] | None = None) -> Job:
        """Resume a quarantined job: its held tasks dispatched again, or, when it was quarantined by its
        handler, the handler run again.

        ``params`` are merged into those of the task that failed (the first held one); the other held
        tasks (fan-out branches withdrawn by the quarantine) go out again as they were.
        """

        async def build(job: Job) -> Commit:
            if job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"only quarantined jobs can be released, not {job.status}")
            wait = job.wait or {}
            held = [
                t
                for task_id in wait.get("held_task_ids", [])
                if (t := await self.runtime.storage.get_task(task_id)) is not None
            ]
            if not held or wait.get("kind") != "tasks":
                commit = move_to(job, job.state, how=via("release", actor=actor))
            else:
                commit = await self._redispatch(job, held, params)
            commit.events = [event(EventKind.JOB_RELEASED, job, actor=actor, params=params), *commit.events]
            return commit

        return await self.runtime.committer.update_job(job_id, build)

    async def _redispatch(self, job: Job, held: list[Task], params: dict[str, object] | None) -> Commit:
        fresh = []
        for index, task in enumerate(held):
            edited = {**task.params, **(params or {})} if index == 0 else task.params
            retry = next_attempt(task, params=edited)
            retry.attempt = 1
            fresh.append(retry)
        await self.runtime.assign_workers(fresh)
        for task in fresh:
            task.tracing_context = self.runtime.tracer.dispatch_span(job, task)
        replaced = {old.id: new.id for old, new in zip(held, fresh, strict=True)}
        wait = dict(job.wait or {})
        wait["task_ids"] = [replaced.get(t, t) for t in wait.get("task_ids", [])]
        wait.pop("held_task_ids", None)
        job.wait = wait
        job.error = None
        job.status = (
            JobStatus.WAITING_FOR_PARALLEL_TASKS if wait.get("aggregate_into") else JobStatus.WAITING_FOR_WORKER
        )
        dispatches = [dispatched(job, t) for t in fresh]
        for old, sent in zip(held, dispatches, strict=True):
            sent.data["replaces"] = old.id  # the branch it continues, for history's branch table
        return Commit(job, tasks=fresh, events=dispatches)

    async def fail(self, job_id: str, actor: str, reason: str | None = None) -> Job:
        async def build(job: Job) -> Commit:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot fail a job that is {job.status}")
            return await self._stop(job, JobStatus.FAILED, actor, reason or f"failed by {actor}")

        return await self.runtime.committer.update_job(job_id, build)

    async def _stop(self, job: Job, status: JobStatus, actor: str, reason: str) -> Commit:
        """An operator ends ``job``: the error it held (why it was quarantined, or is retrying) is its
        root cause, kept beside the operator's reason in the job's error and in the event."""
        cause = job.error
        error = f"{reason} · root cause: {cause}" if cause else reason
        commit = end(job, status, error, await self._open_tasks(job))
        commit.events[0].data.update(actor=actor, reason=reason)
        if cause:
            commit.events[0].data["cause"] = cause
        return commit

    async def decide(self, job_id: str, decision: str, actor: str) -> Job:
        """Answer a job waiting for human approval with one of its transitions' names."""

        async def build(job: Job) -> Commit:
            wait = job.wait or {}
            if job.status != JobStatus.WAITING_FOR_HUMAN:
                raise InvalidOperation(job_id, f"the job is {job.status}, not waiting for approval")
            transitions = wait.get("transitions", {})
            if decision not in transitions:
                choices = ", ".join(sorted(transitions)) or "none"
                raise InvalidOperation(job_id, f"unknown decision {decision!r}; expected one of: {choices}")
            approval = {"decision": decision, "actor": actor}
            job.state_history["approval"] = approval
            how = waited_via(job, "human", decision, actor=actor)
            commit = move_to(job, transitions[decision], how=how, changes={"set": {"approval": approval}})
            commit.events[0].data.update(decision=decision, actor=actor)
            return commit

        return await self.runtime.committer.update_job(job_id, build)

    # -- follow-ups of another job's commit (timers due at once) ----------------------------------
    async def resume_parent(self, child_id: str) -> None:
        """A sub-job ended: its parent takes ``success`` (finished) or ``failure`` (failed, cancelled)."""
        child = await self.runtime.storage.get_job(child_id)
        if child is None or child.status not in ENDED_STATUSES or not child.parent_job_id:
            return
        outcome_name = "success" if child.status == JobStatus.FINISHED else "failure"

        async def build(parent: Job) -> Commit | None:
            wait = parent.wait or {}
            if parent.status != JobStatus.WAITING_FOR_SUB_JOB or wait.get("child_job_id") != child.id:
                return None  # resumed already (this follow-up ran before), or cancelled meanwhile
            outcome = {
                "job_id": child.id,
                "blueprint": child.blueprint,
                "status": child.status,
                "state_history": child.state_history,
                "error": child.error,
            }
            parent.state_history["sub_job"] = outcome
            target = wait.get("transitions", {}).get(outcome_name)
            if target is None:
                if outcome_name == "success":
                    return end(parent, JobStatus.FAILED, "the sub-job finished but no 'success' transition is declared")
                return end(parent, JobStatus.FAILED, f"sub-job {child.id} ended {child.status}: {child.error}")
            how = waited_via(parent, "sub_blueprint", outcome_name, child_job_id=child.id)
            return move_to(parent, target, how=how, changes={"set": {"sub_job": outcome}})

        try:
            await self.runtime.committer.update_job(child.parent_job_id, build)
        except JobNotFound:
            logger.warning("sub-job %s ended but its parent %s is gone", child.id, child.parent_job_id)

    async def cancel_child(self, child_id: str) -> None:
        """Its parent was cancelled or failed while waiting for it: nobody waits for the sub-job."""
        child = await self.runtime.storage.get_job(child_id)
        if child is None or (child.status in TERMINAL_STATUSES and child.status != JobStatus.QUARANTINED):
            return
        try:
            await self.cancel(child_id, f"parent job {child.parent_job_id}")
        except (InvalidOperation, JobNotFound):
            return  # ended meanwhile

    async def cancel_on_worker(self, task_id: str) -> None:
        """Ask the worker running a withdrawn task to stop it (best effort: it may be gone)."""
        task = await self.runtime.storage.get_task(task_id)
        if task is None or task.status != TaskStatus.WITHDRAWN or not task.worker_id:
            return
        await self.runtime.channels.cancel_task(task.worker_id, task.job_id, task.id)

    async def retry_step_due(self, job_id: str) -> None:
        """A handler's retry backoff is over: run it again."""

        async def build(job: Job) -> Commit | None:
            if job.status != JobStatus.AWAITING_RETRY or (job.wait or {}).get("kind") != "retry":
                return None
            job.status = JobStatus.RUNNING
            job.wait = None
            return Commit(job, run=True)

        try:
            await self.runtime.committer.update_job(job_id, build)
        except JobNotFound:
            return

    async def _open_tasks(self, job: Job) -> list[Task]:
        tasks = []
        for task_id in (job.wait or {}).get("task_ids", []):
            task = await self.runtime.storage.get_task(task_id)
            if task is not None and task.status != TaskStatus.DONE:
                tasks.append(task)
        return tasks
