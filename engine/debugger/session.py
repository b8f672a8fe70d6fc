"""Stepping one job by hand: the engine work behind :class:`~avtomatika.studio.notebook.StepDebugger`.

The engine's runner coroutines step every runnable job by themselves. A debugged job must move only
when asked, so the debugger's engine does not step jobs itself (``engine.steps_jobs = False``),
and :class:`DebugSession` steps the job with the engine's own pieces: ``engine.runner.run_handler``
(the handler, turned into a Commit, not applied) and ``engine.committer.apply`` (commit, then publish the
events). Everything else is the engine's as usual: worker results (by hand, or from real workers when
the engine serves HTTP), timers (its scheduler runs), history, the studio.

Going back restores a checkpoint of the :class:`~avtomatika.debugger.checkpoints.CheckpointTree`: its
content is committed as the job's next version, so history and the studio see it as one more change
(a ``job_retried`` event). What followed it stays as a branch that :meth:`DebugSession.redo` returns to.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ..blueprint import StateMachineBlueprint
from ..config import Config
from ..engine import OrchestratorEngine
from ..errors import DebuggerError, VersionConflict
from ..events import Event, EventKind
from ..models import RUNNABLE_STATUSES, Job, JobStatus, Task, TaskStatus
from ..reads import Transition, diff
from ..runtime.outcomes import event, stop_on_workers
from ..storage import Commit, MemoryStorage
from ..timers import TimerKind
from .answers import HandAnswers
from .checkpoints import Checkpoint, CheckpointTree, LogEntry, copy_job
from .narrate import describe, error_of, outside_action, short, steppable, which, why_not
from .preview import Preview, preview

logger = logging.getLogger(__name__)

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
        self.tree = CheckpointTree()
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._moves: list[Transition] = []  # states entered since the last log line
        self.steps_taken = 0
        self.answers = HandAnswers(engine)
        self._owns_start = False
        self._lock = asyncio.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._known_version = 0

    # -- reading --------------------------------------------------------------------------------
    @property
    def entries(self) -> list[LogEntry]:
        """The log: steps, answers, restores, edits and outside changes, oldest first."""
        return self.tree.entries

    @property
    def snapshots(self) -> list[Checkpoint]:
        """The checkpoints of the current line, oldest first (``back(c.step)`` restores one)."""
        return self.tree.line()

    def problems(self) -> list[str]:
        """The blueprint's validation errors as it is now (a cell may have changed it); empty when valid."""
        return [str(p) for p in self.blueprint.validate() if p.severity == "error"]

    async def preview(self) -> Preview:
        """The handler the next step would run and what it would receive (``aggregation_results`` too)."""
        return await preview(self.engine, self.blueprint, await self._read())

    async def open_tasks(self) -> list[Task]:
        """The tasks the job waits on and that are not answered yet (a coroutine: await it)."""
        return await self.answers.open_tasks(await self._read())

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
            engine.register_blueprint(self.blueprint)  # BlueprintInvalid lists every error
        if not engine.running:
            await engine.start(http=False)
            self._owns_start = True
        self._unsubscribe = engine.events.subscribe(self._on_event)
        job = await engine.create_job(self.blueprint.name, self.initial_data)
        self._seen(job)
        self.tree.record(job, 0)
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
            if event.kind == EventKind.STATE_ENTERED and event.state:
                self._moves.append(Transition.entered(event.state, event.data, len(self._moves) + 1, event.at))
            if self.on_change is not None:
                self.on_change()

    def _add(self, entry: LogEntry) -> LogEntry:
        """Log ``entry`` with the moves the job made since the last one (the graph draws those on the line)."""
        entry.moves, self._moves = self._moves, []
        return self.tree.add(entry)

    def _seen(self, job: Job) -> Job:
        self.job = job
        self._known_version = job.version
        return job

    async def fresh(self) -> Job:
        """The job as stored now; a change made by someone else (a worker, the studio) is logged."""
        job = await self._read()
        if job.version != self._known_version and self.job is not None:
            before = self.job
            self._add(
                LogEntry(
                    "outside",
                    before.state,
                    outside_action(before, job, list(self.events)),
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
        if job is not None and job.status == JobStatus.WAITING_FOR_PARALLEL_TASKS:
            job = await self.engine.runner.gather(job)  # its last branch answered: what the runner does
        if job is None:
            raise DebuggerError(f"job {self.job.id} is gone from the engine")
        return job

    # -- stepping -------------------------------------------------------------------------------
    async def step(self) -> LogEntry:
        """Run the current state's handler once and apply the action it took."""
        async with self._lock:
            return await self._step(await self.fresh())

    async def continue_(self, breakpoints: set[str], max_steps: int = MAX_CONTINUE_STEPS) -> list[LogEntry]:
        """Step until the job enters a breakpoint state, waits (for a task, a person...), ends, or a handler raises."""
        taken: list[LogEntry] = []
        async with self._lock:
            while len(taken) < max_steps:
                job = await self.fresh()
                if not steppable(job) or (taken and job.state in breakpoints):
                    break
                entry = await self._step(job)
                taken.append(entry)
                if entry.error is not None:
                    break
                await asyncio.sleep(0)  # let the kernel answer messages between steps
        return taken

    async def _step(self, job: Job) -> LogEntry:
        problems = self.problems()
        if problems:
            raise DebuggerError(
                f"blueprint '{self.blueprint.name}' is invalid; fix it first:\n- " + "\n- ".join(problems)
            )
        if job.status == JobStatus.AWAITING_RETRY and (job.wait or {}).get("kind") == "retry":
            await self.engine.operations.retry_step_due(job.id)  # the backoff is over: it is stepped now
            job = self._seen(await self._read())
        if job.status not in RUNNABLE_STATUSES:
            raise DebuggerError(f"the job is {job.status.replace('_', ' ')}: {why_not(job)}")
        await self._checkpoint(job)
        before = copy_job(job)
        coming = await preview(self.engine, self.blueprint, job)
        commit = await self.engine.runner.run_handler(job, requeue=False)
        error, trace = error_of(commit)
        try:
            after = await self.engine.committer.apply(commit)
        except VersionConflict:
            raise DebuggerError("the job changed while its handler ran; nothing was applied") from None
        self.steps_taken += 1
        entry = LogEntry(
            "step",
            before.state,
            describe(commit, before),
            after.status,
            after.state,
            handler=coming.handler,
            context=coming.inputs,
            changes=diff(before.state_history, after.state_history),
            error=error,
            traceback=trace,
            step=self.steps_taken,
        )
        self._add(entry)
        self._seen(after)
        return entry

    async def _checkpoint(self, job: Job) -> None:
        """Record the job before a step (unless the head already is it), with the fan-in results it holds."""
        if self.tree.moved_on(job):
            self.tree.record(job, self.steps_taken, branch_results=await self._fan_in(job))

    async def _fan_in(self, job: Job) -> dict[str, dict[str, Any]]:
        """The branch results ``job`` holds for its aggregator (none outside an aggregation state)."""
        info = self.blueprint.states.get(job.state)
        if info is None or not info.is_aggregator:
            return {}
        return await self.engine.storage.branch_results(job.id)

    # -- tasks and approvals --------------------------------------------------------------------
    async def answer(self, result: dict[str, Any], task_id: str | None = None) -> LogEntry:
        """Answer an open task (``task_id``, or the first one) with a worker's ``result`` (see ``result_of``)."""
        async with self._lock:
            job = await self.fresh()
            task = await self.answers.choose(job, task_id)
            taken, ack = await self.answers.answer(job, task, result)
            where = which(taken, await self.answers.open_tasks(job))
            return await self._log_change(
                "answer", job, f"answered task {taken.type!r}{where} by hand: {short(result, 90)} ({ack})"
            )

    async def exhaust(
        self, task_id: str | None = None, message: str = "failed by hand until retries ran out"
    ) -> LogEntry:
        """Fail an open task with ``TRANSIENT_ERROR`` until its retries are spent (``JOB_MAX_RETRIES`` + 1 answers).

        The engine then takes the task's ``failure`` transition, or quarantines the job without one.
        """
        async with self._lock:
            job = await self.fresh()
            task = await self.answers.choose(job, task_id)
            answers = await self.answers.exhaust(job, task, message)
            action = f"failed task {task.type!r} {answers} time(s) with TRANSIENT_ERROR: retries exhausted"
            return await self._log_change("answer", job, action)

    async def decide(self, decision: str) -> LogEntry:
        """Answer the approval the job waits for with one of its decisions (as the approval webhook does)."""
        async with self._lock:
            before = await self.fresh()
            await self.engine.decide(before.id, decision, ACTOR)
            return await self._log_change("decide", before, f"approval answered: {decision!r}")

    async def release(self) -> LogEntry:
        """Release a quarantined job, as the studio does (its task dispatched again, or its handler re-run)."""
        async with self._lock:
            before = await self.fresh()
            await self.engine.release_job(before.id, ACTOR)
            return await self._log_change("release", before, "released from quarantine")

    async def _log_change(self, kind: str, before: Job, action: str) -> LogEntry:
        after = await self._read()
        entry = LogEntry(
            kind,
            before.state,
            action,
            after.status,
            after.state,
            changes=diff(before.state_history, after.state_history),
            error=after.error if after.status != before.status else None,
        )
        self._add(entry)
        self._seen(after)
        return entry

    # -- time travel ----------------------------------------------------------------------------
    async def back(self, step: int | None = None, state_history: dict[str, Any] | None = None) -> LogEntry:
        """Go back to the current line's checkpoint after ``step`` steps (the previous step by default).

        ``back(steps_taken, state_history)`` edits the job where it is (see :meth:`edit`). What is left
        behind is kept as a branch: :meth:`redo` goes forward along it again.
        """
        if step is not None and step == self.steps_taken:
            if state_history is None:
                raise DebuggerError(f"the job is at step {step} already; pass a state_history to edit it there")
            return await self.edit(state_history)
        target = self.tree.previous(self.steps_taken) if step is None else self.tree.at_step(step)
        if target is None:
            known = ", ".join(str(c.step) for c in self.tree.line())
            raise DebuggerError(f"no checkpoint at step {step} on this line; there are: {known}")
        return await self.restore(target.id, state_history)

    async def redo(self) -> LogEntry:
        """Go forward again along the branch left by the last Back (one checkpoint at a time)."""
        if not self.tree.redo_path:
            raise DebuggerError("nothing to redo: go back first (a new step or answer starts a new line)")
        return await self.restore(self.tree.redo_path[0], kind="redo")

    async def restore(
        self, checkpoint_id: int, state_history: dict[str, Any] | None = None, kind: str = "back"
    ) -> LogEntry:
        """Put the job back as it was at a checkpoint (of this line or of a branch), with ``state_history`` if given."""
        async with self._lock:
            target = self.tree.checkpoints.get(checkpoint_id)
            if target is None:
                raise DebuggerError(f"no checkpoint {checkpoint_id}")
            current = await self.fresh()
            held = await self._fan_in(current)
            after = await self._commit_restore(current, target, state_history)
            redo = self.tree.redo_path[1:] if kind == "redo" else None
            branch = self.tree.leave_for(target, current, self.steps_taken, held)
            if redo is not None:
                self.tree.redo_path = redo
            self.steps_taken = target.step
            self.tree.head_version = after.version
            edited = state_history is not None and state_history != target.job.state_history
            action = f"{kind} to {target.label}" + (", state_history edited" if edited else "")
            if branch is not None:
                action += f"; what followed is kept as branch {branch}"
            entry = LogEntry(
                kind,
                current.state,
                action,
                after.status,
                after.state,
                changes=diff(current.state_history, after.state_history),
            )
            self._add(entry)
            self._seen(after)
            return entry

    async def _commit_restore(self, current: Job, target: Checkpoint, state_history: dict[str, Any] | None) -> Job:
        closing = await self._tasks_to_withdraw(current)
        restored = copy_job(target.job)
        restored.version = current.version
        if not target.tip:  # before a step: runnable, as it was then
            restored.status, restored.wait, restored.error = JobStatus.RUNNING, None, None
            restored.handler_attempts = 0
        if state_history is not None:
            restored.state_history = dict(state_history)
        note = event(
            EventKind.JOB_RETRIED,
            restored,
            actor=ACTOR,
            from_state=restored.state,
            restored_step=target.step,
            state_history=restored.state_history,  # history rebuilds the job's data from here on
        )
        commit = Commit(
            restored,
            close_tasks={t.id: TaskStatus.WITHDRAWN for t in closing},
            cancel_timers=[TimerKind.RETRY_JOB.of(restored.id), *(TimerKind.RETRY_TASK.of(t.id) for t in closing)],
            # An aggregator's inputs, as they were.
            fan_in=len((restored.wait or {}).get("task_ids", [])) or len(target.branch_results),
            branch_results=dict(target.branch_results),
            events=[note],
        )
        stop_on_workers(commit, closing)
        return await self.engine.committer.apply(commit)

    async def edit(self, state_history: dict[str, Any]) -> LogEntry:
        """Replace the job's ``state_history`` where it is now (the next step, or a task's result, sees it)."""
        async with self._lock:
            before = await self.fresh()

            async def build(job: Job) -> Commit:
                job.state_history = dict(state_history)
                return Commit(job)

            await self.engine.committer.update_job(before.id, build)
            return await self._log_change("edit", before, f"state_history edited at step {self.steps_taken}")

    async def _tasks_to_withdraw(self, job: Job) -> list[Task]:
        wait = job.wait or {}
        ids = [*wait.get("task_ids", []), *wait.get("held_task_ids", [])]
        tasks = [await self.engine.storage.get_task(task_id) for task_id in dict.fromkeys(ids)]
        return [t for t in tasks if t is not None and t.status not in (TaskStatus.DONE, TaskStatus.WITHDRAWN)]
