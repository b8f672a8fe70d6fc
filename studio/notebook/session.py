"""Stepping one job by hand: the engine work behind :class:`~avtomatika.studio.notebook.StepDebugger`.

The engine's runner coroutines step every runnable job by themselves. A debugged job must move only
when asked, so the debugger's engine does not step jobs itself (``engine.steps_jobs = False``),
and :class:`DebugSession` steps the job with the engine's own pieces: ``engine.runner.run_handler``
(the handler, turned into a Commit, not applied) and ``engine.committer.apply`` (commit, then publish the
events). Everything else is the engine's as usual: worker results (by hand, or from real workers when
the engine serves HTTP), timers (its scheduler runs), history, the studio.

Back restores the job as it was before an earlier step: the snapshot's content is committed as the
job's next version, so history and the studio see it as one more change (a ``job_retried`` event).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...actions import ActionFactory
from ...blueprint import StateMachineBlueprint
from ...config import Config
from ...context import DataStores, JobContext
from ...engine import OrchestratorEngine
from ...errors import AvtomatikaError, HandlerError, VersionConflict
from ...events import Event, EventKind
from ...models import RUNNABLE_STATUSES, WAITING_ON_TASKS, Job, JobStatus, Task, TaskStatus
from ...outcomes import event, stop_on_workers
from ...storage import Commit, MemoryStorage
from ...timers import TimerKind
from ._render import Change, diff, short

logger = logging.getLogger(__name__)

#: The worker id under which tasks are answered by hand.
MANUAL_WORKER = "notebook-step-debugger"
#: The actor named in events and history for what the debugger does.
ACTOR = "step debugger"
#: Steps one Continue takes at most (a guard against a blueprint that loops forever).
MAX_CONTINUE_STEPS = 500
#: Events of the job kept to explain changes made outside the debugger.
EVENTS_KEPT = 500
#: Settings of an engine the debugger creates: no backoff (a retry is due at once), and only errors
#: logged (the widget shows what a handler raised).
DEBUG_SETTINGS: dict[str, Any] = {
    "RETRY_BACKOFF_BASE_SECONDS": 0.0,
    "RETRY_BACKOFF_MAX_SECONDS": 0.0,
    "API_HOST": "127.0.0.1",
    "LOG_LEVEL": "ERROR",
    "LOG_FORMAT": "text",
}


class DebuggerError(AvtomatikaError):
    """What the debugger cannot do now (answer a task when none is waiting, go back to no step...)."""


def debug_engine(*blueprints: StateMachineBlueprint, config: Config | None = None) -> OrchestratorEngine:
    """An engine (in-memory storage) whose jobs move only when a debugger steps them.

    Start it yourself with ``await engine.start(host="127.0.0.1", port=0)`` to let real workers (and
    the studio) connect, then hand it to ``StepDebugger(engine, ...)``.

    Args:
        blueprints: Registered at once (each is validated).
        config: Settings; :data:`DEBUG_SETTINGS` over the environment when omitted.
    """
    engine = OrchestratorEngine(MemoryStorage(), config or Config(**DEBUG_SETTINGS))
    engine.steps_jobs = False
    for blueprint in blueprints:
        engine.register_blueprint(blueprint)
    return engine


def _copy(job: Job) -> Job:
    return Job.from_dict(job.to_dict())  # type: ignore[no-any-return]


@dataclass(slots=True)
class Snapshot:
    """The job as it was before step ``index`` + 1 (``index`` steps had been taken)."""

    index: int
    job: Job

    @property
    def label(self) -> str:
        return f"{self.index}: before step {self.index + 1}, in {self.job.state}"


@dataclass(slots=True)
class Entry:
    """One line of the debugger's log: a step, a task answered, a restore, or a change from outside."""

    kind: str  # step | answer | back | release | outside
    state: str  # the state it happened in
    action: str  # what was done, in words
    status: str  # the job's status after it
    next_state: str  # the job's state after it
    handler: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # initial_data and state_history before it
    changes: list[Change] = field(default_factory=list)  # the state_history diff
    error: str | None = None
    traceback: str | None = None
    step: int | None = None  # the step's number, for kind "step"


class DebugSession:
    """One job of ``blueprint``, stepped by hand in ``engine``.

    Args:
        engine: An engine that does not step jobs itself (see :func:`debug_engine`); one that
            is not started yet gets one, and is started here (without HTTP) and stopped by :meth:`close`.
        blueprint: The blueprint of the job (registered with ``engine`` if it is not yet).
        initial_data: The job's input.
        on_change: Called after every change of the job, whoever made it (the widget re-draws).
    """

    def __init__(
        self,
        engine: OrchestratorEngine,
        blueprint: StateMachineBlueprint,
        initial_data: dict[str, Any] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.blueprint = blueprint
        self.initial_data = dict(initial_data or {})
        self.on_change = on_change
        self.job: Job | None = None
        self.snapshots: list[Snapshot] = []
        self.entries: list[Entry] = []
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.steps_taken = 0
        self._owns_start = False
        self._lock = asyncio.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._known_version = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> Job:
        """Start the engine if needed and create the job (at its start state, not stepped)."""
        engine = self.engine
        if engine.steps_jobs:
            if engine.running:
                raise DebuggerError(
                    "this engine steps its jobs by itself; debug in an engine from debug_engine(), "
                    "or pass the blueprint and let the debugger make one"
                )
            engine.steps_jobs = False
        if engine.blueprints.get(self.blueprint.name) is not self.blueprint:
            engine.register_blueprint(self.blueprint)
        if not engine.running:
            await engine.start(http=False)
            self._owns_start = True
        self._unsubscribe = engine.events.subscribe(self._on_event)
        job = await engine.create_job(self.blueprint.name, self.initial_data)
        self._seen(job)
        self.snapshots.append(Snapshot(0, _copy(job)))
        return job

    async def close(self) -> None:
        """Stop listening, and stop the engine if this session started it."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._owns_start:
            self._owns_start = False
            await self.engine.stop()

    def _on_event(self, event: Event) -> None:
        if self.job is not None and event.job_id == self.job.id:
            self.events.append(event)
            if self.on_change is not None:
                self.on_change()

    def _seen(self, job: Job) -> Job:
        self.job = job
        self._known_version = job.version
        return job

    async def fresh(self) -> Job:
        """The job as stored now; a change made by someone else (a worker, the studio) is logged."""
        job = await self._read()
        if job.version != self._known_version and self.job is not None:
            before = self.job
            self.entries.append(
                Entry(
                    "outside",
                    before.state,
                    _outside_action(before, job, list(self.events)),
                    job.status,
                    job.state,
                    changes=diff(before.state_history, job.state_history),
                    error=job.error,
                )
            )
        return self._seen(job)

    async def sync(self) -> Job:
        """:meth:`fresh`, once no step or answer is under way."""
        async with self._lock:
            return await self.fresh()

    async def _read(self) -> Job:
        if self.job is None:
            raise DebuggerError("the job is not created yet: await the debugger first")
        job = await self.engine.get_job(self.job.id)
        if job is None:
            raise DebuggerError(f"job {self.job.id} is gone from the engine")
        return job

    # -- what comes next ------------------------------------------------------------------------
    def next_handler(self, job: Job | None = None) -> str | None:
        """``name (when ...)`` of the handler the next step would run, or why there is none."""
        job = job or self.job
        if job is None:
            return None
        context = JobContext(
            job_id=job.id,
            blueprint_name=job.blueprint,
            current_state=job.state,
            initial_data=dict(job.initial_data),
            state_history=dict(job.state_history),
            actions=ActionFactory(self.blueprint.name, job.state),
            data_stores=DataStores(self.blueprint.data_stores),
        )
        try:
            spec = self.blueprint.find_handler(job.state, context)
        except HandlerError as exc:
            return f"none: {exc}"
        except Exception as exc:  # a condition that cannot be evaluated on this context
            return f"cannot tell: {type(exc).__name__}: {exc}"
        return spec.name + (f"  (when {spec.condition_text})" if spec.condition_text else "")

    async def open_tasks(self) -> list[Task]:
        """The tasks the job waits on and that are not answered yet."""
        job = await self._read()
        if job.status not in WAITING_ON_TASKS and job.status != JobStatus.AWAITING_RETRY:
            return []
        tasks = await self.engine.current_tasks(job)
        return [t for t in tasks if t.status not in (TaskStatus.DONE, TaskStatus.WITHDRAWN)]

    # -- stepping -------------------------------------------------------------------------------
    async def step(self) -> Entry:
        """Run the current state's handler once and apply the action it took."""
        async with self._lock:
            return await self._step(await self.fresh())

    async def continue_(self, breakpoints: set[str], max_steps: int = MAX_CONTINUE_STEPS) -> list[Entry]:
        """Step until the job enters a breakpoint state, waits (for a task, a person...), ends, or a handler raises."""
        taken: list[Entry] = []
        async with self._lock:
            while len(taken) < max_steps:
                job = await self.fresh()
                if not _steppable(job) or (taken and job.state in breakpoints):
                    break
                entry = await self._step(job)
                taken.append(entry)
                if entry.error is not None:
                    break
                await asyncio.sleep(0)  # let the kernel answer messages between steps
        return taken

    async def _step(self, job: Job) -> Entry:
        if job.status == JobStatus.AWAITING_RETRY and (job.wait or {}).get("kind") == "retry":
            await self.engine.operations.retry_step_due(job.id)  # the backoff is over: it is stepped now
            job = self._seen(await self._read())
        if job.status not in RUNNABLE_STATUSES:
            raise DebuggerError(f"the job is {job.status.replace('_', ' ')}: {_why_not(job)}")
        self.snapshots = [s for s in self.snapshots if s.index < self.steps_taken]
        self.snapshots.append(Snapshot(self.steps_taken, _copy(job)))
        before = _copy(job)
        handler = self.next_handler(job)
        commit = await self.engine.runner.run_handler(job, requeue=False)
        error, trace = _error_of(commit)
        try:
            after = await self.engine.committer.apply(commit)
        except VersionConflict:
            raise DebuggerError("the job changed while its handler ran; nothing was applied") from None
        self.steps_taken += 1
        entry = Entry(
            "step",
            before.state,
            describe(commit, before),
            after.status,
            after.state,
            handler=handler,
            context={"initial_data": before.initial_data, "state_history": before.state_history},
            changes=diff(before.state_history, after.state_history),
            error=error,
            traceback=trace,
            step=self.steps_taken,
        )
        self.entries.append(entry)
        self._seen(after)
        return entry

    # -- tasks ----------------------------------------------------------------------------------
    async def answer(
        self,
        status: str = "success",
        data: dict[str, Any] | None = None,
        error_code: str | None = None,
        message: str | None = None,
        task_id: str | None = None,
    ) -> Entry:
        """Answer a task the job waits on, as a worker would (``engine.submit_result``)."""
        async with self._lock:
            job = await self.fresh()
            tasks = await self.open_tasks()
            task = next((t for t in tasks if task_id in (None, t.id)), None)
            if task is None:
                raise DebuggerError(f"the job is {job.status.replace('_', ' ')} and waits for no task to answer")
            result: dict[str, Any] = {"status": status}
            if data is not None:
                result["data"] = data
            if status == "failure" or error_code:
                result["error"] = {"code": error_code or "TRANSIENT_ERROR", "message": message or "answered by hand"}
            try:
                taken = await self._take(task)
                ack = await self.engine.submit_result(job.id, taken.id, MANUAL_WORKER, result)
            finally:
                await self._manual_worker([])  # real workers get the next tasks
            after = await self._read()
            entry = Entry(
                "answer",
                job.state,
                f"answered task {taken.type!r} by hand: {short(result, 90)} ({ack})",
                after.status,
                after.state,
                changes=diff(job.state_history, after.state_history),
                error=after.error if after.status != job.status else None,
            )
            self.entries.append(entry)
            self._seen(after)
            return entry

    async def _manual_worker(self, task_types: list[str], task: Task | None = None) -> None:
        requirements = (task.requirements or {}) if task else {}
        info: dict[str, Any] = {
            "worker_id": MANUAL_WORKER,
            "worker_type": "notebook",
            "supported_tasks": task_types,
            "max_concurrent_tasks": 1000,
            "cost_per_second": 0,
            "installed_models": requirements.get("installed_models") or [],
            "resources": {"gpu_info": requirements.get("gpu_info") or {}},
        }
        await self.engine.register_worker(info)

    async def _take(self, task: Task) -> Task:
        """Take ``task`` as the manual worker (other tasks taken on the way are given back)."""
        if task.status == TaskStatus.ASSIGNED and task.worker_id != MANUAL_WORKER:
            raise DebuggerError(f"worker {task.worker_id!r} is running this task; wait for its answer")
        if task.status == TaskStatus.ASSIGNED:
            return task
        if task.status == TaskStatus.RETRY_SCHEDULED:
            await self.engine.results.retry_due(task.id)  # no need to wait for the backoff by hand
        await self._manual_worker([task.type], task)
        # A task in another worker's inbox can be taken over once it has waited there a little.
        wait_s = self.engine.storage.steal_after_s + 1.0
        given_back: list[Task] = []
        try:
            for _ in range(100):
                taken = await self.engine.next_task(MANUAL_WORKER, timeout_s=wait_s)
                if taken is None:
                    break
                if taken.id == task.id:
                    return taken
                given_back.append(taken)
        finally:
            for other in given_back:
                await self.engine.give_back(other)
        raise DebuggerError(f"could not take task {task.id} ({task.type}) to answer it")

    # -- going back -----------------------------------------------------------------------------
    async def back(self, index: int, state_history: dict[str, Any] | None = None) -> Entry:
        """Restore the job as it was before step ``index`` + 1, optionally with another ``state_history``.

        Later snapshots are dropped; open tasks are withdrawn. The restored job is runnable.
        """
        async with self._lock:
            snapshot = next((s for s in self.snapshots if s.index == index), None)
            if snapshot is None:
                known = ", ".join(str(s.index) for s in self.snapshots)
                raise DebuggerError(f"no snapshot {index}; there are: {known}")
            current = await self.fresh()
            closing = await self._tasks_to_withdraw(current)
            restored = _copy(snapshot.job)
            restored.version = current.version
            restored.status, restored.wait, restored.error = JobStatus.RUNNING, None, None
            restored.handler_attempts = 0
            if state_history is not None:
                restored.state_history = dict(state_history)
            edited = state_history is not None and state_history != snapshot.job.state_history
            note = event(EventKind.JOB_RETRIED, restored, actor=ACTOR, from_state=restored.state, restored_step=index)
            commit = Commit(
                restored,
                close_tasks={t.id: TaskStatus.WITHDRAWN for t in closing},
                cancel_timers=[TimerKind.RETRY_JOB.of(restored.id), *(TimerKind.RETRY_TASK.of(t.id) for t in closing)],
                events=[note],
            )
            stop_on_workers(commit, closing)
            after = await self.engine.committer.apply(commit)
            self.steps_taken = index
            self.snapshots = [s for s in self.snapshots if s.index <= index]
            self.entries.append(
                Entry(
                    "back",
                    current.state,
                    f"back to snapshot {index} (state {restored.state})" + (", state_history edited" if edited else ""),
                    after.status,
                    after.state,
                    changes=diff(current.state_history, after.state_history),
                )
            )
            self._seen(after)
            return self.entries[-1]

    async def _tasks_to_withdraw(self, job: Job) -> list[Task]:
        wait = job.wait or {}
        ids = [*wait.get("task_ids", []), *wait.get("held_task_ids", [])]
        tasks = [await self.engine.storage.get_task(task_id) for task_id in dict.fromkeys(ids)]
        return [t for t in tasks if t is not None and t.status not in (TaskStatus.DONE, TaskStatus.WITHDRAWN)]

    async def release(self) -> Entry:
        """Release a quarantined job, as the studio does (its task dispatched again, or its handler re-run)."""
        async with self._lock:
            before = await self.fresh()
            after = await self.engine.release_job(before.id, ACTOR)
            entry = Entry("release", before.state, "released from quarantine", after.status, after.state)
            self.entries.append(entry)
            self._seen(after)
            return entry

    async def decide(self, decision: str) -> Entry:
        """Answer the approval the job waits for with one of its decisions (as the approval webhook does)."""
        async with self._lock:
            before = await self.fresh()
            after = await self.engine.decide(before.id, decision, ACTOR)
            entry = Entry(
                "decide",
                before.state,
                f"approval answered: {decision!r}",
                after.status,
                after.state,
                changes=diff(before.state_history, after.state_history),
            )
            self.entries.append(entry)
            self._seen(after)
            return entry


def _steppable(job: Job) -> bool:
    return job.status in RUNNABLE_STATUSES or (
        job.status == JobStatus.AWAITING_RETRY and (job.wait or {}).get("kind") == "retry"
    )


def _why_not(job: Job) -> str:
    if job.status in WAITING_ON_TASKS:
        return "answer its task (or let a worker do it)"
    if job.status == JobStatus.WAITING_FOR_HUMAN:
        return "it waits for an approval decision"
    if job.status == JobStatus.QUARANTINED:
        return "release it, or go back to an earlier step"
    return "go back to an earlier step to run it again"


def _error_of(commit: Commit) -> tuple[str | None, str | None]:
    for item in commit.events:
        if item.kind in (EventKind.HANDLER_RETRY, EventKind.JOB_QUARANTINED, EventKind.JOB_FAILED):
            error = item.data.get("error")
            return (str(error) if error else None), item.data.get("traceback")
    return None, None


def describe(commit: Commit, before: Job) -> str:
    """The action a step took, in words, from its commit."""
    job = commit.job
    tasks = list(commit.tasks)
    if tasks:
        listed = "; ".join(f"{t.type!r} params={short(t.params, 50)} transitions={short(t.transitions)}" for t in tasks)
        verb = "dispatch_parallel" if len(tasks) > 1 else "dispatch_task"
        return f"{verb}: {listed}"
    kinds = {e.kind: e for e in commit.events}
    if EventKind.HANDLER_RETRY in kinds:
        data = kinds[EventKind.HANDLER_RETRY].data
        return f"the handler raised (attempt {data.get('attempt')}; the job awaits a retry)"
    if EventKind.STATE_ENTERED in kinds:
        return f"transition_to({job.state!r})"
    if EventKind.JOB_FINISHED in kinds:
        return "finished (end state)"
    if EventKind.JOB_WAITING in kinds:
        waiting = kinds[EventKind.JOB_WAITING].data
        if waiting.get("waiting_for") == "human":
            decisions = sorted((job.wait or {}).get("transitions", {}))
            return f"await_human_approval: {waiting.get('message')!r}, decisions {decisions}"
        return f"run_blueprint: sub-job {waiting.get('child_job_id')}"
    if job.status != before.status:
        return f"{job.status}: {job.error}"
    return "no change"


def _outside_action(before: Job, after: Job, events: list[Event]) -> str:
    """What changed the job outside the debugger, from the events published since it was last seen."""
    since = [e for e in events if e.at >= before.updated_at]
    for item in reversed(since):
        data = item.data
        if item.kind == EventKind.TASK_RESULT:
            by = data.get("worker_id") or "a worker"
            return f"{by} answered task {data.get('task_type')!r}: {short(data.get('result'), 80)}"
        if item.kind == EventKind.TASK_DISPATCHED:
            return f"task {data.get('task_type')!r} dispatched again (attempt {data.get('attempt')})"
        if item.kind in (EventKind.JOB_CANCELLED, EventKind.JOB_RETRIED, EventKind.JOB_RELEASED, EventKind.JOB_FAILED):
            return f"{item.kind.replace('job_', '')} by {data.get('actor') or 'someone else'}"
    if before.status == JobStatus.AWAITING_RETRY and after.status == JobStatus.RUNNING:
        return "the retry backoff is over: the handler can run again"
    if after.state != before.state:
        return f"moved to {after.state!r} from outside the debugger"
    return f"became {after.status} from outside the debugger"
