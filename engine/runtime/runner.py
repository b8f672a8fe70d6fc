"""Steps jobs: run the current state's handler and commit the one action it took."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import VersionConflict
from ..models import ENDED_STATUSES, RUNNABLE_STATUSES, Breakpoint, Job, JobStatus, new_id
from ..storage.base import Commit, StepStart, Storage
from .breakpoints import holding
from .handlers import Handlers
from .outcomes import end, hold, move_to, waited_via

if TYPE_CHECKING:
    from .shared import Runtime

logger = logging.getLogger(__name__)

#: Transitions stepped in a row without going back through the queue (a bound, for fairness).
INLINE_STEPS = 32
#: Handlers run in a row for this long (loop time, seconds) since the job was last read before the
#: next one reads its version again. A change made meanwhile (a cancel) is caught by the commit ending
#: the run in any case, which then drops the moves; the read only spares further handlers of a long
#: run. Handlers that take microseconds (a chain of routing states) ran with a Redis round trip
#: between each two, and a commit that fails its version check costs the same handlers anyway.
RECHECK_AFTER_S = 0.005


class JobRunner:
    """Consumes the queue of runnable jobs with a fixed number of long-lived coroutines."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handlers = Handlers(runtime)
        #: Jobs being stepped by a consumer of this process, and those queued again meanwhile. A job
        #: can be queued while it is being stepped (cancelled and retried while its handler runs);
        #: the consumer that takes it then leaves it to the one stepping it, which steps it again
        #: when done, so one job's handlers never run twice at once.
        self._stepping: set[str] = set()
        self._queued_again: set[str] = set()
        #: This process's runner in the step leases it holds: ``_stepping`` keeps its consumers apart.
        self.holder = new_id()

    async def consume(self) -> None:
        """Step the jobs taken from the runnable queue, one step of a job at a time across processes.

        Within this process ``_stepping`` keeps a job's steps apart; across processes sharing the
        storage, the job's step lease does (``storage.lease_and_get_job``): an entry of a job another process
        is stepping waits for the lease, then steps what the job has become (often nothing). Storage
        calls that fail (Redis restarting) are retried, so a consumer never dies of one.
        """
        storage = self.runtime.storage
        holder = self.holder
        while True:
            job_id = await storage.take_runnable(timeout_s=5.0, holder=holder)
            if job_id is None:
                continue
            if job_id in self._stepping:
                self._queued_again.add(job_id)
                await _retried(f"acknowledging job {job_id}", storage.finish_step, job_id, "")  # not leased
                continue
            self._stepping.add(job_id)
            leased = False
            try:
                while True:
                    # Again for each round: the commit that ended the last one released the lease.
                    start = await self._lease(job_id, holder)
                    leased = True
                    self._queued_again.discard(job_id)
                    await self._step_safely(job_id, start, holder)
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

    async def _step_safely(self, job_id: str, start: StepStart, holder: str) -> None:
        try:
            await self.step(job_id, start.job, start.breakpoints, holder=holder)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("stepping job %s failed", job_id)
            await self._quarantine_after_crash(job_id, exc)

    async def run_handler(self, job: Job, *, requeue: bool = True) -> Commit:
        """Run the handler of ``job``'s current state and turn what it did into a Commit (not applied)."""
        return await self.handlers.run(job, requeue=requeue)

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
        self, job_id: str, job: Job | None = None, breakpoints: list[Breakpoint] | None = None, *, holder: str = ""
    ) -> Job | None:
        """Run handlers of ``job_id`` until it waits, ends, is held, or has taken ``INLINE_STEPS`` steps.

        ``job``, ``breakpoints``: the job and the breakpoints as the caller just read them (with its step
        lease); read here when None. A job queued while it waits for a fan-out's branches had its last
        branch answered: it moves into its aggregation state first. Before each handler, a breakpoint
        on the job's state holds it instead (see :mod:`avtomatika.runtime.breakpoints`); a breakpoint set
        while a run of steps is under way holds the job from its next run.

        Transitions from one state to the next are committed together with the step that ends the
        run (a wait, the end, a hold, an error, or the last inline step): one commit, whose version
        check covers them all, instead of one per state. A job changed meanwhile (cancelled while a
        handler ran) fails that check, and the moves are dropped. Before a further handler, once the
        run has lasted :data:`RECHECK_AFTER_S` since the job was last read, its version is read
        again, so a long run stops at the next handler instead of at its end. A process dying before
        the commit lands leaves the job where it was committed last, and those handlers run again (at
        least once, as always). ``holder``: the holder of the job's step lease, whose step the commit
        ending the run ends with it (``Commit.ends_step``: the lease released and the runnable entry
        acknowledged atomically).
        """
        runtime = self.runtime
        if job is None:
            job = await runtime.storage.get_job(job_id)
        if breakpoints is None:
            breakpoints = await runtime.storage.breakpoints()
        if job is not None and job.status == JobStatus.WAITING_FOR_PARALLEL_TASKS:
            job = await self.gather(job)
        moves: list[Commit] = []  # transitions run here and not committed yet
        versions = _VersionReads(runtime.storage)
        for remaining in range(INLINE_STEPS, 0, -1):
            if job is None or job.status not in RUNNABLE_STATUSES:
                return job
            if moves and await versions.changed(job):
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
            _end_run_with(commit, holder, last=remaining == 1)
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

    async def gather(self, job: Job) -> Job | None:
        """Every branch of the job's fan-out answered: it enters its aggregation state (else it waits).

        The step a fan-out's last result queues (see :meth:`Storage.add_branch_result`); the step
        debugger, which steps jobs itself, calls it on a job it reads. Each branch's task was closed
        as done with its result's record, so this commit closes none of them again."""
        wait = job.wait or {}
        task_ids = wait.get("task_ids", [])
        answered = await self.runtime.storage.branch_results(job.id)
        if not task_ids or any(task_id not in answered for task_id in task_ids):
            return job
        parallel = bool(wait.get("parallel"))
        how = waited_via(job, "parallel" if parallel else "dispatch", "all done" if parallel else "success")
        commit = move_to(job, wait["aggregate_into"], run=False, how=how)
        try:
            return await self.runtime.committer.apply(commit)
        except VersionConflict:  # cancelled or failed meanwhile: whatever happened is stepped on its own
            return await self.runtime.storage.get_job(job.id)


class _VersionReads:
    """When a run of handlers reads its job's version again: once :data:`RECHECK_AFTER_S` has passed
    since the job was last read (by the caller, just before the run, then by this)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._clock = asyncio.get_running_loop().time
        self._read_at = self._clock()

    async def changed(self, job: Job) -> bool:
        """Whether the job is no longer stored as ``job`` was read (its moves since are not committed)."""
        if self._clock() - self._read_at < RECHECK_AFTER_S:
            return False
        version = await self._storage.job_version(job.id)
        self._read_at = self._clock()
        return version != job.version


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


def _end_run_with(commit: Commit, holder: str, *, last: bool) -> None:
    """``commit`` ends the step of ``holder`` if the run of steps ends with it: the job waits, is
    over, or it is the last inline step."""
    if last or commit.job.status not in RUNNABLE_STATUSES:
        commit.ends_step = holder


def _joined(moves: list[Commit], last: Commit) -> Commit:
    """``last``, carrying the events of the transitions before it (the same job, moved on in place)."""
    if moves:
        last.events = [event for move in moves for event in move.events] + list(last.events)
    return last
