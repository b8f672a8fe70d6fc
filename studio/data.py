"""What the studio reads, in one place: jobs pages, counts, a job's detail and its timeline.

When the engine keeps history (``engine.history``, an :class:`avtomatika.history.base.HistoryStorage`),
:func:`studio_data` picks :class:`HistorySource`: the jobs list is a keyset query over history's
index and the job page has its timeline. Without history, :class:`EngineSource` scans the engine's
live storage and there is no timeline. Live things (a job's state and tasks, counts per state, the
navigation counts) always come from the engine: history is written in batches and lags a little.

Pages are keyset pages in both cases: a :class:`Cursor` is the last row's ``(created_at, id)``, so a
page never shifts when new jobs arrive at the top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..engine import OrchestratorEngine
from ..history import Cursor
from ..models import TERMINAL_STATUSES, Job, JobStatus, Task, WorkerRecord, now
from ..reads import SCAN_BATCH, job_counts

logger = logging.getLogger(__name__)

#: The most live jobs scanned for one page through the engine (history has no such limit).
SCAN_LIMIT_JOBS = 100_000
#: Waiting jobs scanned to find the tasks each worker holds (the engine has no per-worker index).
WORKER_TASKS_SCAN = 1000


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The jobs page's filters; every field given must hold."""

    blueprint: str | None = None
    status: str | None = None
    state: str | None = None
    id_prefix: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    #: Only this client's jobs (a client's session); None: every job.
    client: str | None = None

    def matches(self, row: JobRow) -> bool:
        """Whether ``row`` passes every filter (used for live rows and the engine scan)."""
        return (
            (not self.blueprint or row.blueprint == self.blueprint)
            and (not self.status or row.status == self.status)
            and (not self.state or row.state == self.state)
            and (not self.id_prefix or row.id.startswith(self.id_prefix))
            and (self.created_after is None or row.created_at >= self.created_after)
            and (self.created_before is None or row.created_at < self.created_before)
            and (self.client is None or row.client == self.client)
        )


@dataclass(frozen=True, slots=True)
class JobRow:
    """One line of the jobs table, from a live :class:`Job` or a history row."""

    id: str
    blueprint: str
    status: str
    state: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str | None = None
    retry_count: int = 0
    client: str | None = None

    @classmethod
    def of(cls, job: Job) -> JobRow:
        ended = job.updated_at if job.status in TERMINAL_STATUSES else None
        return cls(
            job.id,
            job.blueprint,
            job.status,
            job.state,
            job.created_at,
            job.updated_at,
            ended,
            job.error,
            job.retry_count,
            job.client,
        )

    @property
    def duration_s(self) -> float:
        """Run time so far, or until it ended."""
        return max((self.finished_at or now()) - self.created_at, 0.0)


@dataclass(frozen=True, slots=True)
class JobPage:
    rows: list[JobRow]
    next_cursor: Cursor | None = None
    #: Events not yet in history when the page was read: it may miss that many recent changes.
    history_pending: int = 0


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """One line of a job's timeline (history's ``TimelineEntry``, as the studio shows it)."""

    at: float
    kind: str
    state: str | None
    status: str | None
    worker_id: str | None
    duration_ms: float | None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


#: Jobs per state and status: ``{blueprint: {state: {status: n}}}``.
Counts = dict[str, dict[str, dict[str, int]]]


class JobSource(Protocol):
    """Where jobs lists, counts and timelines come from."""

    name: str

    async def list_jobs(self, query: JobQuery, limit: int, cursor: Cursor | None) -> JobPage: ...

    async def timeline(self, job_id: str, after_seq: int = 0) -> list[TimelineLine] | None:
        """The job's timeline after line ``after_seq``, or None when this source keeps none."""
        ...

    async def job_row(self, job_id: str) -> JobRow | None:
        """The job as this source last recorded it (history outlives the engine's live record)."""
        ...


class EngineSource:
    """Reads live storage through the engine: jobs that are still in it, no timelines."""

    name = "engine"

    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine

    async def list_jobs(self, query: JobQuery, limit: int, cursor: Cursor | None) -> JobPage:
        """A keyset page found by scanning the engine's list (newest first) in batches."""
        rows: list[JobRow] = []
        for offset in range(0, SCAN_LIMIT_JOBS, SCAN_BATCH):
            batch = await self.engine.list_jobs(
                status=query.status,
                blueprint=query.blueprint,
                state=query.state,
                client=query.client,
                limit=SCAN_BATCH,
                offset=offset,
            )
            for job in batch:
                row = JobRow.of(job)
                if (cursor is None or (row.created_at, row.id) < (cursor.created_at, cursor.id)) and query.matches(row):
                    rows.append(row)
            if len(rows) > limit or len(batch) < SCAN_BATCH:
                break
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage(rows, Cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)

    async def counts(self, client: str | None = None) -> Counts:
        """Jobs per blueprint, state and status, in live storage (of ``client`` alone when given)."""
        counts: Counts = {}
        for (blueprint, status, state), n in (await job_counts(self.engine, client)).items():
            by_status = counts.setdefault(blueprint, {}).setdefault(state, {})
            by_status[status] = by_status.get(status, 0) + n
        return counts

    async def timeline(self, job_id: str, after_seq: int = 0) -> list[TimelineLine] | None:
        return None

    async def job_row(self, job_id: str) -> JobRow | None:
        job = await self.engine.get_job(job_id)
        return JobRow.of(job) if job is not None else None


class HistorySource:
    """Reads history (``engine.history``): keyset pages over an index, grouped counts, timelines.

    Args:
        history: A :class:`avtomatika.history.base.HistoryStorage`.
    """

    name = "history"

    def __init__(self, history: Any) -> None:
        self.history = history

    async def list_jobs(self, query: JobQuery, limit: int, cursor: Cursor | None) -> JobPage:
        from ..history.base import HistoryFilter

        where = HistoryFilter(
            blueprint=query.blueprint,
            status=query.status,
            state=query.state,
            created_after=query.created_after,
            created_before=query.created_before,
            id_prefix=query.id_prefix,
            client=query.client,
        )
        after = cursor
        page = await self.history.list_jobs(where, limit, after)
        rows = [_row_of(r) for r in page.jobs]
        following = page.next_cursor
        return JobPage(rows, Cursor(following.created_at, following.id) if following else None)

    async def job_row(self, job_id: str) -> JobRow | None:
        row = await self.history.get_job(job_id)
        return _row_of(row) if row is not None else None

    async def timeline(self, job_id: str, after_seq: int = 0) -> list[TimelineLine] | None:
        entries = await self.history.timeline(job_id, after_seq=after_seq)
        return [
            TimelineLine(e.at, e.kind, e.state, e.status, e.worker_id, e.duration_ms, e.data, e.seq) for e in entries
        ]


def _row_of(r: Any) -> JobRow:
    """A studio row from history's :class:`avtomatika.history.records.JobRow`."""
    return JobRow(
        r.id,
        r.blueprint,
        r.status,
        r.state,
        r.created_at,
        r.updated_at,
        r.finished_at,
        r.error,
        r.retry_count,
        r.client,
    )


def job_from_history(row: JobRow, timeline: list[TimelineLine]) -> Job:
    """A job whose live record is gone, as far as history knows it: its row, its input, where it went.

    ``state_history``, ``wait`` and tasks are not recorded, so they stay empty; ``visits`` counts the
    states the timeline shows it entering.
    """
    visits: dict[str, int] = {}
    initial_data: dict[str, Any] = {}
    for line in timeline:
        if line.kind == "job_created" and isinstance(line.data.get("initial_data"), dict):
            initial_data = line.data["initial_data"]
        if line.kind in ("job_created", "state_entered") and line.state:
            visits[line.state] = visits.get(line.state, 0) + 1
    return Job(
        id=row.id,
        blueprint=row.blueprint,
        state=row.state,
        status=row.status,
        initial_data=initial_data,
        created_at=row.created_at,
        updated_at=row.updated_at,
        error=row.error,
        retry_count=row.retry_count,
        client=row.client,
        visits=visits,
    )


@dataclass(slots=True)
class JobDetail:
    """Everything the job page shows about one job."""

    job: Job
    tasks: list[Task]
    timeline: list[TimelineLine] | None
    #: True when the engine no longer keeps the job and all of it comes from history.
    from_history: bool = False
    #: Events not yet in history when the timeline was read: it may miss that many recent lines.
    history_pending: int = 0


@dataclass(slots=True)
class WorkerView:
    record: WorkerRecord
    alive: bool
    load: int
    tasks: list[Task]


class StudioData:
    """The studio's one reader: live jobs from the engine, lists/counts/timelines from a source.

    Args:
        engine: The engine (always the authority on a job's live state and tasks).
        source: Jobs lists, counts and timelines; :class:`EngineSource` or :class:`HistorySource`.
    """

    def __init__(self, engine: OrchestratorEngine, source: JobSource) -> None:
        self.engine = engine
        self.source = source

    async def jobs_page(self, query: JobQuery, limit: int = 50, cursor: str | None = None) -> JobPage:
        pending = await self.history_lag()  # a job started a moment ago is on the list
        page = await self.source.list_jobs(query, limit, Cursor.decode(cursor) if cursor else None)
        return replace(page, history_pending=pending)

    async def history_lag(self) -> int:
        """When the studio reads history: wait (boundedly) for what its writer buffered; how many
        events are still not written (:meth:`OrchestratorEngine.history_lag`)."""
        return await self.engine.history_lag() if self.source.name == "history" else 0

    async def counts(self, client: str | None = None) -> Counts:
        """Jobs per blueprint, state and status (of ``client`` alone when given); always live."""
        return await EngineSource(self.engine).counts(client)

    async def job(self, job_id: str) -> Job | None:
        return await self.engine.get_job(job_id)

    async def archived(self, job_id: str) -> JobDetail | None:
        """A job the engine no longer keeps (its live record was forgotten), rebuilt from history."""
        if self.source.name != "history":
            return None
        pending = await self.history_lag()
        timeline = await self.source.timeline(job_id)
        row = await self.source.job_row(job_id)
        if row is None or timeline is None:
            return None
        return JobDetail(job_from_history(row, timeline), [], timeline, from_history=True, history_pending=pending)

    async def job_detail(self, job: Job, *, timeline: bool = True) -> JobDetail:
        """The job with its current tasks and (unless ``timeline`` is False) its whole timeline."""
        tasks = await self.engine.current_tasks(job)
        if not timeline:
            return JobDetail(job, tasks, None)
        pending = await self.history_lag()
        return JobDetail(job, tasks, await self.source.timeline(job.id), history_pending=pending)

    async def timeline(self, job_id: str, after_seq: int = 0) -> list[TimelineLine] | None:
        """The job's timeline after line ``after_seq``, after :meth:`history_lag`."""
        await self.history_lag()
        return await self.source.timeline(job_id, after_seq)

    async def quarantined(self, limit: int = 500, client: str | None = None) -> list[JobDetail]:
        """Quarantined jobs (of ``client`` alone when given) with the tasks they hold."""
        jobs = await self.engine.list_jobs(status=JobStatus.QUARANTINED, client=client, limit=limit)
        return [JobDetail(job, await self.engine.current_tasks(job), None) for job in jobs]

    async def nav_counts(self, client: str | None = None) -> tuple[int, int]:
        """(quarantined jobs (of ``client`` when given), alive workers), for the navigation bar."""
        counted = (await job_counts(self.engine, client)).items()
        quarantined = sum(n for (_, status, _), n in counted if status == JobStatus.QUARANTINED)
        at = now()
        alive = sum(1 for w in await self.engine.list_workers() if w.alive(at))
        return quarantined, alive

    async def workers(self, client: str | None = None) -> list[WorkerView]:
        """Every registered worker with its load and the tasks it holds now (of ``client``'s jobs when given)."""
        records = await self.engine.list_workers()
        load = await self.engine.storage.worker_load()
        held = await self._tasks_by_worker(client)
        at = now()
        views = [WorkerView(r, r.alive(at), load.get(r.worker_id, 0), held.get(r.worker_id, [])) for r in records]
        return sorted(views, key=lambda v: (not v.alive, v.record.worker_id))

    async def _tasks_by_worker(self, client: str | None = None) -> dict[str, list[Task]]:
        # The engine keeps no index of tasks by worker: scan the jobs that wait on tasks.
        found: dict[str, list[Task]] = {}
        for status in (JobStatus.WAITING_FOR_WORKER, JobStatus.WAITING_FOR_PARALLEL_TASKS):
            for job in await self.engine.list_jobs(status=status, client=client, limit=WORKER_TASKS_SCAN):
                for task in await self.engine.current_tasks(job):
                    if task.worker_id and task.taken_at is not None:
                        found.setdefault(task.worker_id, []).append(task)
        return found


def studio_data(engine: OrchestratorEngine) -> StudioData:
    """The data layer for ``engine``: history when the engine has it, else the engine alone."""
    history = getattr(engine, "history", None)
    source: JobSource = HistorySource(history) if history is not None else EngineSource(engine)
    logger.debug("studio reads jobs from %s", source.name)
    return StudioData(engine, source)
