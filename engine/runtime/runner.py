"""Steps jobs: run the current state's handler and commit the one action it took."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..blueprint import StateMachineBlueprint
from ..errors import HandlerError, VersionConflict
from ..events import EventKind
from ..models import ENDED_STATUSES, RUNNABLE_STATUSES, Breakpoint, Job, JobStatus, Task, TaskStatus, new_id
from ..storage.base import Commit, StepStart
from ..timers import TimerKind
from .actions import ActionFactory, Dispatch, HumanApproval, RunBlueprint, Transition
from .breakpoints import holding
from .context import DataStores, JobContext
from .outcomes import backoff_s, changes_of, created, dispatched, end, event, hold, move_to, new_job, via, waited_via

if TYPE_CHECKING:
    from .shared import Runtime

logger = logging.getLogger(__name__)

#: Transitions stepped in a row without going back through the queue (a bound, for fairness).
INLINE_STEPS = 32


class JobRunner:
    """Consumes the queue of runnable jobs with a fixed number of long-lived coroutines."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: Jobs being stepped by a consumer of this process, and those queued again meanwhile. A job
        #: can be queued while it is being stepped (cancelled and retried while its handler runs);
        #: the consumer that takes it then leaves it to the one stepping it, which steps it again
        #: when done, so one job's handlers never run twice at once.
        self._stepping: set[str] = set()
        self._queued_again: set[str] = set()

    async def consume(self) -> None:
        """Step the jobs taken from the runnable queue, one step of a job at a time across processes.

        Within this process ``_stepping`` keeps a job's steps apart; across processes sharing the
        storage, the job's step lease does (``storage.lease_and_get_job``): an entry of a job another process
        is stepping waits for the lease, then steps what the job has become (often nothing). Storage
        calls that fail (Redis restarting) are retried, so a consumer never dies of one.
        """
        storage = self.runtime.storage
        holder = new_id()  # this consumer, in the step leases it holds
        while True:
            job_id = await storage.take_runnable(timeout_s=5.0)
            if job_id is None:
                continue
            if job_id in self._stepping:
                self._queued_again.add(job_id)
                await _retried(f"acknowledging job {job_id}", storage.finish_step, job_id, "")  # not leased
                continue
            self._stepping.add(job_id)
            leased = False
            try:
                start = await self._lease(job_id, holder)
                leased = True
                while True:
                    self._queued_again.discard(job_id)
                    await self._step_safely(job_id, start)
                    start = None  # queued again meanwhile: the next round reads it afresh
                    if job_id not in self._queued_again:
                        break
            finally:
                # No await between the last look at _queued_again and here, or an entry could be left to nobody.
                self._stepping.discard(job_id)
                self._queued_again.discard(job_id)
                await _retried(
                    f"finishing the step of job {job_id}", storage.finish_step, job_id, holder if leased else ""
                )

    async def _lease(self, job_id: str, holder: str) -> StepStart:
        """Wait for the job's step lease (another process may be stepping it); the job as leased."""
        delay_s = 0.01
        while True:
            start = await _retried(f"leasing job {job_id}", self.runtime.storage.lease_and_get_job, job_id, holder)
            if start.leased:
                return start  # type: ignore[no-any-return]
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.5)

    async def _step_safely(self, job_id: str, start: StepStart | None) -> None:
        try:
            if start is None:
                await self.step(job_id)
            else:
                await self.step(job_id, start.job, start.breakpoints)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("stepping job %s failed", job_id)
            await self._quarantine_after_crash(job_id, exc)

    async def _quarantine_after_crash(self, job_id: str, exc: Exception) -> None:
        """A step failed outside its handler: quarantine the job rather than leave it runnable but unqueued."""

        async def build(job: Job) -> Commit | None:
            if job.status not in RUNNABLE_STATUSES:
                return None
            return end(job, JobStatus.QUARANTINED, f"engine error while stepping state '{job.state}': {exc!r}")

        try:
            await self.runtime.committer.update_job(job_id, build)
        except Exception:
            logger.exception("could not quarantine job %s after its step failed", job_id)

    async def step(
        self, job_id: str, job: Job | None = None, breakpoints: list[Breakpoint] | None = None
    ) -> Job | None:
        """Run handlers of ``job_id`` until it waits, ends, is held, or has taken ``INLINE_STEPS`` steps.

        ``job``, ``breakpoints``: the job and the breakpoints as the caller just read them (with its step
        lease); read here when None. A job queued while it waits for a fan-out's branches had its last
        branch answered: it moves into its aggregation state first. Before each handler, a breakpoint
        on the job's state holds it instead (see :mod:`avtomatika.runtime.breakpoints`); a breakpoint set
        while a run of steps is under way holds the job from its next run.

        Transitions from one state to the next are committed together with the step that ends the
        run (a wait, the end, a hold, an error, or the last inline step): one commit, whose version
        check covers them all, instead of one per state. Before each further handler the job's
        version is read again, so no handler runs for a job changed meanwhile (cancelled while the
        previous one ran). A process dying before the commit lands leaves the job where it was
        committed last, and those handlers run again (at least once, as always).
        """
        runtime = self.runtime
        if job is None:
            job = await runtime.storage.get_job(job_id)
        if breakpoints is None:
            breakpoints = await runtime.storage.breakpoints()
        if job is not None and job.status == JobStatus.WAITING_FOR_PARALLEL_TASKS:
            job = await self.gather(job)
        moves: list[Commit] = []  # transitions run here and not committed yet
        for remaining in range(INLINE_STEPS, 0, -1):
            if job is None or job.status not in RUNNABLE_STATUSES:
                return job
            if moves and not await self._unchanged(job):
                return await runtime.storage.get_job(job_id)  # changed meanwhile: the moves are dropped
            breakpoint = holding(breakpoints, job)
            if breakpoint is not None:
                return await self._hold(_joined(moves, hold(job, breakpoint)), breakpoint)
            with runtime.tracer.step_span(job) as span:
                commit = await self.run_handler(job, requeue=remaining == 1)
                span.record(commit)
            if _only_moves(commit) and remaining > 1:
                moves.append(commit)
                continue
            try:
                job = await runtime.committer.apply(_joined(moves, commit))
            except VersionConflict:
                # Changed while the handlers ran (cancelled or failed, perhaps retried since): whatever made
                # it runnable again queued it, and that entry is stepped once this one ends (_queued_again).
                return await runtime.storage.get_job(job_id)
            moves = []
            if job.status not in RUNNABLE_STATUSES:
                if job.status in ENDED_STATUSES:
                    await self._drop_steps(job, breakpoints)
                return job
        return job

    async def _drop_steps(self, job: Job, breakpoints: list[Breakpoint]) -> None:
        """A job stepped into its end: its step's breakpoint would never hold it (an engine starting
        removes those this misses, see :meth:`Operations.sweep_holds`)."""
        for breakpoint in breakpoints:
            if breakpoint.once and breakpoint.job_id == job.id:
                await self.runtime.storage.remove_breakpoint(breakpoint.id)

    async def _hold(self, commit: Commit, breakpoint: Breakpoint) -> Job | None:
        """Commit the job held at ``breakpoint`` (with the moves that took it there); a step's
        breakpoint is used up then (if this process dies first, continuing the job removes it)."""
        try:
            job = await self.runtime.committer.apply(commit)
        except VersionConflict:
            return await self.runtime.storage.get_job(commit.job.id)
        if breakpoint.once:
            await self.runtime.storage.remove_breakpoint(breakpoint.id)
        return job

    async def _unchanged(self, job: Job) -> bool:
        """Whether the job is stored as ``job`` was read (its moves since are not committed yet)."""
        return await self.runtime.storage.job_version(job.id) == job.version

    async def gather(self, job: Job) -> Job | None:
        """Every branch of the job's fan-out answered: it enters its aggregation state (else it waits).

        The step a fan-out's last result queues (see :meth:`Storage.add_branch_result`); the step
        debugger, which steps jobs itself, calls it on a job it reads."""
        wait = job.wait or {}
        task_ids = wait.get("task_ids", [])
        answered = await self.runtime.storage.branch_results(job.id)
        if not task_ids or any(task_id not in answered for task_id in task_ids):
            return job
        parallel = bool(wait.get("parallel"))
        how = waited_via(job, "parallel" if parallel else "dispatch", "all done" if parallel else "success")
        commit = move_to(job, wait["aggregate_into"], run=False, how=how)
        commit.close_tasks = dict.fromkeys(task_ids, TaskStatus.DONE)
        try:
            return await self.runtime.committer.apply(commit)
        except VersionConflict:  # cancelled or failed meanwhile: whatever happened is stepped on its own
            return await self.runtime.storage.get_job(job.id)

    async def run_handler(self, job: Job, *, requeue: bool = True) -> Commit:
        """Run the handler of ``job``'s current state and turn what it did into a Commit."""
        blueprint = self.runtime.blueprints.get(job.blueprint)
        if blueprint is None:
            return end(job, JobStatus.FAILED, f"blueprint '{job.blueprint}' is not registered with this engine")
        info = blueprint.states.get(job.state)
        if info is None:
            return end(
                job,
                JobStatus.QUARANTINED,
                f"Blueprint '{job.blueprint}', state '{job.state}': no handler is registered for this state",
            )
        context = await self.context_for(blueprint, job)
        actions = context.actions
        original_history = job.state_history
        started = time.perf_counter()
        choice: _Choice | None = None
        changes: dict[str, Any] | None = None
        try:
            spec = blueprint.find_handler(job.state, context)
            choice = _Choice(spec.name, spec.condition_text, spec.condition_text is None and bool(info.conditional))
            result = spec.invoke(context)
            if inspect.isawaitable(result):
                await result
            history = dict(context.state_history)
            _check_storable(blueprint.name, job.state, "state_history", history)
            changes = changes_of(original_history, history)
            job.state_history = history
            commit = await self._commit_of(blueprint, job, info.is_end, actions, requeue, choice)
        except HandlerError as exc:  # a mistake in the blueprint: retrying will not help
            job.state_history, changes = original_history, None
            commit = end(job, JobStatus.QUARANTINED, str(exc))
        except Exception as exc:
            job.state_history, changes = original_history, None
            commit = self._handler_failed(job, exc)
        duration_ms = (time.perf_counter() - started) * 1000
        step = event(EventKind.STEP_FINISHED, job, state=context.current_state, duration_ms=round(duration_ms, 3))
        _describe_step(step.data, choice, actions, changes)
        commit.events = [step, *commit.events]
        return commit

    async def context_for(self, blueprint: StateMachineBlueprint, job: Job) -> JobContext:
        """The context the handler of ``job``'s state receives: copies of its data (what a handler changes
        in place reaches the job only if its step succeeds, so a failed step retried or released starts
        from the same data as the first attempt), and in an aggregation state the branch results."""
        info = blueprint.states.get(job.state)
        aggregating = info is not None and info.is_aggregator
        return JobContext(
            job_id=job.id,
            blueprint_name=job.blueprint,
            current_state=job.state,
            initial_data=_copy(job.initial_data),
            state_history=_copy(job.state_history),
            actions=ActionFactory(blueprint.name, job.state),
            data_stores=DataStores(blueprint.data_stores),
            client=self.runtime.client_info(job.client),
            aggregation_results=await self.runtime.storage.branch_results(job.id) if aggregating else None,
        )

    async def _commit_of(
        self,
        blueprint: StateMachineBlueprint,
        job: Job,
        is_end: bool,
        actions: ActionFactory,
        requeue: bool,
        choice: _Choice,
    ) -> Commit:
        """The commit of the action the handler took; ``choice``: which handler it was (its ``.when()``,
        or the default one of a state that has ``.when()`` handlers), kept in the job's wait so the edge
        its answer follows is known (see :func:`waited_via`)."""
        action = actions.result()
        if is_end:
            if action is not None:
                raise HandlerError(blueprint.name, job.state, "the handler of an end state may not take an action")
            return end(job, JobStatus.FINISHED, None)
        if action is None:
            raise HandlerError(
                blueprint.name,
                job.state,
                "the handler took no action; call context.actions.transition_to(...) or another action",
            )
        if isinstance(action, Transition):
            self._check_target(blueprint, job.state, action.target)
            how = via("transition", condition=choice.condition, otherwise=choice.otherwise or None)
            return move_to(job, action.target, run=requeue, how=how)
        if isinstance(action, Dispatch):
            commit = await self._dispatch(blueprint, job, action)
        elif isinstance(action, HumanApproval):
            commit = self._await_human(blueprint, job, action)
        else:
            commit = self._run_blueprint(blueprint, job, action)
        if job.wait is not None and choice.condition is not None:
            job.wait["condition"] = choice.condition
        elif job.wait is not None and choice.otherwise:
            job.wait["otherwise"] = True
        return commit

    def _await_human(self, blueprint: StateMachineBlueprint, job: Job, action: HumanApproval) -> Commit:
        for target in action.transitions.values():
            self._check_target(blueprint, job.state, target)
        job.status = JobStatus.WAITING_FOR_HUMAN
        job.wait = {
            "kind": "human",
            "transitions": action.transitions,
            "message": action.message,
            "integration": action.integration,
        }
        waiting = event(
            EventKind.JOB_WAITING,
            job,
            waiting_for="human",
            message=action.message,
            integration=action.integration,
        )
        return Commit(job, events=[waiting])

    def _run_blueprint(self, blueprint: StateMachineBlueprint, job: Job, action: RunBlueprint) -> Commit:
        """Start a sub-job in the same commit that makes this one wait for it."""
        child_blueprint = self.runtime.blueprints.get(action.blueprint_name)
        if child_blueprint is None:
            raise HandlerError(blueprint.name, job.state, f"run_blueprint: unknown blueprint '{action.blueprint_name}'")
        for target in action.transitions.values():
            self._check_target(blueprint, job.state, target)
        _check_storable(blueprint.name, job.state, "run_blueprint initial_data", action.initial_data)
        try:
            child = new_job(
                child_blueprint,
                action.initial_data,
                client=job.client,
                parent_job_id=job.id,
                tracing_context=job.tracing_context,
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise HandlerError(
                blueprint.name,
                job.state,
                f"run_blueprint: blueprint '{action.blueprint_name}' refuses the initial_data: {exc}",
            ) from None
        job.status = JobStatus.WAITING_FOR_SUB_JOB
        job.wait = {"kind": "sub_job", "child_job_id": child.id, "transitions": action.transitions}
        waiting = event(EventKind.JOB_WAITING, job, waiting_for="sub_job", child_job_id=child.id)
        return Commit(job, children=[child], events=[waiting, created(child, child_blueprint)])

    async def _dispatch(self, blueprint: StateMachineBlueprint, job: Job, action: Dispatch) -> Commit:
        aggregate_into = action.aggregate_into
        for spec in action.tasks:
            for target in spec.transitions.values():
                self._check_target(blueprint, job.state, target)
            _check_storable(blueprint.name, job.state, f"dispatch_task({spec.task_type!r}) params", spec.params)
        if aggregate_into is None:
            targets = {spec.transitions.get("success") for spec in action.tasks}
            single_target = next(iter(targets)) if len(targets) == 1 else None
            is_aggregator = single_target is not None and blueprint.states[single_target].is_aggregator
            if len(action.tasks) > 1 and not is_aggregator:
                raise HandlerError(
                    blueprint.name,
                    job.state,
                    "several dispatch_task calls fan out, so all their 'success' transitions must lead to one "
                    "aggregation state (registered with aggregator_for)",
                )
            aggregate_into = single_target if is_aggregator else None
        elif aggregate_into not in blueprint.states:
            self._check_target(blueprint, job.state, aggregate_into)
        elif not blueprint.states[aggregate_into].is_aggregator:
            raise HandlerError(
                blueprint.name,
                job.state,
                f"dispatch_parallel: '{aggregate_into}' is not an aggregation state (use aggregator_for)",
            )
        tasks = [
            Task(
                id=new_id(),
                job_id=job.id,
                type=spec.task_type,
                params=spec.params,
                transitions=spec.transitions,
                priority=spec.priority,
                timeout_s=spec.timeout_s,
                strategy=spec.strategy,
                requirements=spec.requirements,
                max_cost=spec.max_cost,
                aggregate_into=aggregate_into,
                state=job.state,
                tracing_context=job.tracing_context,
            )
            for spec in action.tasks
        ]
        await self.runtime.assign_workers(tasks)
        for task in tasks:  # after assign_workers: the span names the chosen worker
            task.tracing_context = self.runtime.tracer.dispatch_span(job, task)
        job.status = JobStatus.WAITING_FOR_PARALLEL_TASKS if aggregate_into else JobStatus.WAITING_FOR_WORKER
        job.wait = {"kind": "tasks", "task_ids": [t.id for t in tasks]}
        if aggregate_into:  # a fan-out's; a job of one task keeps no null key (22 bytes, in every store)
            job.wait["aggregate_into"] = aggregate_into
        if action.aggregate_into is not None:  # dispatch_parallel: the graph's "all done" edge
            job.wait["parallel"] = True
        fan_in = len(tasks) if aggregate_into else None
        return Commit(job, tasks=tasks, fan_in=fan_in, events=[dispatched(job, t) for t in tasks])

    @staticmethod
    def _check_target(blueprint: StateMachineBlueprint, state: str, target: str) -> None:
        if target not in blueprint.states:
            raise HandlerError(blueprint.name, state, f"transition to unknown state '{target}'")

    def _handler_failed(self, job: Job, exc: Exception) -> Commit:
        config = self.runtime.config
        reason = f"Blueprint '{job.blueprint}', state '{job.state}': handler raised {type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        logger.warning("%s", reason, extra={"job_id": job.id, "blueprint": job.blueprint, "state": job.state})
        job.handler_attempts += 1
        if job.handler_attempts > config.JOB_MAX_RETRIES:
            commit = end(job, JobStatus.QUARANTINED, reason)
            commit.events[0].data["traceback"] = trace
            return commit
        delay = backoff_s(job.handler_attempts, config.RETRY_BACKOFF_BASE_SECONDS, config.RETRY_BACKOFF_MAX_SECONDS)
        job.status = JobStatus.AWAITING_RETRY
        job.error = reason
        job.retry_count += 1
        retry_at = time.time() + delay
        job.wait = {"kind": "retry", "retry_at": retry_at}
        retry = event(
            EventKind.HANDLER_RETRY,
            job,
            error=reason,
            traceback=trace,
            attempt=job.handler_attempts,
            retry_in_s=round(delay, 3),
        )
        return Commit(job, timers={TimerKind.RETRY_JOB.of(job.id): retry_at}, events=[retry])


@dataclass(frozen=True, slots=True)
class _Choice:
    """Which handler of a state ran: its name, the ``.when()`` that chose it, or ``otherwise`` (the
    default handler of a state that also has ``.when()`` handlers)."""

    handler: str
    condition: str | None
    otherwise: bool


def _action_kind(action: object) -> str | None:
    if isinstance(action, Transition):
        return "transition"
    if isinstance(action, Dispatch):
        return "fan_out" if action.aggregate_into is not None or len(action.tasks) > 1 else "dispatch"
    if isinstance(action, HumanApproval):
        return "human"
    return "sub_job" if isinstance(action, RunBlueprint) else None


def _describe_step(
    data: dict[str, Any], choice: _Choice | None, actions: ActionFactory, changes: dict[str, Any] | None
) -> None:
    """What ``step_finished`` records beyond the time: the handler that ran (and the ``.when()`` that
    chose it; none for the default handler), the kind of action it took, what it changed in
    ``state_history``."""
    if choice is None:
        return
    data["handler"] = choice.handler
    if choice.condition is not None:
        data["condition"] = choice.condition
    elif choice.otherwise:
        data["otherwise"] = True
    kind = _action_kind(actions.result())
    if kind is not None:
        data["action"] = kind
    if changes is not None:
        data["changes"] = changes


async def _retried(what: str, call: Any, *args: Any) -> Any:
    """``await call(*args)``, again after a growing pause for as long as it fails (Redis restarting)."""
    delay_s = 0.05
    while True:
        try:
            return await call(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s failed (%s); retrying in %.2f s", what, exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)


def _only_moves(commit: Commit) -> bool:
    """Whether ``commit`` only moves its job to its next state: nothing else to write with it yet."""
    return (
        commit.job.status in RUNNABLE_STATUSES
        and not (commit.tasks or commit.close_tasks or commit.timers or commit.cancel_timers or commit.children)
        and commit.fan_in is None
    )


def _joined(moves: list[Commit], last: Commit) -> Commit:
    """``last``, carrying the events of the transitions before it (the same job, moved on in place)."""
    if moves:
        last.events = [event for move in moves for event in move.events] + list(last.events)
    return last


def _check_storable(blueprint: str, state: str, what: str, value: object) -> None:
    """Jobs and tasks are stored as JSON: refuse what cannot be, naming it, instead of failing the commit."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise HandlerError(blueprint, state, f"{what} cannot be stored as JSON: {exc}") from None


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of stored (so JSON) data."""
    return orjson.loads(orjson.dumps(value))  # type: ignore[no-any-return]
