"""The storage contract: what the engine needs from live state, whatever keeps it.

Every method is atomic on its own: a backend shared by several engine processes (Redis) makes each
one a single transaction. ``commit`` is the heart of it: one step's whole outcome (the job's new
document, the tasks it queues or withdraws, the timers it sets or clears, whether it runs again)
lands at once or not at all, and only if nobody changed the job since it was read.

Records read back (``get_job``, ``get_task``, ``list_jobs``, ...) are copies: changing one changes
nothing stored, and neither does changing a record after passing it in. ``tests/support/storage_contract.py``
is the executable form of this contract; every backend runs it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from ..events import Event, EventTransport
from ..models import Breakpoint, BulkAction, Job, Task, WorkerRecord

#: A history database that has not written a feed for this long no longer holds its entries back.
FEED_READER_TTL_S = 86_400.0


@dataclass(slots=True)
class Commit:
    """The outcome of one engine step, applied atomically by :meth:`Storage.commit`.

    Everything that must follow from the change is part of it, so that no process dying in between
    can leave half of it done: the job's new document, the tasks it queues, answers or withdraws, the
    timers it sets or clears (follow-ups that concern another job or a worker are timers due at once,
    see :mod:`avtomatika.timers`), the sub-jobs it starts, and the lines it adds to history.

    ``tasks`` are stored, and queued when their status is ``queued`` (to their worker's inbox when
    ``worker_id`` is set); with any other status (``retry_scheduled``) they are only stored. A task
    stored again (same id) replaces the stored one: queued, it is queued where it now says, and a
    worker it no longer names neither gets it nor counts it in its load. ``close_tasks`` end tasks:
    their status becomes the final one given, they leave their worker's load, they are never handed
    out, and their ``timeout:<task id>`` timer is cancelled; unknown ids are ignored. Withdrawing a
    task that is ``done`` (answered by :meth:`Storage.add_branch_result` since it was read) conflicts:
    the caller reads again and sees the answer. ``timers`` maps timer ids to due times (epoch
    seconds); a timer id is unique, so setting an existing one moves it. The parts apply in this
    order: ``close_tasks``, ``tasks``, ``cancel_timers``, ``timers`` (a timer both cancelled and set
    ends up set). ``fan_in`` starts a fan-out round of that many branches: the job's earlier branch
    results are forgotten (``branch_results``, if given, are recorded instead: a job restored as it
    was) and :meth:`Storage.add_branch_result` counts towards it. ``children`` are
    new jobs, created (version 1) and queued to run. ``events`` go to the history feed as one entry
    (:meth:`Storage.read_feed`). ``run`` queues the job to be stepped (:meth:`Storage.take_runnable`).
    ``ends_step`` names the holder of the job's step lease whose step this commit ends: with it, the
    commit also does what :meth:`Storage.finish_step` would (the lease released, the job's runnable
    entry taken first acknowledged), in the same atomic change; a later ``finish_step`` of that holder
    has nothing left to do.
    """

    job: Job
    run: bool = False
    tasks: Sequence[Task] = ()
    close_tasks: dict[str, str] = field(default_factory=dict)  # task id -> final TaskStatus
    timers: dict[str, float] = field(default_factory=dict)
    cancel_timers: Sequence[str] = ()
    fan_in: int | None = None
    branch_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: Sequence[Job] = ()
    events: Sequence[Event] = ()
    ends_step: str = ""


class TaskPoll(NamedTuple):
    """A worker's long poll for its next task (see :meth:`Storage.take_task`). A named tuple: made for
    every task taken, in half the time a frozen dataclass takes."""

    worker: WorkerRecord
    timeout_s: float
    #: A task without a ``timeout_s`` of its own is due back this long after it is taken.
    default_timeout_s: float
    #: Whether the worker may run a task (asked only about tasks :func:`asks_eligible` names).
    eligible: Callable[[Task], bool]


class BranchAnswer(StrEnum):
    """What :meth:`Storage.add_branch_result` made of a fan-out branch's result."""

    #: Recorded; other branches have still to answer.
    RECORDED = "recorded"
    #: Recorded, and it was the last one: the job is queued to be stepped into its aggregation state.
    COMPLETE = "complete"
    #: The task was answered already: nothing changed.
    DUPLICATE = "duplicate"
    #: The task is not waiting for a result (withdrawn, timed out, never taken): nothing changed.
    CLOSED = "closed"


class StepStart(NamedTuple):
    """What a step starts from (:meth:`Storage.lease_and_get_job`)."""

    #: Whether the caller holds the job's step lease.
    leased: bool
    #: The job as it was when leased (None when not leased, or when the job no longer exists).
    job: Job | None = None
    #: The breakpoints set then (see :mod:`avtomatika.runtime.breakpoints`).
    breakpoints: list[Breakpoint] = []


@dataclass(frozen=True, slots=True)
class TimerClaim:
    """A due timer claimed by one caller of :meth:`Storage.claim_timers`, until ``finish_timers``."""

    timer_id: str
    token: str


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One commit's history lines, as :meth:`Storage.read_feed` hands them out.

    ``position`` orders entries within one feed; ``events`` is the JSON list of the rows of the
    commit's events (:mod:`avtomatika.feed`: written by :func:`~avtomatika.feed.entry_of`, read back
    by :func:`~avtomatika.feed.rows_of`).
    """

    position: str
    events: bytes


@dataclass(slots=True)
class JobFilter:
    status: str | None = None
    blueprint: str | None = None
    client: str | None = None
    state: str | None = None


class Storage(ABC):
    """Live state of jobs, task queues, timers and workers."""

    #: How long a task given to one worker waits for it before another idle worker may take it.
    steal_after_s: float = 2.0
    #: How long a claimed timer stays with its claimer (see :meth:`claim_timers`).
    lease_s: float = 30.0
    #: History feed entries dropped because the feed was full (history down for long).
    feed_dropped: int = 0

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open connections; called by the engine on start."""

    async def close(self) -> None:
        """Release connections; called by the engine on stop."""

    @abstractmethod
    def end_polls(self) -> None:
        """End this process's waiting :meth:`take_task` calls now: they answer None, as do later ones
        at once, until :meth:`connect`. Called as the engine shuts down, so that open long polls
        answer 204 instead of holding the shutdown for up to their timeout. A poll that has already
        taken its task still answers it."""

    def event_transport(self) -> EventTransport | None:
        """How events reach other engine processes sharing this storage; None when there are none."""
        return None

    def worker_command_transport(self) -> EventTransport | None:
        """How commands for workers (``cancel_task``) reach the engine process holding the worker's
        WebSocket, when several share this storage; None when there is only this one."""
        return None

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    # -- jobs ------------------------------------------------------------------------------------
    @abstractmethod
    async def create_job(self, job: Job, *, run: bool = True, events: Sequence[Event] = ()) -> Job:
        """Store a new job (version 1) and, with ``run``, queue it to be stepped.

        Returns the stored job; every field is stored as given, except ``version``. ``events`` go to
        the history feed as one entry, in the same atomic change.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """The job as last committed, or None."""

    async def job_version(self, job_id: str) -> int | None:
        """The job's version as last committed, or None: what ``get_job`` would read, without the job."""
        job = await self.get_job(job_id)
        return job.version if job is not None else None

    @abstractmethod
    async def commit(self, change: Commit) -> Job:
        """Apply ``change`` atomically if the stored version is still ``change.job.version``.

        Returns the stored job (version incremented, ``updated_at`` stamped with the current time);
        callers go on with the returned job (whether ``change.job`` itself is updated is up to the
        backend). Raises ``VersionConflict`` otherwise, having changed nothing at all; a job that is
        not stored (never created, or forgotten) conflicts too.
        """

    @abstractmethod
    async def list_jobs(self, where: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        """Jobs matching ``where``, newest (most recently created) first.

        Each field of ``where`` that is set must equal the job's (as last committed); ``offset`` jobs
        are skipped, then at most ``limit`` returned (none for ``limit=0``).
        """

    @abstractmethod
    async def count_jobs(self, client: str | None = None) -> dict[tuple[str, str, str], int]:
        """Number of jobs by (blueprint, status, state): every job's, or only ``client``'s.

        Kept as jobs change, so it costs the same however many jobs there are.
        """

    # -- the queue of jobs to step ---------------------------------------------------------------
    @abstractmethod
    async def take_runnable(self, timeout_s: float, holder: str = "") -> str | None:
        """A job id due to be stepped, leased to this process; None after ``timeout_s``.

        Ids come first in first out, in the order they were queued (``create_job``/``commit`` with
        ``run``); each queuing is handed out once. ``holder``: what the caller takes the job's step
        lease with (:meth:`lease_and_get_job`); a backend shared by several processes may take it for
        that holder as it hands the job out, so that the lease costs no further round trip.
        """

    @abstractmethod
    async def ack_runnable(self, job_id: str) -> None:
        """The step of a job taken with :meth:`take_runnable` is committed; end its lease."""

    # -- the step lease: one process at a time runs a job's handlers ------------------------------
    async def lease_job(self, job_id: str, holder: str, lease_s: float | None = None) -> bool:
        """Take the job's step lease for ``holder``; False while someone else holds it.

        Held until :meth:`release_job_lease`, or ``lease_s`` (the backend's default when None) after
        the holder's process stops renewing it (a backend shared by several processes renews leases
        held by this process in the background). ``holder`` names one stepping, unique across
        processes. This default, for a storage used by one process only, always grants it: the runner
        already keeps a job's steps in one process apart.
        """
        return True

    async def lease_and_get_job(self, job_id: str, holder: str, lease_s: float | None = None) -> StepStart:
        """:meth:`lease_job`, and when taken the job as it is then and the breakpoints set.

        What a step starts from; a backend shared by several processes reads it in the same round trip.
        """
        if not await self.lease_job(job_id, holder, lease_s):
            return StepStart(False)
        return StepStart(True, await self.get_job(job_id), await self.breakpoints())

    async def release_job_lease(self, job_id: str, holder: str) -> None:
        """End ``holder``'s step lease of the job (nothing if it no longer holds it)."""

    async def finish_step(self, job_id: str, holder: str) -> None:
        """:meth:`release_job_lease`, then :meth:`ack_runnable`: a step taken (and leased by ``holder``,
        unless it is empty) is over.

        A backend shared by several processes does both in one call, so a process dying in between
        cannot leave the lease held with nobody stepping the job.
        """
        await self.release_job_lease(job_id, holder)
        await self.ack_runnable(job_id)

    # -- tasks -----------------------------------------------------------------------------------
    @abstractmethod
    async def get_task(self, task_id: str) -> Task | None: ...

    @abstractmethod
    async def update_task(self, task_id: str, **changes: Any) -> Task | None:
        """Change fields of a live task (progress); None if it is gone.

        "Gone" means not stored (never stored, or its job forgotten); a closed task is still stored and
        can be changed. Only the named fields change: the task is neither queued nor withdrawn by it.
        Returns the task as stored.
        """

    @abstractmethod
    async def take_task(self, poll: TaskPoll) -> Task | None:
        """Give ``poll.worker`` its next task, waiting up to ``poll.timeout_s``.

        Tasks assigned to this worker come first, then the queues of its ``supported_tasks`` by
        priority (higher first), first in first out among equal priorities, skipping tasks it is
        not ``eligible`` for. The task is marked assigned and its timeout timer set atomically.

        ``eligible`` is asked only about tasks with ``requirements`` or ``max_cost``
        (:func:`asks_eligible`): any other task of a supported type is one the worker can run, so a
        backend can take it without a round trip through Python.

        Tasks assigned to this worker (``worker_id`` set when committed) are its own: only it gets
        them, whatever their type and whatever ``eligible`` says (they were chosen for it), highest
        priority first. Priority is over all of its queues together: a task skipped as ineligible
        never lets a lower priority through ahead of a higher one in another queue; it stays queued
        for other workers. First in first out means in commit order, and in list order within one
        commit. The taken task gets ``status=assigned``, ``worker_id``, ``taken_at`` (now) and
        ``deadline`` (:func:`task_deadline`: ``taken_at`` plus its ``timeout_s``, or
        ``default_timeout_s`` when it has none), and the timer ``timeout:<task id>`` due at the
        deadline. Each task is handed out once, even to concurrent pollers and to pollers in other
        processes. While waiting, a task committed for this worker ends the wait promptly.
        ``timeout_s <= 0`` means do not wait. Taking a task adds its ``task_taken`` event
        (:func:`avtomatika.events.task_taken`) to the history feed in the same atomic change.

        Last come tasks assigned to other workers that have waited there longer than
        ``steal_after_s`` (a worker chosen while free may stop polling): one of a type this worker
        supports and is ``eligible`` for is taken over, so no task waits on a worker that does not
        ask while another could run it. A waiting poll notices such tasks within about a second.
        """

    @abstractmethod
    async def queue_lengths(self) -> dict[str, int]:
        """Number of queued (not yet taken) tasks by task type.

        Tasks queued to a worker's inbox count too; types with none may be left out.
        """

    @abstractmethod
    async def worker_load(self) -> dict[str, int]:
        """Number of tasks assigned to each worker and not yet answered.

        Both the tasks it took and those queued to its inbox and not yet taken count; a task leaves
        the load when closed. Workers with none may be left out.
        """

    # -- fan-in ----------------------------------------------------------------------------------
    @abstractmethod
    async def add_branch_result(
        self, job_id: str, task_id: str, result: dict[str, Any], events: Sequence[Event] = ()
    ) -> BranchAnswer:
        """Record a fan-out branch's result, once, and close its task as done; one atomic change.

        Only a task of ``job_id`` that is ``assigned`` (taken and not answered) is recorded: one
        answered already is a ``DUPLICATE``, any other a ``CLOSED`` (nothing changes for either). The
        recorded task is closed as by ``Commit.close_tasks`` (status ``done``, out of its worker's
        load, its timeout timer cancelled), without rewriting the job, and ``events`` go to the
        history feed. The result that completes the round (as many results as the ``fan_in`` of the
        job's last commit that set one) is ``COMPLETE`` and queues the job to be stepped, in the same
        change: the step that moves it on cannot be lost between two writes.
        """

    @abstractmethod
    async def branch_results(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The job's recorded results by task id; empty if none (or a new round started since)."""

    # -- timers ----------------------------------------------------------------------------------
    @abstractmethod
    async def claim_timers(self, at: float, lease_s: float, limit: int = 100) -> list[TimerClaim]:
        """Claim timers due at ``at`` for ``lease_s``: each is returned to exactly one caller.

        Due means due at or before ``at``; at most ``limit``, earliest first. A claimed timer is due
        again ``lease_s`` after ``at`` unless :meth:`finish_timers` removes it first, so one whose
        claimer dies is carried out by someone else.
        """

    @abstractmethod
    async def finish_timers(self, claims: Sequence[TimerClaim]) -> None:
        """Remove claimed timers that were carried out; one set again since (moved) stays."""

    @abstractmethod
    async def next_timer_at(self) -> float | None:
        """When the earliest pending timer is due (cancelled and finished ones excluded), or None."""

    # -- workers ---------------------------------------------------------------------------------
    @abstractmethod
    async def save_worker(self, record: WorkerRecord) -> None:
        """Store ``record``, replacing the worker's previous one."""

    @abstractmethod
    async def get_worker(self, worker_id: str) -> WorkerRecord | None: ...

    @abstractmethod
    async def list_workers(self) -> list[WorkerRecord]: ...

    @abstractmethod
    async def expire_workers(self, at: float) -> list[tuple[WorkerRecord, list[str]]]:
        """Remove the workers expired at ``at``, and hand their unanswered tasks on; one atomic change.

        Expired means ``expires_at <= at`` (not :meth:`WorkerRecord.alive`). Each worker is removed by
        one caller, who gets its record and the ids of its unanswered tasks (its :meth:`worker_load`),
        for the log. In the same change those tasks leave its load: the ones still queued to its inbox
        are queued again for any worker, and the ones it had taken get a ``lost:<task id>`` timer due
        at ``at`` (their timeout timer cancelled), which the scheduler turns into a retry.
        """

    # -- breakpoints -----------------------------------------------------------------------------
    @abstractmethod
    async def set_breakpoint(self, breakpoint: Breakpoint) -> None:
        """Store ``breakpoint`` (replacing one with its id): every process stepping jobs sees it."""

    @abstractmethod
    async def remove_breakpoint(self, breakpoint_id: str) -> Breakpoint | None:
        """Remove a breakpoint; the one removed, or None if there was none with that id.

        With the removal of one that is not a step's, a ``RELEASE_HOLDS`` timer is due at once: the
        jobs it held are continued even if the caller dies before continuing them.
        """

    @abstractmethod
    async def breakpoints(self) -> list[Breakpoint]:
        """Every breakpoint set, oldest first (one read, whatever their number)."""

    # -- bulk actions ----------------------------------------------------------------------------
    @abstractmethod
    async def create_bulk(self, action: BulkAction, job_ids: Sequence[str]) -> None:
        """Store a new bulk action, its jobs, and its ``bulk`` timer due at once, together."""

    @abstractmethod
    async def get_bulk(self, bulk_id: str) -> BulkAction | None: ...

    @abstractmethod
    async def list_bulks(self, limit: int = 50) -> list[BulkAction]:
        """Bulk actions, newest first."""

    @abstractmethod
    async def bulk_jobs(self, bulk_id: str, start: int, count: int) -> list[str]:
        """``count`` of the bulk action's job ids from the ``start``-th."""

    @abstractmethod
    async def save_bulk(self, action: BulkAction, due_at: float | None) -> bool:
        """Save ``action``'s progress and set its timer due at ``due_at`` (removed: None), together;
        only if it is stored at ``action.version`` (whose number is then bumped), else False."""

    # -- the history feed ------------------------------------------------------------------------
    @property
    @abstractmethod
    def feed_id(self) -> str:
        """Which feed this is: different for every data set (a memory storage, a Redis database).

        History keeps how far it has written each feed under this id (valid once connected).
        """

    @abstractmethod
    async def read_feed(self, after: str | None, limit: int) -> list[FeedEntry]:
        """Up to ``limit`` feed entries after position ``after`` (from the oldest kept when None), in
        the order their changes were applied."""

    @abstractmethod
    async def trim_feed(self, reader: str, through: str) -> None:
        """``reader`` (a history database) has written every entry up to ``through``: forget the
        entries every reader seen lately has written."""

    @abstractmethod
    async def lease_feed(self, reader: str, holder: str, lease_s: float) -> bool:
        """Take (or keep) the right to write the feed into ``reader`` for ``lease_s``; False while
        another ``holder`` has it. One writer per history database keeps its lines in order. From
        its first call, ``reader`` holds back the entries it has not written (:meth:`trim_feed`).
        ``lease_s`` 0 gives the lease up (a writer that stops)."""

    @abstractmethod
    async def feed_length(self) -> int:
        """How many entries the feed keeps (written by no reader yet, or not trimmed yet)."""


def asks_eligible(task: Task) -> bool:
    """Whether :meth:`Storage.take_task` asks its ``eligible`` about ``task``: only a task with
    ``requirements`` or ``max_cost`` can be refused by a worker that supports its type."""
    return bool(task.requirements) or task.max_cost is not None


def task_timeout_s(task: Task, default_timeout_s: float) -> float:
    """How long a worker has for ``task`` once taken: its own ``timeout_s``, or the default."""
    return task.timeout_s or default_timeout_s


def task_deadline(task: Task, taken_at: float, default_timeout_s: float) -> float:
    """When a task taken at ``taken_at`` times out (:func:`task_timeout_s` later)."""
    return taken_at + task_timeout_s(task, default_timeout_s)


def ids(tasks: Iterable[Task]) -> list[str]:
    return [t.id for t in tasks]
