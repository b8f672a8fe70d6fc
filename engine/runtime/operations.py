"""What clients and operators do to jobs: cancel, retry, release, fail, answer an approval; and what
one job's end does to another (resume a parent, cancel a sub-job), carried out from their timers.

Every operation names its ``actor`` (a client, an operator, ``"webhook"``), which goes into the
event and so into history.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypedDict

import orjson

from ..errors import BreakpointNotFound, BreakpointRefused, InvalidOperation, JobNotFound, UnknownBlueprint
from ..events import EventKind, job_rerun
from ..models import ANY_STATE, ENDED_STATUSES, TERMINAL_STATUSES, Breakpoint, Job, JobStatus, Task, TaskStatus
from ..storage.base import Commit, JobFilter
from .breakpoints import HELD, passed_wait, step_breakpoint, step_id
from .outcomes import changes_of, created, dispatched, end, event, move_to, new_job, next_attempt, via, waited_via

if TYPE_CHECKING:
    from .rerun import RerunOrigin
    from .shared import Runtime

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUARANTINED})


class NewJobOptions(TypedDict, total=False):
    """What else a new job may be given beside its blueprint and input."""

    #: The client that owns it (it alone sees the job through the client API).
    client: str | None
    #: The job that started it as a sub-job.
    parent_job_id: str | None
    #: Its id (a new one when omitted); a bulk rerun names its jobs.
    job_id: str | None
    #: The caller's trace (W3C ``traceparent``...), continued by the job's.
    tracing_context: dict[str, str] | None
    #: Who asked, when not the client itself; recorded in history.
    actor: str | None


class Operations:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def create(
        self,
        blueprint_name: str,
        initial_data: dict[str, Any] | None = None,
        *,
        client: str | None = None,
        parent_job_id: str | None = None,
        job_id: str | None = None,
        tracing_context: dict[str, str] | None = None,
        actor: str | None = None,
    ) -> Job:
        """Create a job at its blueprint's start state and queue it to run.

        ``client`` owns the job (it alone sees it through the client API); ``actor`` is who asked,
        when not the client itself (an operator in the studio), and is recorded in history.
        """
        blueprint = self.runtime.blueprints.get(blueprint_name)
        if blueprint is None:
            raise UnknownBlueprint(blueprint_name)
        job = new_job(blueprint, initial_data, job_id=job_id, client=client, parent_job_id=parent_job_id)
        tracer = self.runtime.tracer
        job.tracing_context = tracer.job_trace_context(tracing_context, job_id=job.id, blueprint=blueprint_name)
        return await self.runtime.committer.create_job(job, [created(job, blueprint, actor)])

    async def cancel(self, job_id: str, actor: str, *, bulk_id: str | None = None) -> Job:
        async def build(job: Job) -> Commit:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot cancel a job that is {job.status}")
            return await self._stop(job, JobStatus.CANCELLED, f"cancelled by {actor}", _by(actor, bulk_id))

        return await self.runtime.committer.update_job(job_id, build)

    async def retry(self, job_id: str, actor: str, from_state: str | None = None, *, bulk_id: str | None = None) -> Job:
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
            retried = event(EventKind.JOB_RETRIED, job, from_state=target, **_by(actor, bulk_id))
            commit.events = [retried, *commit.events]
            return commit

        return await self.runtime.committer.update_job(job_id, build)

    async def release(
        self, job_id: str, actor: str, params: dict[str, object] | None = None, *, bulk_id: str | None = None
    ) -> Job:
        """Resume a quarantined job: its held tasks dispatched again, or, when it was quarantined by its
        handler, the handler run again.

        ``params`` are merged into those of the task that failed (the first held one); the other held
        tasks (fan-out branches withdrawn by the quarantine) go out again as they were. The event
        says what changed in that task's params (``changes``, as :func:`~avtomatika.runtime.outcomes.changes_of`).
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
            changes = None
            if not held or wait.get("kind") != "tasks":
                commit = move_to(job, job.state, how=via("release", actor=actor))
            else:
                commit = await self._redispatch(job, held, params)
                changes = changes_of(held[0].params, commit.tasks[0].params)
            released = event(EventKind.JOB_RELEASED, job, params=params, changes=changes, **_by(actor, bulk_id))
            commit.events = [released, *commit.events]
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

    async def fail(self, job_id: str, actor: str, reason: str | None = None, *, bulk_id: str | None = None) -> Job:
        async def build(job: Job) -> Commit:
            if job.status in TERMINAL_STATUSES and job.status != JobStatus.QUARANTINED:
                raise InvalidOperation(job_id, f"cannot fail a job that is {job.status}")
            return await self._stop(job, JobStatus.FAILED, reason or f"failed by {actor}", _by(actor, bulk_id))

        return await self.runtime.committer.update_job(job_id, build)

    async def _stop(self, job: Job, status: JobStatus, reason: str, by: dict[str, str]) -> Commit:
        """An operator ends ``job``: the error it held (why it was quarantined, or is retrying) is its
        root cause, kept beside the operator's reason in the job's error and in the event. ``by``: who
        (``actor``, and ``bulk_id`` when a bulk action did it)."""
        cause = job.error
        error = f"{reason} · root cause: {cause}" if cause else reason
        commit = end(job, status, error, await self._open_tasks(job))
        commit.events[0].data.update(by, reason=reason)
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

    # -- breakpoints -----------------------------------------------------------------------------
    async def set_breakpoint(
        self, blueprint: str | None, state: str, *, job_id: str | None = None, actor: str | None = None
    ) -> Breakpoint:
        """Hold jobs before ``state``'s handler runs: the job ``job_id``, or every job of ``blueprint``
        created from now on. ``state`` ``"*"`` (for one job) holds it at the next state it enters
        (a step: the breakpoint goes once it holds the job)."""
        job = None
        if job_id is not None:
            job = await self.runtime.storage.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            if blueprint not in (None, job.blueprint):
                refused = f"job {job_id} is of blueprint '{job.blueprint}', not {blueprint!r}"
                raise BreakpointRefused("blueprint", refused)
            blueprint = job.blueprint
        if blueprint is None:
            raise BreakpointRefused("blueprint", "name a blueprint, or a job")
        found = self.runtime.blueprints.get(blueprint)
        if found is None:
            raise UnknownBlueprint(blueprint)
        if state == ANY_STATE:
            if job is None:
                raise BreakpointRefused("state", "'*' (the next state) holds one job: name the job")
            breakpoint = step_breakpoint(job, actor)
        elif state in found.states:
            breakpoint = Breakpoint(blueprint, state, job_id=job_id, actor=actor)
        else:
            choices = ", ".join(sorted(found.states))
            raise BreakpointRefused("state", f"blueprint '{blueprint}' has no state '{state}'; its states: {choices}")
        await self.runtime.storage.set_breakpoint(breakpoint)
        return breakpoint

    async def remove_breakpoint(self, breakpoint_id: str, actor: str) -> list[Job]:
        """Remove a breakpoint and continue the jobs it holds; the jobs continued."""
        if await self.runtime.storage.remove_breakpoint(breakpoint_id) is None:
            raise BreakpointNotFound(breakpoint_id)
        return await self.sweep_holds(actor)

    async def release_holds_due(self, breakpoint_id: str) -> None:
        """A breakpoint was removed (its ``RELEASE_HOLDS`` timer): its jobs are continued."""
        await self.sweep_holds("engine")

    async def sweep_holds(self, actor: str) -> list[Job]:
        """Continue the jobs held at a breakpoint that is gone; remove the breakpoints of steps whose
        job ended (or is gone) before it reached another state, and those of one job that finished (or
        is gone: a failed or cancelled job may be retried, and meet its breakpoint again). The jobs
        continued.

        Removing a breakpoint does this, and again from the timer set with the removal (the remover
        may die first); an engine starting does it too."""
        storage = self.runtime.storage
        current = await storage.breakpoints()
        for breakpoint in current:
            if breakpoint.job_id is not None:
                job = await storage.get_job(breakpoint.job_id)
                over = ENDED_STATUSES if breakpoint.once else {JobStatus.FINISHED}
                if job is None or job.status in over:
                    await storage.remove_breakpoint(breakpoint.id)
        kept = {bp.id for bp in current}
        continued = []
        offset, page = 0, 500
        while batch := await storage.list_jobs(JobFilter(status=JobStatus.HELD), limit=page, offset=offset):
            offset += len(batch)
            for job in batch:
                wait = job.wait or {}
                if wait.get("once") or wait.get("breakpoint_id") in kept:
                    continue  # a step's hold (its breakpoint is gone once it holds), or held still
                try:
                    continued.append(await self.continue_job(job.id, actor))
                    offset -= 1  # no longer held: the next page starts one earlier
                except (InvalidOperation, JobNotFound):
                    continue  # continued or cancelled meanwhile
        return continued

    async def continue_job(
        self,
        job_id: str,
        actor: str,
        *,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
        step: bool = False,
        bulk_id: str | None = None,
    ) -> Job:
        """Run the handler a held job waits before, with its data edited (replaced) if given; with
        ``step`` the job is held again at the next state it enters."""
        storage = self.runtime.storage
        job = await storage.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        _check_held(job)
        for name, value in (("initial_data", initial_data), ("state_history", state_history)):
            if value is not None:
                _check_json(job_id, name, value)
        blueprint = self.runtime.blueprints.get(job.blueprint)
        if initial_data is not None and blueprint is not None and blueprint.input_model is not None:
            model = blueprint.input_model.model_validate(initial_data)  # type: ignore[attr-defined]
            initial_data = model.model_dump(mode="json")
        # Before the commit: a step's breakpoint is set (or one left behind by a dead process is gone)
        # before the job can reach another state.
        if step:
            await storage.set_breakpoint(step_breakpoint(job, actor))
        else:
            await storage.remove_breakpoint(step_id(job_id))

        async def build(job: Job) -> Commit:
            _check_held(job)
            edits = {}
            for name, value in (("initial_data", initial_data), ("state_history", state_history)):
                if value is None:
                    continue
                if (changes := changes_of(getattr(job, name), value)) is not None:
                    edits[name] = changes
                    setattr(job, name, dict(value))
            job.status = JobStatus.RUNNING
            job.wait = passed_wait(job)
            continued = event(EventKind.JOB_CONTINUED, job, step=step, edits=edits, **_by(actor, bulk_id))
            return Commit(job, run=True, events=[continued])

        try:
            return await self.runtime.committer.update_job(job_id, build)
        except (InvalidOperation, JobNotFound):
            if step:  # not continued (cancelled or continued meanwhile): no step either
                await storage.remove_breakpoint(step_id(job_id))
            raise

    async def rerun(
        self,
        origin: RerunOrigin,
        actor: str,
        *,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
        job_id: str | None = None,
        bulk_id: str | None = None,
    ) -> Job:
        """Start a new job at ``origin``'s state with its data there, ``initial_data`` or
        ``state_history`` replacing it when given (checked as a new job's: by the input model)."""
        blueprint = self.runtime.blueprints.get(origin.blueprint)
        if blueprint is None:
            raise UnknownBlueprint(origin.blueprint)
        if origin.state not in blueprint.states:
            raise InvalidOperation(origin.job_id, f"blueprint '{blueprint.name}' has no state '{origin.state}'")
        data = origin.initial_data if initial_data is None else initial_data
        history = origin.state_history if state_history is None else state_history
        for name, value in (("initial_data", data), ("state_history", history)):
            _check_json(origin.job_id, name, value)
        job = new_job(blueprint, data, job_id=job_id, client=origin.client)
        job.state, job.visits, job.state_history = origin.state, {origin.state: 1}, dict(history)
        job.tracing_context = self.runtime.tracer.job_trace_context(None, job_id=job.id, blueprint=blueprint.name)
        edits = {}
        for name, before, after in (
            ("initial_data", origin.initial_data, job.initial_data),
            ("state_history", origin.state_history, job.state_history),
        ):
            if (found := changes_of(before, after)) is not None:
                touched = [*found.get("set", {}), *found.get("unset", [])]
                edits[name] = {**found, "was": {key: before[key] for key in touched if key in before}}
        start = created(job, blueprint, actor)
        start.data.update(rerun_of=origin.link(), state_history=job.state_history, edits=edits, **_by(actor, bulk_id))
        link = job_rerun(origin.job_id, job.id, origin.state, **_by(actor, bulk_id))
        return await self.runtime.committer.create_job(job, [start, link])

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


def _by(actor: str, bulk_id: str | None) -> dict[str, str]:
    """Who did an operation, for its event: the actor, and the bulk action it was part of."""
    return {"actor": actor} if bulk_id is None else {"actor": actor, "bulk_id": bulk_id}


def _check_held(job: Job) -> None:
    if job.status != JobStatus.HELD or (job.wait or {}).get("kind") != HELD:
        raise InvalidOperation(job.id, f"only held jobs can be continued, not {job.status}")


def _check_json(job_id: str, name: str, value: object) -> None:
    """Jobs are stored as JSON: refuse an edit that cannot be, naming it."""
    if not isinstance(value, dict):
        raise InvalidOperation(job_id, f"{name} must be an object, not {type(value).__name__}")
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise InvalidOperation(job_id, f"{name} cannot be stored as JSON: {exc}") from None
