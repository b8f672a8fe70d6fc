"""Live state in this process's memory: the embedded default, and the reference for the contract.

Records are kept as JSON bytes (orjson, see :func:`~avtomatika.models.pack`), as Redis keeps them:
what is read back is always exactly what was committed, and a waiting job costs a few hundred bytes.
"""

# Long: one class, MemoryStorage, is the whole Storage contract (jobs, tasks, workers, timers, the feed,
# breakpoints, bulk actions): each change is one stretch of code without an await, so atomic, and may touch all of it.

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import operator
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ..errors import VersionConflict
from ..events import Event, task_taken
from ..feed import entry_of
from ..models import (
    ENDED_STATUSES,
    Breakpoint,
    BulkAction,
    Job,
    Task,
    TaskStatus,
    WorkerRecord,
    now,
    pack,
    tasks_waited_alone,
    unpack,
    wait_on_tasks,
)
from ..timers import TimerKind
from .base import (
    FEED_READER_TTL_S,
    BranchAnswer,
    Commit,
    FeedEntry,
    JobFilter,
    Storage,
    TaskPoll,
    TimerClaim,
    asks_eligible,
    task_deadline,
)
from .memory_feed import MemoryFeed
from .memory_runnable import RunnableQueue

logger = logging.getLogger(__name__)


#: Bulk actions kept (their records and job lists), the newest.
MAX_BULKS_KEPT = 1000
#: Distinct labels (blueprint, status, state, client) shared by jobs; past this the table starts again.
MAX_LABELS = 10_000


class MemoryStorage(Storage):
    """All live state in memory; nothing survives the process.

    Args:
        max_terminal_jobs: Finished, failed and cancelled jobs kept for reading back; the oldest
            are forgotten past this (history keeps them for good). Quarantined and waiting jobs are
            never forgotten.
        max_feed: Commits' history lines kept for history's writer; past it (history down for long)
            the oldest are dropped and counted in ``feed_dropped``.
    """

    def __init__(self, max_terminal_jobs: int = 100_000, max_feed: int = 100_000) -> None:
        self.max_terminal_jobs = max_terminal_jobs
        self.max_feed = max_feed
        #: History feed entries dropped because the feed was full.
        self.feed_dropped = 0
        self._jobs: dict[str, _StoredJob] = {}  # in creation order
        self._labels: dict[tuple[str, str, str, str | None], _Label] = {}  # each once, shared by its jobs
        self._ended: dict[str, None] = {}  # ids of jobs that ended for good, oldest first
        self._runnable = RunnableQueue()
        self._tasks: dict[str, bytes | _StoredTask] = {}  # a task queued for anyone: its packed record alone
        # The defaultdicts are read with get(): only a write makes an entry (no throwaway default).
        self._queues: defaultdict[str, _TaskQueue] = defaultdict(_TaskQueue)  # task type -> tasks anyone may take
        self._inboxes: defaultdict[str, _TaskQueue] = defaultdict(_TaskQueue)  # worker id -> tasks for it only
        # Long polls waiting for a task: the future to wake, the worker, what it may take.
        self._task_waiters: dict[asyncio.Future[None], tuple[WorkerRecord, Callable[[Task], bool]]] = {}
        self._load: defaultdict[str, set[str]] = defaultdict(set)  # worker id -> ids of the tasks given to it
        self._branches: dict[str, _FanIn] = {}  # job id -> its fan-out round
        self._timers: dict[str, float] = {}
        self._timer_heap: list[tuple[float, str]] = []
        self._workers: dict[str, bytes] = {}
        self._polls_ended = False
        self._feed = MemoryFeed()  # each commit's events, oldest first (packed while history lags)
        self._feed_readers: dict[str, tuple[int, float]] = {}  # reader -> (written through, when)
        self._feed_leases: dict[str, tuple[str, float]] = {}  # reader -> (holder, until)
        self._feed_id = f"memory:{uuid.uuid4().hex}"
        self._breakpoints: dict[str, Breakpoint] = {}
        self._bulks: dict[str, tuple[bytes, tuple[str, ...]]] = {}  # id -> (packed action, job ids)

    async def connect(self) -> None:
        self._polls_ended = False

    async def ping(self) -> None:
        return None

    # -- jobs ------------------------------------------------------------------------------------
    async def create_job(self, job: Job, *, run: bool = True, events: Sequence[Event] = ()) -> Job:
        job.version = 1
        self._store_job(job)
        self._append_feed(events)
        self._trim_ended()
        if run:
            self._runnable.put(job.id)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        stored = self._jobs.get(job_id)
        return stored.job(job_id) if stored is not None else None

    async def job_version(self, job_id: str) -> int | None:
        stored = self._jobs.get(job_id)
        return stored.version if stored is not None else None

    async def commit(self, change: Commit) -> Job:
        job = change.job
        stored = self._jobs.get(job.id)
        if stored is None or stored.version != job.version or self._withdraws_an_answer(change):
            raise VersionConflict(job.id)
        job.version += 1
        job.updated_at = now()
        self._store_job(job, tuple(task.id for task in change.tasks if task.id not in self._tasks))
        for task_id, status in change.close_tasks.items():
            self._close_task(task_id, status)
        for task in change.tasks:
            self._store_task(task)
        for timer_id in change.cancel_timers:
            self._timers.pop(timer_id, None)
        for timer_id, due in change.timers.items():
            self._set_timer(timer_id, due)
        if change.fan_in is not None:
            results = {task_id: pack(result) for task_id, result in change.branch_results.items()}
            self._branches[job.id] = _FanIn(change.fan_in, results)
        for child in change.children:
            child.version = 1
            self._store_job(child)
            self._runnable.put(child.id)
        self._append_feed(change.events)
        self._trim_ended()
        if change.run:
            self._runnable.put(job.id)
        return job

    def _withdraws_an_answer(self, change: Commit) -> bool:
        """Whether ``change`` withdraws a task that a branch result closed as done since it was read."""
        for task_id, status in change.close_tasks.items():
            if status == TaskStatus.WITHDRAWN:
                stored = self._tasks.get(task_id)
                if isinstance(stored, _StoredTask) and stored.status == TaskStatus.DONE:
                    return True
        return False

    def _store_job(self, job: Job, new_task_ids: tuple[str, ...] = ()) -> None:
        """Keep ``job``, noting the tasks it dispatched in this change (``new_task_ids``)."""
        label = self._label((job.blueprint, str(job.status), job.state, job.client))
        stored = self._jobs.get(job.id)
        if job.wait is None:
            packed = pack(job, head=_JOB_HEAD, tail=_JOB_TAIL)
        else:  # packed before anything is kept: a record that cannot be packed changes nothing
            packed = _pack_waiting(job, (stored.tasks() if stored is not None else ()) + new_task_ids)
        if stored is None:
            stored = self._jobs[job.id] = _StoredJob(packed, job.version, label)
        else:
            stored.packed, stored.version, stored.label = packed, job.version, label
        if new_task_ids:
            stored.add_tasks(new_task_ids)
        if job.status not in ENDED_STATUSES:
            self._ended.pop(job.id, None)  # retried: no longer a candidate to forget
        elif job.id not in self._ended:
            self._ended[job.id] = None

    def _label(self, fields: tuple[str, str, str, str | None]) -> _Label:
        """The one label of these fields: the same few blueprints, statuses, states and clients for
        every job, held once instead of a tuple (and strings read back) per job."""
        shared = self._labels.get(fields)
        if shared is None:
            if len(self._labels) >= MAX_LABELS:
                self._labels.clear()  # the jobs keep theirs; new ones are shared from here on
            shared = self._labels[fields] = _Label(*fields)
        return shared

    def _trim_ended(self) -> None:
        while len(self._ended) > self.max_terminal_jobs:
            self._forget(next(iter(self._ended)))

    def _forget(self, job_id: str) -> None:
        del self._ended[job_id]
        stored = self._jobs.pop(job_id)
        self._branches.pop(job_id, None)
        for task_id in stored.tasks():
            self._tasks.pop(task_id, None)

    async def list_jobs(self, where: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        found: list[Job] = []
        skipped = 0
        for job_id, stored in reversed(self._jobs.items()):
            label = stored.label
            if (
                (where.status and label.status != where.status)
                or (where.blueprint and label.blueprint != where.blueprint)
                or (where.state and label.state != where.state)
                or (where.client and label.client != where.client)
            ):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(found) >= limit:
                break
            found.append(stored.job(job_id))
        return found

    async def count_jobs(self, client: str | None = None) -> dict[tuple[str, str, str], int]:
        labels = Counter(stored.label for stored in self._jobs.values())
        counts: Counter[tuple[str, str, str]] = Counter()
        for label, count in labels.items():
            if client is None or label.client == client:
                counts[label.blueprint, label.status, label.state] += count
        return dict(counts)

    # -- runnable queue --------------------------------------------------------------------------
    async def take_runnable(self, timeout_s: float, holder: str = "") -> str | None:
        return await self._runnable.take(timeout_s)

    async def ack_runnable(self, job_id: str) -> None:
        return None  # one process: a job taken here cannot be lost to another

    # -- tasks -----------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> Task | None:
        stored = self._tasks.get(task_id)
        return _task_of(stored, task_id) if stored is not None else None

    async def update_task(self, task_id: str, **changes: Any) -> Task | None:
        task = await self.get_task(task_id)
        if task is None:
            return None
        for name, value in changes.items():
            setattr(task, name, value)
        self._tasks[task_id] = _kept(task, _pack_task(task))
        return task

    def _store_task(self, task: Task) -> None:
        previous = self._tasks.get(task.id)
        old_worker = previous.worker_id if isinstance(previous, _StoredTask) else None
        if old_worker and old_worker != task.worker_id:
            # Given to another worker (or to anyone): no longer the old worker's load. Its old queue
            # entry is skipped when it reaches the head, since the task no longer names that worker.
            self._load.get(old_worker, set()).discard(task.id)
        self._tasks[task.id] = _kept(task, _pack_task(task))
        if task.status != TaskStatus.QUEUED:
            return
        if task.worker_id:
            self._inboxes[task.worker_id].push(task.priority, task.id)
            self._load[task.worker_id].add(task.id)
        else:
            self._queues[task.type].push(task.priority, task.id)
        self._wake_poller_for(task)

    def _close_task(self, task_id: str, status: str) -> None:
        stored = self._tasks.get(task_id)
        if stored is None:
            return
        if isinstance(stored, bytes):
            stored = self._tasks[task_id] = _StoredTask(stored, status)
        else:
            stored.status = status
        self._timers.pop(TimerKind.TIMEOUT.of(task_id), None)
        if stored.worker_id and (load := self._load.get(stored.worker_id)) is not None:
            load.discard(task_id)
        # Queue entries of a closed task are skipped lazily when they reach the head.

    def _wake_poller_for(self, task: Task) -> None:
        """Wake one waiting long poll that can take ``task`` (the others keep sleeping)."""
        for waiter, (worker, eligible) in self._task_waiters.items():
            if waiter.done():
                continue
            mine = task.worker_id == worker.worker_id
            if mine or (task.worker_id is None and task.type in worker.supported_tasks and eligible(task)):
                waiter.set_result(None)
                # Woken polls leave at once: a fan-out queuing hundreds of tasks need not pass them all.
                del self._task_waiters[waiter]
                return

    async def take_task(self, poll: TaskPoll) -> Task | None:
        worker, default_timeout_s = poll.worker, poll.default_timeout_s
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + poll.timeout_s
        eligible = _asked_only_when_needed(poll.eligible)
        while not self._polls_ended:
            task = self._pop_for(worker, eligible)
            if task is not None:
                return self._assign(task, worker.worker_id, default_timeout_s)
            remaining = give_up_at - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._task_waiters[waiter] = (worker, eligible)
            try:
                # Wake at least once a second: a task in another worker's inbox may become ours to take.
                async with asyncio.timeout(min(remaining, 1.0)):
                    await waiter
            except TimeoutError:
                if loop.time() >= give_up_at:
                    return None
            finally:
                self._task_waiters.pop(waiter, None)
        return None

    def end_polls(self) -> None:
        self._polls_ended = True
        for waiter in self._task_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pop_for(self, worker: WorkerRecord, eligible: Callable[[Task], bool]) -> Task | None:
        inbox = self._inboxes.get(worker.worker_id)
        found = inbox.pop_first(self._looker(worker.worker_id, _anything)) if inbox else None
        if found is not None:
            return found
        # The first eligible task of each queue; the best of them is taken, the others put back (taking
        # the best queue head's first eligible task could pass over a higher priority in another queue).
        look = self._looker(None, eligible)
        candidates: list[tuple[_TaskQueue, Task]] = []
        for task_type in dict.fromkeys(worker.supported_tasks):
            queue = self._queues.get(task_type)
            if queue and (found := queue.pop_first(look)) is not None:
                candidates.append((queue, found))
        if not candidates:
            return self._steal(worker, eligible)
        if len(candidates) > 1:  # the best first; the others back to the head of their queue
            candidates.sort(key=lambda candidate: (-candidate[1].priority, candidate[1].queued_at))
            for queue, task in candidates[1:]:
                queue.put_back(task.priority, task.id)
        return candidates[0][1]

    def _steal(self, worker: WorkerRecord, eligible: Callable[[Task], bool]) -> Task | None:
        """A task left longer than ``steal_after_s`` in another worker's inbox that this one can run."""
        cutoff = now() - self.steal_after_s
        supported = set(worker.supported_tasks)
        for owner, inbox in self._inboxes.items():
            if owner == worker.worker_id or not inbox:
                continue
            found = inbox.pop_first(
                self._looker(owner, lambda t: t.queued_at <= cutoff and t.type in supported and eligible(t))
            )
            if found is not None:
                return found
        return None

    def _looker(self, owner: str | None, eligible: Callable[[Task], bool]) -> Callable[[str], Task | bool]:
        """What :meth:`_TaskQueue.pop_first` asks of each queued id: the task if it is queued for
        ``owner`` and ``eligible``; ``False`` to keep an ineligible one in place; ``True`` to drop a
        stale entry (task taken, closed, moved to another queue, or its job forgotten)."""

        def look(task_id: str) -> Task | bool:
            task = self._queued_task(task_id)
            if task is None or task.worker_id != owner:
                return True
            return task if eligible(task) else False

        return look

    def _queued_task(self, task_id: str) -> Task | None:
        stored = self._tasks.get(task_id)
        if stored is None or (isinstance(stored, _StoredTask) and stored.status != TaskStatus.QUEUED):
            return None
        return _task_of(stored, task_id)

    def _assign(self, task: Task, worker_id: str, default_timeout_s: float) -> Task:
        if task.worker_id and task.worker_id != worker_id:  # taken over from another worker's inbox
            self._load.get(task.worker_id, set()).discard(task.id)
        task.status = TaskStatus.ASSIGNED
        task.worker_id = worker_id
        task.taken_at = now()
        task.deadline = task_deadline(task, task.taken_at, default_timeout_s)
        stored = self._tasks[task.id]  # the record is the same: only where the task is changes
        self._tasks[task.id] = _kept(task, stored.packed if isinstance(stored, _StoredTask) else stored)
        self._load[worker_id].add(task.id)
        self._set_timer(TimerKind.TIMEOUT.of(task.id), task.deadline)
        self._append_feed(
            [task_taken(task.job_id, task.state, task.id, task.type, worker_id, task.attempt, task.taken_at)]
        )
        return task

    async def queue_lengths(self) -> dict[str, int]:
        lengths: Counter[str] = Counter()
        seen: set[str] = set()
        for queue in itertools.chain(self._queues.values(), self._inboxes.values()):
            for task_id in queue:
                if task_id in seen:
                    continue  # a stale entry of a task given to another worker
                seen.add(task_id)
                if (task := self._queued_task(task_id)) is not None:
                    lengths[task.type] += 1
        return dict(lengths)

    async def worker_load(self) -> dict[str, int]:
        return {worker_id: len(tasks) for worker_id, tasks in self._load.items() if tasks}

    # -- fan-in ----------------------------------------------------------------------------------
    async def add_branch_result(
        self, job_id: str, task_id: str, result: dict[str, Any], events: Sequence[Event] = ()
    ) -> BranchAnswer:
        stored = self._tasks.get(task_id)
        status = stored.status if isinstance(stored, _StoredTask) else TaskStatus.QUEUED
        if status == TaskStatus.DONE:
            return BranchAnswer.DUPLICATE
        if stored is None or status != TaskStatus.ASSIGNED:
            return BranchAnswer.CLOSED
        fan_in = self._branches.setdefault(job_id, _FanIn(0))
        fan_in.results[task_id] = pack(result)
        self._close_task(task_id, TaskStatus.DONE)
        self._append_feed(events)
        if len(fan_in.results) == fan_in.size:
            self._runnable.put(job_id)
            return BranchAnswer.COMPLETE
        return BranchAnswer.RECORDED

    async def branch_results(self, job_id: str) -> dict[str, dict[str, Any]]:
        fan_in = self._branches.get(job_id)
        results = fan_in.results if fan_in is not None else {}
        return {task_id: orjson.loads(result) for task_id, result in results.items()}

    # -- timers ----------------------------------------------------------------------------------
    def _set_timer(self, timer_id: str, due: float) -> None:
        self._timers[timer_id] = due
        heapq.heappush(self._timer_heap, (due, timer_id))

    async def claim_timers(self, at: float, lease_s: float, limit: int = 100) -> list[TimerClaim]:
        due: list[str] = []
        heap = self._timer_heap
        again = at + lease_s
        while heap and heap[0][0] <= at and len(due) < limit:
            when, timer_id = heapq.heappop(heap)
            if self._timers.get(timer_id) == when:
                self._timers[timer_id] = again  # claimed: a second heap entry no longer matches
                due.append(timer_id)
        for timer_id in due:
            heapq.heappush(heap, (again, timer_id))
        return [TimerClaim(timer_id, repr(again)) for timer_id in due]

    async def finish_timers(self, claims: Sequence[TimerClaim]) -> None:
        for claim in claims:
            if self._timers.get(claim.timer_id) == float(claim.token):
                del self._timers[claim.timer_id]

    async def next_timer_at(self) -> float | None:
        heap = self._timer_heap
        while heap and self._timers.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- workers ---------------------------------------------------------------------------------
    async def save_worker(self, record: WorkerRecord) -> None:
        self._workers[record.worker_id] = pack(record)

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        raw = self._workers.get(worker_id)
        return unpack(WorkerRecord, raw, worker_id) if raw is not None else None

    async def list_workers(self) -> list[WorkerRecord]:
        return [unpack(WorkerRecord, raw, worker_id) for worker_id, raw in self._workers.items()]

    async def expire_workers(self, at: float) -> list[tuple[WorkerRecord, list[str]]]:
        expired = []
        for record in await self.list_workers():
            if record.expires_at <= at:
                del self._workers[record.worker_id]
                task_ids = sorted(self._load.pop(record.worker_id, set()))
                self._inboxes.pop(record.worker_id, None)
                for task_id in task_ids:
                    self._hand_on(task_id, at)
                expired.append((record, task_ids))
        return expired

    def _hand_on(self, task_id: str, at: float) -> None:
        """A task of an expired worker: queued for anyone if it was never taken, else due to be retried."""
        stored = self._tasks.get(task_id)
        if not isinstance(stored, _StoredTask):
            return
        if stored.status == TaskStatus.QUEUED:
            task = _task_of(stored, task_id)
            task.worker_id = None
            self._store_task(task)
        elif stored.status == TaskStatus.ASSIGNED:
            self._timers.pop(TimerKind.TIMEOUT.of(task_id), None)
            self._set_timer(TimerKind.LOST.of(task_id), at)

    # -- breakpoints -----------------------------------------------------------------------------
    async def set_breakpoint(self, breakpoint: Breakpoint) -> None:
        self._breakpoints[breakpoint.id] = breakpoint

    async def remove_breakpoint(self, breakpoint_id: str) -> Breakpoint | None:
        removed = self._breakpoints.pop(breakpoint_id, None)
        if removed is not None and not removed.once:
            self._set_timer(TimerKind.RELEASE_HOLDS.of(breakpoint_id), now())
        return removed

    async def breakpoints(self) -> list[Breakpoint]:
        if not self._breakpoints:  # read at the start of every step
            return []
        return sorted(self._breakpoints.values(), key=lambda bp: bp.created_at)

    # -- bulk actions ----------------------------------------------------------------------------
    async def create_bulk(self, action: BulkAction, job_ids: Sequence[str]) -> None:
        self._bulks[action.id] = (orjson.dumps(action.to_dict()), tuple(job_ids))
        while len(self._bulks) > MAX_BULKS_KEPT:  # the oldest first (dicts keep insertion order)
            self._bulks.pop(next(iter(self._bulks)))
        self._set_timer(TimerKind.BULK.of(action.id), now())

    async def get_bulk(self, bulk_id: str) -> BulkAction | None:
        stored = self._bulks.get(bulk_id)
        return BulkAction.from_dict(orjson.loads(stored[0])) if stored is not None else None

    async def list_bulks(self, limit: int = 50) -> list[BulkAction]:
        newest = list(self._bulks)[::-1][:limit]
        return [BulkAction.from_dict(orjson.loads(self._bulks[bulk_id][0])) for bulk_id in newest]

    async def bulk_jobs(self, bulk_id: str, start: int, count: int) -> list[str]:
        stored = self._bulks.get(bulk_id)
        return list(stored[1][start : start + count]) if stored is not None else []

    async def save_bulk(self, action: BulkAction, due_at: float | None) -> bool:
        stored = self._bulks.get(action.id)
        if stored is None or orjson.loads(stored[0])["version"] != action.version:
            return False
        action.version += 1
        self._bulks[action.id] = (orjson.dumps(action.to_dict()), stored[1])
        timer_id = TimerKind.BULK.of(action.id)
        if due_at is None:
            self._timers.pop(timer_id, None)
        else:
            self._set_timer(timer_id, due_at)
        return True

    # -- the history feed ------------------------------------------------------------------------
    @property
    def feed_id(self) -> str:
        return self._feed_id

    def _append_feed(self, events: Sequence[Event]) -> None:
        entry = entry_of(events)
        if not entry:
            return
        if len(self._feed) >= self.max_feed:
            self._feed.drop_through(self._feed.first)
            self.feed_dropped += 1
            if self.feed_dropped == 1 or self.feed_dropped % 10_000 == 0:
                logger.warning("history feed full (%d entries): %d dropped so far", self.max_feed, self.feed_dropped)
        # A copy: orjson's bytes sit in a buffer of several KB, held as long as the entry waits.
        self._feed.append(bytes(memoryview(entry)))

    async def read_feed(self, after: str | None, limit: int) -> list[FeedEntry]:
        start = 1 if after is None else int(after) + 1
        return [FeedEntry(str(position), events) for position, events in self._feed.read(start, limit)]

    async def trim_feed(self, reader: str, through: str) -> None:
        at = now()
        self._feed_readers[reader] = (int(through), at)
        lately = [written for written, seen in self._feed_readers.values() if at - seen <= FEED_READER_TTL_S]
        written = min(lately)
        self._feed.drop_through(written)

    async def lease_feed(self, reader: str, holder: str, lease_s: float) -> bool:
        at = now()
        if reader not in self._feed_readers:  # a reader from its first look: it holds what is here
            self._feed_readers[reader] = (0, at)
        current, until = self._feed_leases.get(reader, (holder, 0.0))
        if current != holder and until > at:
            return False
        self._feed_leases[reader] = (holder, at + lease_s)
        return True

    async def feed_length(self) -> int:
        return len(self._feed)


def _asked_only_when_needed(eligible: Callable[[Task], bool]) -> Callable[[Task], bool]:
    """``eligible`` asked only about the tasks :func:`asks_eligible` names; any other is eligible."""
    return lambda task: not asks_eligible(task) or eligible(task)


def _anything(task: Task) -> bool:
    return True


#: A task's last fields (status, worker_id, taken_at, deadline), kept in its :class:`_StoredTask` and
#: left out of its packed record.
_TASK_TAIL = 4


@dataclass(slots=True)
class _FanIn:
    """A fan-out round: how many branches it has, and the results recorded so far (packed)."""

    size: int
    results: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _StoredTask:
    """A task that is not queued for anyone: its packed record, and where the task is.

    Taking and closing a task change only where it is, so its record is not decoded and encoded again
    for them. A task queued for anyone, as most waiting tasks are, is kept as its packed record alone
    (this object would cost ~70 bytes more).
    """

    packed: bytes
    status: str
    worker_id: str | None = None
    taken_at: float | None = None
    deadline: float | None = None


def _pack_task(task: Task) -> bytes:
    return pack(task, tail=_TASK_TAIL)


def _kept(task: Task, packed: bytes) -> bytes | _StoredTask:
    """How ``task``, packed by :func:`_pack_task`, is kept."""
    if task.status == TaskStatus.QUEUED and task.worker_id is None and task.taken_at is None and task.deadline is None:
        return packed
    return _StoredTask(packed, task.status, task.worker_id, task.taken_at, task.deadline)


def _task_of(stored: bytes | _StoredTask, task_id: str) -> Task:
    if isinstance(stored, bytes):
        task: Task = unpack(Task, stored, task_id)  # queued for anyone: the tail's defaults
        return task
    task = unpack(Task, stored.packed, task_id)
    task.status, task.worker_id, task.taken_at, task.deadline = (
        stored.status,
        stored.worker_id,
        stored.taken_at,
        stored.deadline,
    )
    return task


#: A job's fields kept in its :class:`_StoredJob` and left out of its packed record: the first five
#: (id, blueprint, state, status, client) and the last one (version).
_JOB_HEAD, _JOB_TAIL = 5, 1
#: A packed job's ``wait`` when it waits on every task it dispatched, and on nothing else: the wait
#: of most jobs waiting for a worker, whose task ids its :class:`_StoredJob` holds already.
_ITS_TASKS = 0


def _pack_waiting(job: Job, task_ids: tuple[str, ...]) -> bytes:
    """The record of ``job``, which waits; a wait on exactly the tasks it dispatched (``task_ids``) as
    :data:`_ITS_TASKS` (a job waiting for a worker: ~64 bytes less)."""
    wait = job.wait
    if tasks_waited_alone(wait) != list(task_ids):
        return pack(job, head=_JOB_HEAD, tail=_JOB_TAIL)
    job.wait = _ITS_TASKS  # type: ignore[assignment]  # for the packing only (no await before it is back)
    try:
        return pack(job, head=_JOB_HEAD, tail=_JOB_TAIL)
    finally:
        job.wait = wait


class _Label(NamedTuple):
    """What lists and counts read of a job without unpacking it; one tuple shared by many jobs."""

    blueprint: str
    status: str
    state: str
    client: str | None


@dataclass(slots=True)
class _StoredJob:
    """A job as kept: its packed record, its version and its label.

    One object per job instead of an entry in four dicts: ten thousand waiting jobs cost ~300 bytes
    less each. The record leaves out what this object holds (:data:`_JOB_HEAD`, :data:`_JOB_TAIL`).
    """

    packed: bytes
    version: int
    label: _Label
    #: Every task the job dispatched, to forget them with it: its id alone while it is the only one
    #: (most jobs have one or two; a 1-tuple would cost 48 bytes more, a list of one 112), else a tuple.
    task_ids: str | tuple[str, ...] = ()

    def tasks(self) -> tuple[str, ...]:
        """The ids of every task the job dispatched."""
        return (self.task_ids,) if isinstance(self.task_ids, str) else self.task_ids

    def add_tasks(self, task_ids: tuple[str, ...]) -> None:
        """Note tasks the job dispatched (once per commit: a fan-out's are one concatenation)."""
        if not self.task_ids and len(task_ids) == 1:
            self.task_ids = task_ids[0]
        else:
            self.task_ids = self.tasks() + task_ids

    def job(self, job_id: str) -> Job:
        label = self.label
        job = unpack(Job, self.packed, job_id, label.blueprint, label.state, label.status, label.client)
        job.version = self.version  # the last field, left out of the record (_JOB_TAIL)
        if job.wait == _ITS_TASKS:
            job.wait = wait_on_tasks(list(self.tasks()))
        return job


class _TaskQueue:
    """Queued task ids, highest priority first and first in, first out within a priority.

    A deque of ids per priority: an entry is one pointer (a heap of ``(priority, sequence, id)``
    tuples cost ~116 bytes a task). Between queues, equal priorities go by the tasks' ``queued_at``.
    Entries of tasks taken, closed or queued elsewhere since are dropped when they are reached.
    """

    __slots__ = ("_lanes", "_priorities")

    def __init__(self) -> None:
        self._lanes: dict[float, deque[str]] = {}
        self._priorities: list[float] = []  # the keys of _lanes, highest first

    def __bool__(self) -> bool:
        return bool(self._lanes)

    def __iter__(self) -> Iterator[str]:
        for priority in self._priorities:
            yield from self._lanes[priority]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TaskQueue) and self._lanes == other._lanes

    def push(self, priority: float, task_id: str) -> None:
        self._lane(priority).append(task_id)

    def put_back(self, priority: float, task_id: str) -> None:
        """Return a popped id to the head of its priority."""
        self._lane(priority).appendleft(task_id)

    def pop_first(self, look: Callable[[str], Task | bool]) -> Task | None:
        """Pop the first id for which ``look`` answers a task, and answer that task.

        ``look`` answers ``False`` for an id to keep in its place and ``True`` for one to drop.
        """
        found: Task | None = None
        for priority in self._priorities:
            lane, kept = self._lanes[priority], []
            while lane:
                task_id = lane.popleft()
                verdict = look(task_id)
                if verdict is False:
                    kept.append(task_id)
                elif verdict is not True:
                    found = verdict
                    break
            lane.extendleft(reversed(kept))
            if found is not None:
                break
        self._drop_empty_lanes()
        return found

    def _lane(self, priority: float) -> deque[str]:
        lane = self._lanes.get(priority)
        if lane is None:
            lane = self._lanes[priority] = deque()
            bisect.insort(self._priorities, priority, key=operator.neg)
        return lane

    def _drop_empty_lanes(self) -> None:
        if all(self._lanes.values()):
            return
        self._priorities = [priority for priority in self._priorities if self._lanes[priority]]
        self._lanes = {priority: self._lanes[priority] for priority in self._priorities}
