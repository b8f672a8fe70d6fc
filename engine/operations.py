"""What clients and operators do to jobs: cancel, retry, release, fail, answer an approval.

Every operation names its ``actor`` (a client, an operator, ``"webhook"``), which goes into the
event and so into history.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from .errors import InvalidOperation, JobNotFound
from .events import EventKind
from .models import TERMINAL_STATUSES, Job, JobStatus, Task, TaskStatus
from .outcomes import Outcome, dispatched, end, event, move_to, next_attempt
from .storage.base import Commit

if TYPE_CHECKING:
    from .engine import OrchestratorEngine

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUARANTINED})


class Operations:
    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine

    async def cancel(self, job_id: str, actor: str) -> Job:
        async def build(job: Job) -> Outcome:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot cancel a job that is {job.status}")
            child = (job.wait or {}).get("child_job_id")
            outcome = end(job, JobStatus.CANCELLED, f"cancelled by {actor}", await self._open_tasks(job))
            outcome.events[0].data["actor"] = actor
            if child:
                outcome.events[0].data["child_job_id"] = child
            return outcome

        job = await self.engine.update_job(job_id, build)
        return job

    async def retry(self, job_id: str, actor: str, from_state: str | None = None) -> Job:
        async def build(job: Job) -> Outcome:
            if job.status not in RETRYABLE:
                raise InvalidOperation(
                    job_id, f"only failed, cancelled or quarantined jobs can be retried, not {job.status}"
                )
            target = from_state or job.state
            blueprint = self.engine.blueprint_of(job)
            if target not in blueprint.states:
                raise InvalidOperation(job_id, f"blueprint '{blueprint.name}' has no state '{target}'")
            closing = await self._open_tasks(job)
            outcome = move_to(job, target)
            outcome.commit.close_tasks = {t.id: TaskStatus.WITHDRAWN for t in closing}
            outcome.events.insert(0, event(EventKind.JOB_RETRIED, job, actor=actor, from_state=target))
            return outcome

        return await self.engine.update_job(job_id, build)

    async def release(self, job_id: str, actor: str, params: dict[str, object] | None = None) -> Job:
        """Resume a quarantined job: its held tasks dispatched again, or, when it was quarantined by its
        handler, the handler run again.

        ``params`` are merged into those of the task that failed (the first held one); the other held
        tasks (fan-out branches withdrawn by the quarantine) go out again as they were.
        """

        async def build(job: Job) -> Outcome:
            if job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"only quarantined jobs can be released, not {job.status}")
            wait = job.wait or {}
            held = [
                t
                for task_id in wait.get("held_task_ids", [])
                if (t := await self.engine.storage.get_task(task_id)) is not None
            ]
            if not held or wait.get("kind") != "tasks":
                outcome = move_to(job, job.state)
            else:
                outcome = await self._redispatch(job, held, params)
            outcome.events.insert(0, event(EventKind.JOB_RELEASED, job, actor=actor, params=params))
            return outcome

        return await self.engine.update_job(job_id, build)

    async def _redispatch(self, job: Job, held: list[Task], params: dict[str, object] | None) -> Outcome:
        fresh = []
        for index, task in enumerate(held):
            edited = {**task.params, **(params or {})} if index == 0 else task.params
            retry = next_attempt(task, params=edited)
            retry.attempt = 1
            fresh.append(retry)
        await self.engine.assign_workers(fresh)
        for task in fresh:
            task.tracing_context = self.engine.tracer.dispatch_span(job, task)
        replaced = {old.id: new.id for old, new in zip(held, fresh, strict=True)}
        wait = dict(job.wait or {})
        wait["task_ids"] = [replaced.get(t, t) for t in wait.get("task_ids", [])]
        wait.pop("held_task_ids", None)
        job.wait = wait
        job.error = None
        job.status = (
            JobStatus.WAITING_FOR_PARALLEL_TASKS if wait.get("aggregate_into") else JobStatus.WAITING_FOR_WORKER
        )
        return Outcome(Commit(job, tasks=fresh), [dispatched(job, t) for t in fresh])

    async def fail(self, job_id: str, actor: str, reason: str | None = None) -> Job:
        children: list[str] = []

        async def build(job: Job) -> Outcome:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot fail a job that is {job.status}")
            children[:] = [c] if (c := (job.wait or {}).get("child_job_id")) else []
            outcome = end(job, JobStatus.FAILED, reason or f"failed by {actor}", await self._open_tasks(job))
            outcome.events[0].data["actor"] = actor
            return outcome

        job = await self.engine.update_job(job_id, build)
        for child_id in children:  # nobody waits for the sub-job any more
            with contextlib.suppress(InvalidOperation, JobNotFound):
                await self.cancel(child_id, f"parent job {job_id}")
        return job

    async def decide(self, job_id: str, decision: str, actor: str) -> Job:
        """Answer a job waiting for human approval with one of its transitions' names."""

        async def build(job: Job) -> Outcome:
            wait = job.wait or {}
            if job.status != JobStatus.WAITING_FOR_HUMAN:
                raise InvalidOperation(job_id, f"the job is {job.status}, not waiting for approval")
            transitions = wait.get("transitions", {})
            if decision not in transitions:
                choices = ", ".join(sorted(transitions)) or "none"
                raise InvalidOperation(job_id, f"unknown decision {decision!r}; expected one of: {choices}")
            job.state_history["approval"] = {"decision": decision, "actor": actor}
            outcome = move_to(job, transitions[decision])
            outcome.events[0].data.update(decision=decision, actor=actor)
            return outcome

        return await self.engine.update_job(job_id, build)

    async def resume_parent(self, child: Job) -> None:
        """A sub-job ended: its parent takes ``success`` (finished) or ``failure`` (failed, cancelled)."""
        outcome_name = "success" if child.status == JobStatus.FINISHED else "failure"

        async def build(parent: Job) -> Outcome | None:
            wait = parent.wait or {}
            if parent.status != JobStatus.WAITING_FOR_SUB_JOB or wait.get("child_job_id") != child.id:
                return None
            parent.state_history["sub_job"] = {
                "job_id": child.id,
                "blueprint": child.blueprint,
                "status": child.status,
                "state_history": child.state_history,
                "error": child.error,
            }
            target = wait.get("transitions", {}).get(outcome_name)
            if target is None:
                if outcome_name == "success":
                    return end(parent, JobStatus.FAILED, "the sub-job finished but no 'success' transition is declared")
                return end(parent, JobStatus.FAILED, f"sub-job {child.id} ended {child.status}: {child.error}")
            return move_to(parent, target)

        try:
            await self.engine.update_job(child.parent_job_id or "", build)
        except JobNotFound:
            logger.warning("sub-job %s ended but its parent %s is gone", child.id, child.parent_job_id)

    async def retry_step_due(self, job_id: str) -> None:
        """A handler's retry backoff is over: run it again."""

        async def build(job: Job) -> Outcome | None:
            if job.status != JobStatus.AWAITING_RETRY or (job.wait or {}).get("kind") != "retry":
                return None
            job.status = JobStatus.RUNNING
            job.wait = None
            return Outcome(Commit(job, run=True))

        try:
            await self.engine.update_job(job_id, build)
        except JobNotFound:
            return

    async def _open_tasks(self, job: Job) -> list[Task]:
        tasks = []
        for task_id in (job.wait or {}).get("task_ids", []):
            task = await self.engine.storage.get_task(task_id)
            if task is not None and task.status != TaskStatus.DONE:
                tasks.append(task)
        return tasks
