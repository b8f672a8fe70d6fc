"""Running a state's handler: the context it receives, which handler runs (its ``.when()``), and the
commit its one action becomes: a transition, a task or a fan-out dispatched, an approval awaited, a
sub-job started; or, when it raised, a retry later or quarantine."""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import orjson

from ..blueprint import StateMachineBlueprint
from ..errors import HandlerError
from ..events import EventKind
from ..models import Job, JobStatus, Task, new_id, wait_on_tasks
from ..storage.base import Commit
from ..timers import TimerKind
from .actions import ActionFactory, Dispatch, HumanApproval, RunBlueprint, Transition
from .context import DataStores, JobContext
from .outcomes import backoff_s, changes_of, created, dispatched, end, event, move_to, new_job, via

if TYPE_CHECKING:
    from .shared import Runtime

logger = logging.getLogger(__name__)


class Handlers:
    """Runs handlers of the runtime's blueprints; applies nothing (the runner commits what it returns)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run(self, job: Job, *, requeue: bool = True) -> Commit:
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
            if type(result) is CoroutineType or inspect.isawaitable(result):  # the first: async handlers, quickly
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
        # A fan-out's tasks mostly share their transitions: each target is checked once.
        for target in dict.fromkeys(target for spec in action.tasks for target in spec.transitions.values()):
            self._check_target(blueprint, job.state, target)
        _check_params(blueprint.name, job.state, action)
        aggregate_into = self._aggregation_state(blueprint, job, action)
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
        job.wait = wait_on_tasks([t.id for t in tasks])
        if aggregate_into:  # a fan-out's; a job of one task keeps no null key (22 bytes, in every store)
            job.wait["aggregate_into"] = aggregate_into
        if action.aggregate_into is not None:  # dispatch_parallel: the graph's "all done" edge
            job.wait["parallel"] = True
        fan_in = len(tasks) if aggregate_into else None
        return Commit(job, tasks=tasks, fan_in=fan_in, events=[dispatched(job, t) for t in tasks])

    def _aggregation_state(self, blueprint: StateMachineBlueprint, job: Job, action: Dispatch) -> str | None:
        """Where the dispatched tasks' answers are gathered: dispatch_parallel's ``aggregate_into``, or
        the one aggregation state every ``success`` leads to (None for a single task)."""
        aggregate_into = action.aggregate_into
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
        return aggregate_into

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


def _check_storable(blueprint: str, state: str, what: str, value: object) -> None:
    """Jobs and tasks are stored as JSON: refuse what cannot be, naming it, instead of failing the commit."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise HandlerError(blueprint, state, f"{what} cannot be stored as JSON: {exc}") from None


def _check_params(blueprint: str, state: str, action: Dispatch) -> None:
    """Every dispatched task's params can be stored as JSON: one encoding of them all (a fan-out's
    hundreds at once), then task by task only to name the one that cannot."""
    try:
        orjson.dumps([spec.params for spec in action.tasks])
    except TypeError:
        for spec in action.tasks:
            _check_storable(blueprint, state, f"dispatch_task({spec.task_type!r}) params", spec.params)


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of stored (so JSON) data."""
    return orjson.loads(orjson.dumps(value))  # type: ignore[no-any-return]
