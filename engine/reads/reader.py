"""The one reader of jobs, timelines, counts and workers: it decides between live storage and history.

Live storage is the authority on a job that is still live (its state, its tasks, counts per state);
history is the authority on the past (every job ever seen, their timelines, counts of ended jobs, a
blueprint's graph as it was). The API, the studio and the notebook read through :class:`Reader`
(``engine.reads``); none of them touches ``engine.storage`` or ``engine.history``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from ..errors import JobNotFound, UnknownBlueprint
from ..history.base import Cursor
from ..models import Job, JobStatus, Task, TaskStatus, WorkerRecord, now
from ..runtime.rerun import RerunOrigin, rerun_origin
from ..storage.base import JobFilter
from .lines import Line
from .query import OVER_STATUSES, JobPage, JobQuery, JobRow
from .signature import ErrorSignature, error_signature
from .timeline import Timeline
from .views import Counts, JobCounts, JobDetail, NavCounts, QueueDepth, Signed, WorkerView
from .visits import BranchCounts

if TYPE_CHECKING:
    from ..blueprint import StateMachineBlueprint
    from ..config import Config
    from ..graph import GraphModel
    from ..history import HistoryStorage, HistoryWriter
    from ..models import BulkAction
    from ..storage import Storage

logger = logging.getLogger(__name__)

#: Jobs read per storage call while scanning live storage.
SCAN_BATCH = 500
#: The most live jobs scanned for one page when there is no history.
SCAN_LIMIT_JOBS = 100_000
#: Jobs waiting on tasks scanned to find each worker's tasks (the engine has no index of tasks by worker).
WORKER_TASKS_SCAN = 1000
#: Fan-out jobs, and their tasks, read per blueprint to count branches on its graph.
FANOUT_SCAN_JOBS = 200
FANOUT_SCAN_TASKS = 5000
#: Job ids read from history per query when a filter selects jobs for a bulk action.
HISTORY_ID_PAGE = 1000
#: Quarantined jobs read at most to group them by error signature (what one bulk action takes).
MAX_QUARANTINE_INDEX = 10_000
#: Counts of ended jobs per state (from history) are read again after this long at most.
ENDED_COUNTS_TTL_S = 5.0


class LiveJobQuery(TypedDict, total=False):
    """Which live jobs :meth:`Reader.list_jobs` returns: every field given must hold."""

    status: str | None
    blueprint: str | None
    state: str | None
    client: str | None
    limit: int
    offset: int


class Sources(Protocol):
    """What the reader reads, as it is now: the engine's live storage, its history (None before the
    engine starts, or without one) and history's writer, the blueprints and the settings."""

    storage: Storage
    history: HistoryStorage | None
    history_writer: HistoryWriter | None
    blueprints: dict[str, StateMachineBlueprint]
    config: Config


@dataclass(frozen=True, slots=True)
class Backend:
    """Where the engine keeps something (live state, history): what it is, and how to reach it."""

    name: str
    ping: Callable[[], Awaitable[None]]


class Reader:
    """Reads for every face of the engine.

    Args:
        sources: Where live state and history are read (the engine keeps them).
    """

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self._ended: dict[str | None, tuple[float, dict[str, dict[str, int]]]] = {}
        self._signatures: dict[tuple[str, int], ErrorSignature] = {}

    @property
    def source(self) -> str:
        """Where lists and timelines come from: ``history``, or ``engine`` (live storage) without it."""
        return "history" if self.sources.history is not None else "engine"

    async def history_lag(self) -> int:
        """Wait (``HISTORY_READ_WAIT_SECONDS`` at most) for the events buffered now to be written to
        history; how many are not yet (0: a read of history now sees everything that happened)."""
        writer = self.sources.history_writer
        return 0 if writer is None else await writer.catch_up(self.sources.config.HISTORY_READ_WAIT_SECONDS)

    def backends(self) -> dict[str, Backend]:
        """Live storage and, when the engine keeps one, history: for a health check."""
        found = {"storage": Backend(type(self.sources.storage).__name__, self.sources.storage.ping)}
        history = self.sources.history
        if history is not None:
            found["history"] = Backend(getattr(history, "backend", "") or type(history).__name__, history.ping)
        return found

    # -- lists ----------------------------------------------------------------------------------------
    async def jobs_page(
        self, query: JobQuery, limit: int = 50, cursor: Cursor | str | None = None, *, wait: bool = True
    ) -> JobPage:
        """A keyset page, newest first: from history (every job seen), else a scan of live storage."""
        after = Cursor.decode(cursor) if isinstance(cursor, str) else cursor
        history = self.sources.history
        if history is None:
            return await self._scan(query, limit, after)
        pending = await self.history_lag() if wait else 0
        page = await history.list_jobs(query, limit, after)
        rows = [JobRow.of_history(r) for r in page.jobs]
        return JobPage(rows, page.next_cursor, pending)

    async def _live(self, query: JobQuery) -> AsyncIterator[list[Job]]:
        """Live jobs the storage's own filters let through, a batch at a time (SCAN_LIMIT_JOBS at most)."""
        for offset in range(0, SCAN_LIMIT_JOBS, SCAN_BATCH):
            batch = await self.list_jobs(
                status=query.status,
                blueprint=query.blueprint,
                state=query.state,
                client=query.client,
                limit=SCAN_BATCH,
                offset=offset,
            )
            yield batch
            if len(batch) < SCAN_BATCH:
                return

    async def _scan(self, query: JobQuery, limit: int, cursor: Cursor | None) -> JobPage:
        rows: list[JobRow] = []
        async for batch in self._live(query):
            for job in batch:
                row = JobRow.of(job)
                if (cursor is None or (row.created_at, row.id) < (cursor.created_at, cursor.id)) and query.matches_job(
                    job
                ):
                    rows.append(row)
            if len(rows) > limit:
                break
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        more = len(rows) > limit
        rows = rows[:limit]
        following = Cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return JobPage(rows, following, source="engine")

    async def job_ids(self, query: JobQuery, limit: int) -> list[str]:
        """Ids of the jobs matching ``query`` (what a bulk action may act on: a rerun, jobs live storage no
        longer keeps too), newest first, from history (else live storage); at most ``limit`` + 1, so a
        caller can tell "more than ``limit``" apart."""
        history = self.sources.history
        if history is not None:
            await self.history_lag()
            ids: list[str] = []
            cursor: Cursor | None = None
            while len(ids) <= limit:
                page = await history.list_jobs(query, min(HISTORY_ID_PAGE, limit + 1), cursor)
                ids += [row.id for row in page.jobs]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            return ids[: limit + 1]
        found: list[tuple[float, str]] = []
        async for batch in self._live(query):
            found += [(job.created_at, job.id) for job in batch if query.matches_job(job)]
            if len(found) > limit:
                break
        return [job_id for _, job_id in sorted(found, reverse=True)[: limit + 1]]

    async def bulk_actions(self, limit: int = 50) -> list[BulkAction]:
        """Recent bulk actions, newest first."""
        return await self.sources.storage.list_bulks(limit)

    async def quarantined(self, limit: int = 500, client: str | None = None) -> list[JobDetail]:
        """Quarantined jobs (of ``client`` alone when given) with the tasks they hold."""
        jobs = await self.list_jobs(status=JobStatus.QUARANTINED, client=client, limit=limit)
        return [JobDetail(job, await self.current_tasks(job), None) for job in jobs]

    async def quarantine_index(self, client: str | None = None, limit: int = MAX_QUARANTINE_INDEX) -> list[Signed]:
        """Every quarantined job (of ``client`` alone when given; at most ``limit``) with its error
        signature. A job's signature is read once per version of it (its held task's type is a read)."""
        jobs = await self.list_jobs(status=JobStatus.QUARANTINED, client=client, limit=limit)
        cache = self._signatures
        if len(cache) > 2 * MAX_QUARANTINE_INDEX:
            cache.clear()
        signed = []
        for job in jobs:
            found = cache.get((job.id, job.version))
            if found is None:
                held = await self.current_tasks(job, limit=1)
                found = cache[(job.id, job.version)] = error_signature(job.error, held[0].type if held else None)
            signed.append(Signed(job, found))
        return signed

    # -- one job --------------------------------------------------------------------------------------
    async def job(self, job_id: str) -> Job | None:
        """The live job, or None when live storage no longer keeps it."""
        return await self.sources.storage.get_job(job_id)

    async def require(self, job_id: str, client: str | None = None) -> Job:
        """The live job, or JobNotFound, also when it belongs to another client than ``client``."""
        job = await self.sources.storage.get_job(job_id)
        if job is None or (client is not None and job.client != client):
            raise JobNotFound(job_id)
        return job

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        blueprint: str | None = None,
        state: str | None = None,
        client: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """Live jobs, as live storage's own filters select them."""
        return await self.sources.storage.list_jobs(JobFilter(status, blueprint, client, state), limit, offset)

    @staticmethod
    def current_task_ids(job: Job) -> list[str]:
        """Ids of the tasks the job is waiting on (or holds, when quarantined)."""
        wait = job.wait or {}
        return list(wait.get("held_task_ids" if job.status == JobStatus.QUARANTINED else "task_ids", []))

    async def current_tasks(self, job: Job, limit: int | None = None) -> list[Task]:
        """The tasks the job is waiting on (or holds, when quarantined); the first ``limit`` of them."""
        tasks = [await self.sources.storage.get_task(task_id) for task_id in self.current_task_ids(job)[:limit]]
        return [t for t in tasks if t is not None]

    async def job_history(self, job_id: str, client: str | None = None, *, wait: bool = True) -> list[Line]:
        """The job's timeline from history (with ``wait``, after :meth:`history_lag`).

        Raises JobNotFound for an unknown job, or one of another client than ``client``.
        """
        if wait:
            await self.history_lag()
        known, owner = await self.owner(job_id)
        lines = await self.timeline(job_id, wait=False)
        if not known or lines is None or (client is not None and owner != client):
            raise JobNotFound(job_id)
        return lines

    async def timeline(self, job_id: str, after_seq: int = 0, *, wait: bool = True) -> list[Line] | None:
        """The job's timeline lines after ``after_seq`` (after :meth:`history_lag`); None without history."""
        history = self.sources.history
        if history is None:
            return None
        if wait:
            await self.history_lag()
        return await history.timeline(job_id, after_seq=after_seq)

    async def detail(self, job_id: str, *, tasks: bool = True) -> JobDetail | None:
        """The job, live when live storage keeps it, else rebuilt from history; None when neither knows it."""
        job = await self.job(job_id)
        pending = await self.history_lag()
        lines = await self.timeline(job_id, wait=False)
        timeline = Timeline(lines) if lines is not None else None
        row = await self.sources.history.get_job(job_id) if self.sources.history is not None else None
        version = row.blueprint_version if row is not None else None
        if job is not None:
            held = await self.current_tasks(job) if tasks else []
            return JobDetail(job, held, timeline, history_pending=pending, blueprint_version=version)
        if row is None or timeline is None:
            return None
        archived = _job_from_history(JobRow.of_history(row), timeline)
        return JobDetail(archived, [], timeline, True, pending, version)

    async def rerun_origin(
        self, job_id: str, state: str | None = None, visit: int | None = None, client: str | None = None
    ) -> RerunOrigin:
        """Where a rerun of ``job_id`` from ``state`` (default: the start state) starts, with the data
        the job had there; JobNotFound also for a job of another client than ``client``."""
        detail = await self.detail(job_id, tasks=False)
        if detail is None or (client is not None and detail.job.client != client):
            raise JobNotFound(job_id)
        job = detail.job
        blueprint = self.sources.blueprints.get(job.blueprint)
        if blueprint is None:
            raise UnknownBlueprint(job.blueprint)
        return rerun_origin(
            job_id,
            blueprint=job.blueprint,
            client=job.client,
            status=job.status,
            state=state or blueprint.start_state or "",
            start_state=blueprint.start_state,
            timeline=detail.timeline,
            live=None if detail.from_history else job,
            visit=visit,
        )

    async def owner(self, job_id: str) -> tuple[bool, str | None]:
        """Whether the job is known (live or in history), and the client that owns it."""
        job = await self.job(job_id)
        if job is not None:
            return True, job.client
        row = await self.sources.history.get_job(job_id) if self.sources.history is not None else None
        return row is not None, row.client if row is not None else None

    # -- counts ---------------------------------------------------------------------------------------
    async def job_counts(self, client: str | None = None) -> JobCounts:
        """Live jobs per (blueprint, status, state): every job's, or only ``client``'s (storage keeps both)."""
        return await self.sources.storage.count_jobs(client)

    async def counts(self, client: str | None = None, *, in_flight: bool = False) -> Counts:
        """Live jobs per blueprint, state and status (of ``client`` alone when given); with
        ``in_flight``, only those still going (not finished, failed or cancelled)."""
        counts: Counts = {}
        for (blueprint, status, state), n in (await self.job_counts(client)).items():
            if in_flight and status in OVER_STATUSES:
                continue
            by_status = counts.setdefault(blueprint, {}).setdefault(state, {})
            by_status[status] = by_status.get(status, 0) + n
        return counts

    async def ended_counts(self, blueprint: str) -> dict[str, dict[str, int]]:
        """Jobs of ``blueprint`` that ended (finished, failed, cancelled, lost), per state they ended in
        and status, from history (every job it kept), read again at most every ENDED_COUNTS_TTL_S."""
        history = self.sources.history
        if history is None:
            return {}
        cached = self._ended.get(blueprint)
        if cached is not None and time.monotonic() - cached[0] < ENDED_COUNTS_TTL_S:
            return cached[1]
        found: dict[str, dict[str, int]] = {}
        for (state, status), n in (await history.counts(blueprint)).by_state_status.items():
            if status in OVER_STATUSES:
                found.setdefault(state, {})[status] = n
        self._ended[blueprint] = (time.monotonic(), found)
        return found

    async def fan_outs(self, blueprint: str, client: str | None = None) -> dict[str, BranchCounts]:
        """Branches of the fan-outs under way, per state: the jobs of ``blueprint`` waiting for
        parallel tasks (up to FANOUT_SCAN_JOBS, FANOUT_SCAN_TASKS tasks), their tasks counted."""
        jobs = await self.list_jobs(
            status=JobStatus.WAITING_FOR_PARALLEL_TASKS, blueprint=blueprint, client=client, limit=FANOUT_SCAN_JOBS
        )
        found: dict[str, BranchCounts] = {}
        budget = FANOUT_SCAN_TASKS
        for job in jobs:
            if budget <= 0:
                break
            tasks = await self.current_tasks(job, limit=budget)
            budget -= len(tasks)
            counts = BranchCounts.of(_branch_status(t) for t in tasks)
            found[job.state] = found.get(job.state, BranchCounts()) + counts
        return found

    async def nav_counts(self, client: str | None = None) -> NavCounts:
        """Quarantined and held jobs (of ``client`` when given) and alive workers, for the navigation bar."""
        counted = (await self.job_counts(client)).items()
        quarantined = sum(n for (_, status, _), n in counted if status == JobStatus.QUARANTINED)
        held = sum(n for (_, status, _), n in counted if status == JobStatus.HELD)
        at = now()
        alive = sum(1 for w in await self.list_workers() if w.alive(at))
        return NavCounts(quarantined, alive, held)

    async def dashboard(self, client: str | None = None) -> dict[str, Any]:
        """Live jobs by status (a client's own), workers, and queued tasks by type (every client's:
        None for a client)."""
        by_status: dict[str, int] = {}
        for (_, status, _), n in (await self.job_counts(client)).items():
            by_status[status] = by_status.get(status, 0) + n
        at = now()
        workers = await self.list_workers()
        return {
            "jobs": {"total": sum(by_status.values()), "by_status": by_status},
            "workers": {"total": len(workers), "alive": sum(1 for w in workers if w.alive(at))},
            "queues": await self.sources.storage.queue_lengths() if client is None else None,
        }

    # -- workers --------------------------------------------------------------------------------------
    async def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker's record, alive or not."""
        return await self.sources.storage.list_workers()

    async def worker(self, worker_id: str) -> WorkerRecord | None:
        """The worker's record (alive or not), or None when it never registered or was forgotten."""
        return await self.sources.storage.get_worker(worker_id)

    async def worker_load(self) -> dict[str, int]:
        """Tasks given to each worker and not answered yet (its inbox and what it runs)."""
        return await self.sources.storage.worker_load()

    async def workers(self, client: str | None = None) -> list[WorkerView]:
        """Every registered worker, alive first, with what it runs and what waits in its inbox (of
        ``client``'s jobs alone when given)."""
        records = await self.list_workers()
        load = await self.worker_load()
        running, inbox = await self._tasks_by_worker(client)
        at = now()
        views = [
            WorkerView(
                r, r.alive(at), load.get(r.worker_id, 0), running.get(r.worker_id, []), inbox.get(r.worker_id, [])
            )
            for r in records
        ]
        return sorted(views, key=lambda v: (not v.alive, v.record.worker_id))

    async def queues(self, workers: list[WorkerView] | None = None) -> list[QueueDepth]:
        """Per task type: tasks waiting (shared queue and inboxes), in inboxes, taken; and the alive
        workers that take it."""
        views = workers if workers is not None else await self.workers()
        found: dict[str, QueueDepth] = {}
        for task_type, n in (await self.sources.storage.queue_lengths()).items():
            found.setdefault(task_type, QueueDepth(task_type)).queued = n
        for view in views:
            for task in view.inbox:
                found.setdefault(task.type, QueueDepth(task.type)).in_inboxes += 1
            for task in view.running:
                found.setdefault(task.type, QueueDepth(task.type)).running += 1
            if view.alive:
                for task_type in view.record.supported_tasks:
                    found.setdefault(task_type, QueueDepth(task_type)).workers += 1
        return sorted(found.values(), key=lambda q: q.task_type)

    async def _tasks_by_worker(self, client: str | None) -> tuple[dict[str, list[Task]], dict[str, list[Task]]]:
        # The engine keeps no index of tasks by worker: scan the jobs that wait on tasks. Answered
        # branches of a fan-out stay in their job's list: only open tasks count.
        running: dict[str, list[Task]] = {}
        inbox: dict[str, list[Task]] = {}
        for status in (JobStatus.WAITING_FOR_WORKER, JobStatus.WAITING_FOR_PARALLEL_TASKS):
            for job in await self.list_jobs(status=status, client=client, limit=WORKER_TASKS_SCAN):
                for task in await self.current_tasks(job):
                    if not task.worker_id:
                        continue
                    if task.status == TaskStatus.ASSIGNED:
                        running.setdefault(task.worker_id, []).append(task)
                    elif task.status == TaskStatus.QUEUED:
                        inbox.setdefault(task.worker_id, []).append(task)
        return running, inbox

    # -- graphs ---------------------------------------------------------------------------------------
    async def graph(self, blueprint: str, version: str) -> GraphModel | None:
        """The graph ``blueprint`` had at ``version``, as history kept it (None if it did not)."""
        history = self.sources.history
        if history is None:
            return None
        from ..graph import model_from_json

        stored = await history.graph(blueprint, version)
        return model_from_json(stored) if stored is not None else None


def _branch_status(task: Task) -> str:
    return {
        TaskStatus.DONE: "done",
        TaskStatus.ASSIGNED: "running",
        TaskStatus.QUEUED: "queued",
        TaskStatus.RETRY_SCHEDULED: "retrying",
        TaskStatus.WITHDRAWN: "withdrawn",
    }.get(TaskStatus(task.status), "queued")


def _job_from_history(row: JobRow, timeline: Timeline) -> Job:
    """A job whose live record is gone, as history knows it: its row, its input, where it went, and
    its ``state_history`` rebuilt from what each step recorded."""
    return Job(
        **{name: getattr(row, name) for name in _ROW_FIELDS_OF_A_JOB},
        initial_data=timeline.initial_data,
        visits=timeline.visit_counts,
        state_history=timeline.state_history,
    )


#: What a history row says of a job under the names a job has.
_ROW_FIELDS_OF_A_JOB = (
    "id",
    "blueprint",
    "state",
    "status",
    "created_at",
    "updated_at",
    "error",
    "retry_count",
    "client",
)
