"""The storage contract as tests, run against every backend.

A backend's test module subclasses :class:`StorageContract` as ``Test<Backend>`` and provides a
``storage`` fixture giving a fresh, connected, empty backend. The tests use the :class:`Storage`
interface only (see its docstrings, which these tests follow), so they hold for any backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from avtomatika.errors import VersionConflict
from avtomatika.events import Event, EventKind, task_taken
from avtomatika.feed import FeedRow, row_of, rows_of
from avtomatika.models import (
    Breakpoint,
    BulkAction,
    BulkKind,
    BulkStatus,
    Job,
    JobStatus,
    Task,
    TaskStatus,
    WorkerRecord,
    new_id,
)
from avtomatika.storage.base import BranchAnswer, Commit, JobFilter, Storage, TaskPoll
from avtomatika.timers import TimerKind

#: How long a poll that should find nothing waits.
SHORT = 0.05
#: How long a poll waits when it is expected to be woken well before.
LONG = 5.0
#: How long after it is taken a task without a ``timeout_s`` of its own times out.
DEFAULT_TIMEOUT_S = 30.0
#: How long a claimed timer stays with its claimer in these tests.
LEASE_S = 1000.0


# -- builders -------------------------------------------------------------------------------------
def make_job(blueprint: str = "bp", state: str = "start", **fields: Any) -> Job:
    return Job(id=new_id(), blueprint=blueprint, state=state, **fields)


def make_task(job: Job, task_type: str = "a", **fields: Any) -> Task:
    return Task(id=new_id(), job_id=job.id, type=task_type, **fields)


def make_worker(*task_types: str, expires_in: float = 3600.0, **info: Any) -> WorkerRecord:
    at = time.time()
    worker_id = new_id()
    info = {"worker_id": worker_id, "supported_tasks": list(task_types), **info}
    return WorkerRecord(worker_id, info, registered_at=at, last_seen=at, expires_at=at + expires_in)


def anyone(task: Task) -> bool:
    return True


def nobody(task: Task) -> bool:
    return False


def without_requirements(task: Task) -> bool:
    return not task.requirements


async def new_job(storage: Storage, **fields: Any) -> Job:
    return await storage.create_job(make_job(**fields), run=False)


async def dispatch(storage: Storage, job: Job, *tasks: Task) -> Job:
    return await storage.commit(Commit(job, tasks=list(tasks)))


async def take(
    storage: Storage,
    worker: WorkerRecord,
    timeout_s: float = SHORT,
    eligible: Callable[[Task], bool] = anyone,
) -> Task | None:
    return await storage.take_task(TaskPoll(worker, timeout_s, DEFAULT_TIMEOUT_S, eligible))


async def take_ids(
    storage: Storage, worker: WorkerRecord, count: int, eligible: Callable[[Task], bool] = anyone
) -> list[str]:
    """The ids of the next ``count`` tasks ``worker`` takes (all of which must be there)."""
    taken = [await take(storage, worker, eligible=eligible) for _ in range(count)]
    assert None not in taken
    return [task.id for task in taken if task is not None]


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` without zeros (a backend may keep or drop keys that fell to zero)."""
    return {key: n for key, n in counts.items() if n}


async def set_timers(storage: Storage, timers: dict[str, float]) -> None:
    job = await new_job(storage)
    await storage.commit(Commit(job, timers=timers))


async def claim(storage: Storage, at: float, limit: int = 100) -> list[str]:
    """The ids of the timers claimed at ``at`` (for ``LEASE_S``)."""
    return [c.timer_id for c in await storage.claim_timers(at, LEASE_S, limit)]


async def drain_timers(storage: Storage) -> set[str]:
    """Every pending timer id (claiming and finishing them all)."""
    claims = await storage.claim_timers(time.time() + 10 * 365 * 86400, LEASE_S, limit=10_000)
    await storage.finish_timers(claims)
    return {c.timer_id for c in claims}


async def fan_out(storage: Storage, size: int, worker: WorkerRecord | None = None) -> tuple[Job, list[Task]]:
    """A job waiting for ``size`` branches, all of them taken by ``worker``."""
    job = await new_job(storage)
    tasks = [make_task(job) for _ in range(size)]
    job = await storage.commit(Commit(job, tasks=tasks, fan_in=size))
    await take_ids(storage, worker or make_worker("a"), size)
    return job, tasks


async def feed_rows(storage: Storage) -> list[list[FeedRow]]:
    """The events of every entry of the history feed, oldest first."""
    return [[tuple(row) for row in rows_of(entry.events)] for entry in await storage.read_feed(None, 10_000)]  # type: ignore[misc]


def created_event(job: Job) -> Event:
    return Event(EventKind.JOB_CREATED, job.id, job.blueprint, job.state, str(job.status), {"n": 1}, 1.5)


async def create_jobs(storage: Storage, *specs: dict[str, Any]) -> list[Job]:
    """Create a job from each of ``specs`` (fields), in order, each one second newer than the last."""
    base = time.time() - 1000
    return [
        await storage.create_job(make_job(created_at=base + i, updated_at=base + i, **spec), run=False)
        for i, spec in enumerate(specs)
    ]


class StorageContract:
    """Tests every backend passes; subclasses provide the ``storage`` fixture."""

    # -- lifecycle -------------------------------------------------------------------------------
    async def test_ping_succeeds(self, storage: Storage) -> None:
        await storage.ping()

    # -- jobs ------------------------------------------------------------------------------------
    async def test_create_job_returns_version_1(self, storage: Storage) -> None:
        job = await storage.create_job(make_job(), run=False)
        assert job.version == 1

    async def test_get_job_round_trips_every_field(self, storage: Storage) -> None:
        at = time.time()
        job = Job(
            id=new_id(),
            blueprint="orders",
            state="review",
            status=JobStatus.WAITING_FOR_HUMAN,
            initial_data={"amount": 12.5, "items": [1, "two", None, {"nested": True}]},
            state_history={"start": {"ok": 1}},
            created_at=at - 10.25,
            updated_at=at - 1.5,
            error="earlier: boom",
            retry_count=2,
            handler_attempts=3,
            client="acme",
            parent_job_id=new_id(),
            wait={"kind": "human", "transitions": {"approve": "done"}, "message": "please"},
            visits={"start": 1, "review": 2},
            tracing_context={"traceparent": "00-abc-def-01"},
        )
        created = await storage.create_job(job, run=False)
        expected = Job.from_dict({**job.to_dict(), "version": 1})
        assert created == expected
        assert await storage.get_job(job.id) == expected

    async def test_get_job_of_unknown_id_is_none(self, storage: Storage) -> None:
        assert await storage.get_job(new_id()) is None

    async def test_create_job_queues_it_to_run_by_default(self, storage: Storage) -> None:
        job = await storage.create_job(make_job())
        assert await storage.take_runnable(LONG) == job.id

    async def test_create_job_without_run_does_not_queue_it(self, storage: Storage) -> None:
        await storage.create_job(make_job(), run=False)
        assert await storage.take_runnable(SHORT) is None

    async def test_mutating_a_read_job_changes_nothing_stored(self, storage: Storage) -> None:
        job = await new_job(storage, initial_data={"items": [1]})
        read = await storage.get_job(job.id)
        assert read is not None
        read.initial_data["items"].append(2)
        read.status = JobStatus.FAILED
        stored = await storage.get_job(job.id)
        assert stored is not None
        assert stored.initial_data == {"items": [1]}
        assert stored.status == JobStatus.PENDING

    async def test_mutating_a_job_after_creating_it_changes_nothing_stored(self, storage: Storage) -> None:
        job = make_job(initial_data={"items": [1]})
        await storage.create_job(job, run=False)
        job.initial_data["items"].append(2)
        stored = await storage.get_job(job.id)
        assert stored is not None
        assert stored.initial_data == {"items": [1]}

    async def test_mutating_a_read_task_changes_nothing_stored(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, params={"n": [1]})
        await dispatch(storage, job, task)
        read = await storage.get_task(task.id)
        assert read is not None
        read.params["n"].append(2)
        read.status = TaskStatus.DONE
        stored = await storage.get_task(task.id)
        assert stored is not None
        assert stored.params == {"n": [1]}
        assert stored.status == TaskStatus.QUEUED

    # -- commit ----------------------------------------------------------------------------------
    async def test_commit_increments_version(self, storage: Storage) -> None:
        job = await new_job(storage)
        job = await storage.commit(Commit(job))
        assert job.version == 2
        job = await storage.commit(Commit(job))
        assert job.version == 3
        stored = await storage.get_job(job.id)
        assert stored is not None
        assert stored.version == 3

    async def test_job_version_is_the_stored_version(self, storage: Storage) -> None:
        job = await new_job(storage)
        assert await storage.job_version(job.id) == 1
        job = await storage.commit(Commit(job))
        assert await storage.job_version(job.id) == job.version == 2
        assert await storage.job_version(new_id()) is None

    async def test_commit_stores_the_job_as_returned(self, storage: Storage) -> None:
        job = await new_job(storage)
        job.status = JobStatus.WAITING_FOR_WORKER
        job.state = "work"
        job.state_history = {"start": {"x": 1}}
        job.wait = {"kind": "tasks", "task_ids": ["t1"]}
        job.visits = {"start": 1}
        committed = await storage.commit(Commit(job))
        assert committed.status == JobStatus.WAITING_FOR_WORKER
        assert committed.wait == {"kind": "tasks", "task_ids": ["t1"]}
        assert await storage.get_job(job.id) == committed

    async def test_commit_stamps_updated_at(self, storage: Storage) -> None:
        job = await new_job(storage, updated_at=time.time() - 100)
        before = time.time()
        committed = await storage.commit(Commit(job))
        assert before <= committed.updated_at <= time.time()

    async def test_stale_commit_raises_version_conflict(self, storage: Storage) -> None:
        job = await new_job(storage)
        stale = await storage.get_job(job.id)
        assert stale is not None
        await storage.commit(Commit(job))
        with pytest.raises(VersionConflict):
            await storage.commit(Commit(stale))

    async def test_commit_of_a_job_never_created_conflicts(self, storage: Storage) -> None:
        job = make_job()
        job.version = 1
        with pytest.raises(VersionConflict):
            await storage.commit(Commit(job))
        assert await storage.get_job(job.id) is None

    async def test_stale_commit_changes_nothing(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        running, answered = make_task(job), make_task(job)
        job = await storage.commit(Commit(job, tasks=[running, answered], timers={"keep": time.time() + 100}))
        assert await take(storage, worker) is not None
        assert await take(storage, worker) is not None
        await storage.add_branch_result(job.id, answered.id, {"x": 1})
        stale = await storage.get_job(job.id)
        assert stale is not None
        current = await storage.commit(Commit(job))
        fed = await storage.feed_length()

        stale.status = JobStatus.FAILED
        stale.error = "lost the race"
        fresh = make_task(stale, "b")
        change = Commit(
            stale,
            run=True,
            tasks=[fresh],
            close_tasks={running.id: TaskStatus.DONE},
            timers={"new": time.time() - 1},
            cancel_timers=["keep"],
            fan_in=3,
            children=[make_job()],
            events=[created_event(stale)],
        )
        with pytest.raises(VersionConflict):
            await storage.commit(change)

        assert await storage.get_job(job.id) == current
        assert await storage.get_task(fresh.id) is None
        still_running = await storage.get_task(running.id)
        assert still_running is not None
        assert still_running.status == TaskStatus.ASSIGNED
        assert (await storage.worker_load()).get(worker.worker_id) == 1
        assert (await storage.queue_lengths()).get("b", 0) == 0
        assert await storage.branch_results(job.id) == {answered.id: {"x": 1}}
        assert await storage.take_runnable(SHORT) is None
        assert await storage.feed_length() == fed
        assert len(await storage.list_jobs(JobFilter())) == 1
        assert await drain_timers(storage) == {"keep", f"timeout:{running.id}"}

    async def test_commit_with_run_queues_the_job(self, storage: Storage) -> None:
        job = await new_job(storage)
        await storage.commit(Commit(job, run=True))
        assert await storage.take_runnable(LONG) == job.id

    async def test_commit_without_run_does_not_queue_the_job(self, storage: Storage) -> None:
        job = await new_job(storage)
        await storage.commit(Commit(job))
        assert await storage.take_runnable(SHORT) is None

    async def test_commit_stores_tasks_with_every_field(self, storage: Storage) -> None:
        job = await new_job(storage)
        at = time.time()
        task = Task(
            id=new_id(),
            job_id=job.id,
            type="resize",
            params={"size": [640, 480], "fast": True},
            transitions={"success": "done", "failure": "retry"},
            priority=7.5,
            timeout_s=12.0,
            strategy="least_connections",
            requirements={"gpu": {"vram_gb": 8}},
            max_cost=0.25,
            aggregate_into="results",
            state="work",
            attempt=3,
            status=TaskStatus.RETRY_SCHEDULED,
            worker_id="w-1",
            queued_at=at - 5,
            taken_at=at - 4,
            deadline=at + 60,
            progress=0.5,
            progress_message="half",
            tracing_context={"traceparent": "00-abc-def-01"},
        )
        await dispatch(storage, job, task)
        assert await storage.get_task(task.id) == task

    async def test_get_task_of_unknown_id_is_none(self, storage: Storage) -> None:
        assert await storage.get_task(new_id()) is None

    async def test_commit_queues_queued_tasks(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id

    async def test_commit_only_stores_retry_scheduled_tasks(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, status=TaskStatus.RETRY_SCHEDULED)
        await dispatch(storage, job, task)
        stored = await storage.get_task(task.id)
        assert stored is not None
        assert stored.status == TaskStatus.RETRY_SCHEDULED
        assert (await storage.queue_lengths()).get("a", 0) == 0
        assert await take(storage, make_worker("a")) is None

    async def test_recommitting_a_retry_scheduled_task_as_queued_queues_it(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, status=TaskStatus.RETRY_SCHEDULED)
        job = await dispatch(storage, job, task)
        task.status = TaskStatus.QUEUED
        await dispatch(storage, job, task)
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id

    async def test_close_tasks_sets_the_final_status(self, storage: Storage) -> None:
        job = await new_job(storage)
        done, withdrawn = make_task(job), make_task(job)
        job = await dispatch(storage, job, done, withdrawn)
        close = {done.id: TaskStatus.DONE, withdrawn.id: TaskStatus.WITHDRAWN}
        await storage.commit(Commit(job, close_tasks=close))
        for task_id, status in close.items():
            stored = await storage.get_task(task_id)
            assert stored is not None
            assert stored.status == status

    async def test_close_tasks_ignores_unknown_task_ids(self, storage: Storage) -> None:
        job = await new_job(storage)
        committed = await storage.commit(Commit(job, close_tasks={new_id(): TaskStatus.DONE}))
        assert committed.version == 2

    async def test_close_tasks_removes_the_task_from_its_worker_load(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        first, second = make_task(job), make_task(job)
        job = await dispatch(storage, job, first, second)
        await take_ids(storage, worker, 2)
        await storage.commit(Commit(job, close_tasks={first.id: TaskStatus.DONE}))
        assert (await storage.worker_load()).get(worker.worker_id) == 1

    async def test_close_tasks_cancels_the_task_timeout(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job)
        job = await dispatch(storage, job, task)
        assert await take(storage, make_worker("a")) is not None
        await storage.commit(Commit(job, close_tasks={task.id: TaskStatus.DONE}))
        assert await storage.next_timer_at() is None
        assert await drain_timers(storage) == set()

    async def test_commit_sets_timers(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {"retry_job:1": at + 10, "retry_job:2": at + 20})
        assert await storage.next_timer_at() == at + 10
        assert await claim(storage, at + 15) == ["retry_job:1"]

    async def test_commit_cancels_timers(self, storage: Storage) -> None:
        at = time.time()
        job = await new_job(storage)
        job = await storage.commit(Commit(job, timers={"t1": at + 10, "t2": at + 20}))
        await storage.commit(Commit(job, cancel_timers=["t1", "never-set"]))
        assert await storage.next_timer_at() == at + 20
        assert await drain_timers(storage) == {"t2"}

    async def test_setting_an_existing_timer_moves_it(self, storage: Storage) -> None:
        at = time.time()
        job = await new_job(storage)
        job = await storage.commit(Commit(job, timers={"early": at - 10, "late": at + 100}))
        await storage.commit(Commit(job, timers={"early": at + 100, "late": at - 10}))
        claims = await storage.claim_timers(at, LEASE_S)
        assert [c.timer_id for c in claims] == ["late"]
        await storage.finish_timers(claims)
        assert await drain_timers(storage) == {"early"}

    async def test_a_timer_cancelled_and_set_in_one_commit_is_set(self, storage: Storage) -> None:
        at = time.time()
        job = await new_job(storage)
        job = await storage.commit(Commit(job, timers={"t": at + 100}))
        await storage.commit(Commit(job, cancel_timers=["t"], timers={"t": at - 1}))
        assert await claim(storage, at) == ["t"]

    async def test_a_new_fan_in_forgets_the_job_branch_results(self, storage: Storage) -> None:
        worker = make_worker("a")
        job, (first, _) = await fan_out(storage, 2, worker)
        other, (elsewhere,) = await fan_out(storage, 1, worker)
        await storage.add_branch_result(job.id, first.id, {"x": 1})
        await storage.add_branch_result(other.id, elsewhere.id, {"y": 2})
        job = await storage.get_job(job.id)
        assert job is not None
        again = make_task(job)
        await storage.commit(Commit(job, tasks=[again], fan_in=1))
        assert await storage.branch_results(job.id) == {}
        assert await storage.branch_results(other.id) == {elsewhere.id: {"y": 2}}
        await take(storage, worker)
        assert await storage.add_branch_result(job.id, again.id, {}) == BranchAnswer.COMPLETE

    async def test_a_new_fan_in_may_start_with_results_recorded(self, storage: Storage) -> None:
        """A job restored as it was (the step debugger's Back): its round's results come back with it."""
        job, (first, _) = await fan_out(storage, 2)
        await storage.add_branch_result(job.id, first.id, {"x": 1})
        job = await storage.commit(Commit(job, fan_in=2, branch_results={first.id: {"x": 1}, "gone": {"y": 2}}))
        assert await storage.branch_results(job.id) == {first.id: {"x": 1}, "gone": {"y": 2}}

    async def test_withdrawing_a_task_answered_since_it_was_read_conflicts(self, storage: Storage) -> None:
        job, (answered, other) = await fan_out(storage, 2)
        read = await storage.get_job(job.id)
        assert read is not None
        assert await storage.add_branch_result(job.id, answered.id, {"x": 1}) == BranchAnswer.RECORDED
        read.status = JobStatus.CANCELLED
        withdraw = {answered.id: TaskStatus.WITHDRAWN, other.id: TaskStatus.WITHDRAWN}
        with pytest.raises(VersionConflict):  # read again, the caller closes it as done instead
            await storage.commit(Commit(read, close_tasks=withdraw))
        assert (await storage.get_job(job.id)) == job
        stored = await storage.get_task(answered.id)
        assert stored is not None
        assert stored.status == TaskStatus.DONE
        closed = await storage.commit(Commit(read, close_tasks={**withdraw, answered.id: TaskStatus.DONE}))
        assert closed.status == JobStatus.CANCELLED

    async def test_commit_creates_its_children_and_queues_them(self, storage: Storage) -> None:
        parent = await new_job(storage)
        child = make_job(blueprint="child", parent_job_id=parent.id, initial_data={"n": 1})
        parent.status = JobStatus.WAITING_FOR_SUB_JOB
        await storage.commit(Commit(parent, children=[child]))
        stored = await storage.get_job(child.id)
        assert stored == Job.from_dict({**child.to_dict(), "version": 1})
        assert await storage.take_runnable(LONG) == child.id

    async def test_commit_and_create_job_put_their_events_in_the_feed_as_one_entry(self, storage: Storage) -> None:
        job = make_job()
        created = created_event(job)
        job = await storage.create_job(job, run=False, events=[created])
        moved = Event(EventKind.STATE_ENTERED, job.id, job.blueprint, "next", "running", {"previous": "start"}, 2.5)
        finished = Event(EventKind.JOB_FINISHED, job.id, job.blueprint, "next", "finished", {}, 3.25)
        job = await storage.commit(Commit(job, events=[moved, finished]))
        await storage.commit(Commit(job))  # no events: no entry
        assert await feed_rows(storage) == [[row_of(created)], [row_of(moved), row_of(finished)]]
        assert await storage.feed_length() == 2

    # -- list_jobs -------------------------------------------------------------------------------
    async def test_list_jobs_newest_first(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {}, {}, {})
        listed = await storage.list_jobs(JobFilter())
        assert [job.id for job in listed] == [job.id for job in reversed(jobs)]

    async def test_list_jobs_returns_whole_jobs(self, storage: Storage) -> None:
        [job] = await create_jobs(storage, {"initial_data": {"a": 1}, "client": "acme"})
        assert await storage.list_jobs(JobFilter()) == [job]

    async def test_list_jobs_filters_by_status(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {"status": JobStatus.RUNNING}, {"status": JobStatus.FAILED}, {})
        listed = await storage.list_jobs(JobFilter(status=JobStatus.FAILED))
        assert [job.id for job in listed] == [jobs[1].id]

    async def test_list_jobs_filters_by_blueprint(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {"blueprint": "x"}, {"blueprint": "y"}, {"blueprint": "x"})
        listed = await storage.list_jobs(JobFilter(blueprint="x"))
        assert [job.id for job in listed] == [jobs[2].id, jobs[0].id]

    async def test_list_jobs_filters_by_client(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {"client": "acme"}, {"client": "other"}, {})
        listed = await storage.list_jobs(JobFilter(client="acme"))
        assert [job.id for job in listed] == [jobs[0].id]

    async def test_list_jobs_filters_by_state(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {"state": "start"}, {"state": "review"}, {"state": "review"})
        listed = await storage.list_jobs(JobFilter(state="review"))
        assert [job.id for job in listed] == [jobs[2].id, jobs[1].id]

    async def test_list_jobs_combines_filters(self, storage: Storage) -> None:
        jobs = await create_jobs(
            storage,
            {"blueprint": "x", "client": "acme", "state": "s", "status": JobStatus.RUNNING},
            {"blueprint": "x", "client": "acme", "state": "s", "status": JobStatus.FAILED},
            {"blueprint": "x", "client": "other", "state": "s", "status": JobStatus.RUNNING},
            {"blueprint": "y", "client": "acme", "state": "s", "status": JobStatus.RUNNING},
            {"blueprint": "x", "client": "acme", "state": "t", "status": JobStatus.RUNNING},
        )
        where = JobFilter(status=JobStatus.RUNNING, blueprint="x", client="acme", state="s")
        assert [job.id for job in await storage.list_jobs(where)] == [jobs[0].id]

    async def test_list_jobs_filters_on_the_committed_job(self, storage: Storage) -> None:
        [job] = await create_jobs(storage, {"state": "start"})
        job.status = JobStatus.FINISHED
        job.state = "end"
        await storage.commit(Commit(job))
        assert await storage.list_jobs(JobFilter(state="start")) == []
        assert await storage.list_jobs(JobFilter(status=JobStatus.PENDING)) == []
        listed = await storage.list_jobs(JobFilter(state="end", status=JobStatus.FINISHED))
        assert [j.id for j in listed] == [job.id]

    async def test_list_jobs_limit_and_offset(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, *({} for _ in range(5)))
        newest_first = [job.id for job in reversed(jobs)]
        assert [j.id for j in await storage.list_jobs(JobFilter(), limit=2)] == newest_first[:2]
        assert [j.id for j in await storage.list_jobs(JobFilter(), limit=2, offset=2)] == newest_first[2:4]
        assert [j.id for j in await storage.list_jobs(JobFilter(), limit=10, offset=3)] == newest_first[3:]

    async def test_list_jobs_offset_counts_matching_jobs_only(self, storage: Storage) -> None:
        jobs = await create_jobs(storage, {"client": "a"}, {"client": "b"}, {"client": "a"}, {"client": "b"})
        listed = await storage.list_jobs(JobFilter(client="a"), limit=1, offset=1)
        assert [job.id for job in listed] == [jobs[0].id]

    async def test_list_jobs_with_limit_zero_is_empty(self, storage: Storage) -> None:
        await create_jobs(storage, {}, {})
        assert await storage.list_jobs(JobFilter(), limit=0) == []

    async def test_list_jobs_past_the_end_is_empty(self, storage: Storage) -> None:
        await create_jobs(storage, {}, {})
        assert await storage.list_jobs(JobFilter(), offset=2) == []

    async def test_list_jobs_when_empty(self, storage: Storage) -> None:
        assert await storage.list_jobs(JobFilter()) == []

    # -- count_jobs ------------------------------------------------------------------------------
    async def test_count_jobs_by_blueprint_status_and_state(self, storage: Storage) -> None:
        await create_jobs(
            storage,
            {"blueprint": "x", "state": "s"},
            {"blueprint": "x", "state": "s"},
            {"blueprint": "x", "state": "t"},
            {"blueprint": "y", "state": "s", "status": JobStatus.RUNNING},
        )
        assert await storage.count_jobs() == {
            ("x", "pending", "s"): 2,
            ("x", "pending", "t"): 1,
            ("y", "running", "s"): 1,
        }

    async def test_count_jobs_follows_commits(self, storage: Storage) -> None:
        [job, _] = await create_jobs(storage, {"blueprint": "x", "state": "s"}, {"blueprint": "x", "state": "s"})
        job.status = JobStatus.FINISHED
        job.state = "end"
        await storage.commit(Commit(job))
        counts = {key: n for key, n in (await storage.count_jobs()).items() if n}  # zeros may be kept
        assert counts == {("x", "pending", "s"): 1, ("x", "finished", "end"): 1}

    async def test_count_jobs_when_empty(self, storage: Storage) -> None:
        assert await storage.count_jobs() == {}
        assert await storage.count_jobs("acme") == {}

    async def test_count_jobs_of_one_client(self, storage: Storage) -> None:
        acme, *_ = await create_jobs(
            storage,
            {"blueprint": "x", "state": "s", "client": "acme"},
            {"blueprint": "x", "state": "s", "client": "globex"},
            {"blueprint": "x", "state": "s", "client": "acme"},
        )
        await create_jobs(storage, {"blueprint": "x", "state": "s"})  # no client
        acme.status = JobStatus.FINISHED
        await storage.commit(Commit(acme))
        assert await storage.count_jobs("acme") == {("x", "pending", "s"): 1, ("x", "finished", "s"): 1}
        assert await storage.count_jobs("globex") == {("x", "pending", "s"): 1}
        assert await storage.count_jobs() == {("x", "pending", "s"): 3, ("x", "finished", "s"): 1}

    # -- take_runnable ---------------------------------------------------------------------------
    async def test_take_runnable_returns_none_after_timeout_when_empty(self, storage: Storage) -> None:
        assert await storage.take_runnable(SHORT) is None

    async def test_take_runnable_is_first_in_first_out(self, storage: Storage) -> None:
        jobs = [await storage.create_job(make_job()) for _ in range(3)]
        later = await new_job(storage)
        await storage.commit(Commit(later, run=True))
        taken = [await storage.take_runnable(LONG) for _ in range(4)]
        assert taken == [*(job.id for job in jobs), later.id]

    async def test_take_runnable_hands_a_job_out_once(self, storage: Storage) -> None:
        job = await storage.create_job(make_job())
        assert await storage.take_runnable(LONG) == job.id
        await storage.ack_runnable(job.id)
        assert await storage.take_runnable(SHORT) is None

    async def test_finish_step_releases_the_lease_and_acknowledges_the_entry(self, storage: Storage) -> None:
        job = await storage.create_job(make_job())
        assert await storage.take_runnable(LONG) == job.id
        assert await storage.lease_and_get_job(job.id, "stepper") == (True, job, [])  # the job, read with the lease
        await storage.finish_step(job.id, "stepper")
        assert await storage.lease_job(job.id, "next")
        await storage.release_job_lease(job.id, "next")
        assert await storage.take_runnable(SHORT) is None

    async def test_breakpoints_are_set_listed_oldest_first_and_removed(self, storage: Storage) -> None:
        assert await storage.breakpoints() == []
        first = Breakpoint("flow", "start", created_at=1.0)
        second = Breakpoint("flow", "*", job_id="j1", once=True, actor="operator:ann", created_at=2.0)
        await storage.set_breakpoint(second)
        await storage.set_breakpoint(first)
        assert await storage.breakpoints() == [first, second]
        moved = Breakpoint("flow", "end", id=first.id, created_at=3.0)
        await storage.set_breakpoint(moved)  # the same id: replaced
        assert await storage.breakpoints() == [second, moved]
        assert await storage.remove_breakpoint(second.id) == second
        assert await storage.remove_breakpoint(second.id) is None
        assert await storage.breakpoints() == [moved]
        assert await storage.next_timer_at() is None  # a step's: nobody else is held by it

    async def test_removing_a_breakpoint_makes_its_release_due(self, storage: Storage) -> None:
        breakpoint = Breakpoint("flow", "start")
        await storage.set_breakpoint(breakpoint)
        assert await storage.remove_breakpoint(breakpoint.id) == breakpoint
        claims = await storage.claim_timers(time.time() + 1, 30.0)
        assert [claim.timer_id for claim in claims] == [TimerKind.RELEASE_HOLDS.of(breakpoint.id)]

    async def test_a_bulk_action_is_stored_with_its_jobs_and_its_timer(self, storage: Storage) -> None:
        job_ids = [f"job-{n}" for n in range(2500)]  # more than one write's worth
        action = BulkAction(BulkKind.RELEASE, len(job_ids), 5.0, "operator:ann", {"params": {"n": 1}})
        await storage.create_bulk(action, job_ids)
        assert await storage.get_bulk(action.id) == action
        assert await storage.bulk_jobs(action.id, 0, 3) == job_ids[:3]
        assert await storage.bulk_jobs(action.id, 2498, 10) == job_ids[2498:]
        assert await storage.bulk_jobs("nope", 0, 3) == []
        claims = await storage.claim_timers(time.time() + 1, 30.0)
        assert [claim.timer_id for claim in claims] == [TimerKind.BULK.of(action.id)]
        await storage.finish_timers(claims)
        newer = BulkAction(BulkKind.FAIL, 1, 1.0, "operator:bo", created_at=action.created_at + 1)
        await storage.create_bulk(newer, ["job-x"])
        assert [found.id for found in await storage.list_bulks()] == [newer.id, action.id]
        assert [found.id for found in await storage.list_bulks(limit=1)] == [newer.id]

    async def test_saving_a_bulk_action_checks_its_version_and_sets_its_timer(self, storage: Storage) -> None:
        action = BulkAction(BulkKind.CANCEL, 2, 1.0, "operator:ann")
        await storage.create_bulk(action, ["a", "b"])
        await storage.finish_timers(await storage.claim_timers(time.time() + 1, 30.0))
        stale = await storage.get_bulk(action.id)
        assert stale is not None
        action.record(1, [], 1)
        assert await storage.save_bulk(action, time.time() + 100)
        assert action.version == 1
        assert await storage.next_timer_at() == pytest.approx(time.time() + 100, abs=5)
        stale.status = BulkStatus.CANCELLED
        assert not await storage.save_bulk(stale, None)  # read before the save above
        assert stale.version == 0
        stored = await storage.get_bulk(action.id)
        assert stored is not None
        assert (stored.handled, stored.version) == (1, 1)
        stored.status = BulkStatus.CANCELLED
        assert await storage.save_bulk(stored, None)
        assert await storage.next_timer_at() is None

    async def test_a_step_lease_reads_the_breakpoints(self, storage: Storage) -> None:
        job = await storage.create_job(make_job(), run=False)
        breakpoint = Breakpoint(job.blueprint, "start")
        await storage.set_breakpoint(breakpoint)
        assert await storage.lease_and_get_job(job.id, "stepper") == (True, job, [breakpoint])
        await storage.release_job_lease(job.id, "stepper")

    async def test_take_runnable_wakes_when_a_job_is_queued(self, storage: Storage) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(storage.take_runnable(LONG))
        await asyncio.sleep(SHORT)
        job = await storage.create_job(make_job())
        assert await poll == job.id
        assert loop.time() - started < LONG

    # -- take_task -------------------------------------------------------------------------------
    async def test_take_task_gives_only_supported_task_types(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, "b")
        await dispatch(storage, job, task)
        assert await take(storage, make_worker("a", "c")) is None
        taken = await take(storage, make_worker("a", "b"))
        assert taken is not None
        assert taken.id == task.id

    async def test_take_task_gives_higher_priority_first(self, storage: Storage) -> None:
        job = await new_job(storage)
        low, high, middle = make_task(job, priority=1), make_task(job, priority=5), make_task(job, priority=3)
        await dispatch(storage, job, low, high, middle)
        assert await take_ids(storage, make_worker("a"), 3) == [high.id, middle.id, low.id]

    async def test_take_task_is_fifo_among_equal_priorities(self, storage: Storage) -> None:
        job = await new_job(storage)
        first, second, third = (make_task(job, priority=2) for _ in range(3))
        job = await dispatch(storage, job, first, second)
        await dispatch(storage, job, third)
        assert await take_ids(storage, make_worker("a"), 3) == [first.id, second.id, third.id]

    async def test_take_task_priority_spans_task_types(self, storage: Storage) -> None:
        job = await new_job(storage)
        a_low, b_high, a_high = (make_task(job, t, priority=p) for t, p in (("a", 1), ("b", 9), ("a", 5)))
        await dispatch(storage, job, a_low, b_high, a_high)
        assert await take_ids(storage, make_worker("a", "b"), 3) == [b_high.id, a_high.id, a_low.id]

    async def test_take_task_is_fifo_across_task_types(self, storage: Storage) -> None:
        job = await new_job(storage)
        first_b, then_a, last_b = make_task(job, "b"), make_task(job, "a"), make_task(job, "b")
        await dispatch(storage, job, first_b, then_a, last_b)
        assert await take_ids(storage, make_worker("a", "b"), 3) == [first_b.id, then_a.id, last_b.id]

    async def test_take_task_gives_preassigned_tasks_first(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        anyones = make_task(job, priority=9)
        mine = make_task(job, priority=0, worker_id=worker.worker_id)
        await dispatch(storage, job, anyones, mine)
        assert await take_ids(storage, worker, 2) == [mine.id, anyones.id]

    async def test_preassigned_tasks_go_only_to_their_worker(self, storage: Storage) -> None:
        worker, other = make_worker("a"), make_worker("a")
        job = await new_job(storage)
        task = make_task(job, worker_id=worker.worker_id)
        await dispatch(storage, job, task)
        assert await take(storage, other) is None
        taken = await take(storage, worker)
        assert taken is not None
        assert taken.id == task.id

    async def test_preassigned_task_left_waiting_is_taken_over_by_an_idle_worker(self, storage: Storage) -> None:
        storage.steal_after_s = 0.05
        chosen, idle = make_worker("a"), make_worker("a")
        job = await new_job(storage)
        task = make_task(job, worker_id=chosen.worker_id)
        await dispatch(storage, job, task)
        taken = await take(storage, idle, timeout_s=5.0)
        assert taken is not None
        assert taken.id == task.id
        assert taken.worker_id == idle.worker_id
        load = await storage.worker_load()
        assert load.get(chosen.worker_id, 0) == 0
        assert load.get(idle.worker_id, 0) == 1
        assert await take(storage, chosen) is None

    async def test_preassigned_task_is_not_taken_over_by_an_ineligible_worker(self, storage: Storage) -> None:
        storage.steal_after_s = 0.0
        chosen, idle = make_worker("a"), make_worker("a")
        job = await new_job(storage)
        task = make_task(job, worker_id=chosen.worker_id, requirements={"gpu": True})
        await dispatch(storage, job, task)
        assert await take(storage, idle, eligible=without_requirements) is None
        taken = await take(storage, make_worker("a", gpu=True))
        assert taken is not None
        assert taken.id == task.id

    async def test_preassigned_task_is_not_taken_over_by_a_worker_of_another_type(self, storage: Storage) -> None:
        storage.steal_after_s = 0.0
        chosen = make_worker("a")
        other = make_worker("b")
        job = await new_job(storage)
        await dispatch(storage, job, make_task(job, worker_id=chosen.worker_id))
        assert await take(storage, other) is None

    async def test_preassigned_tasks_are_by_priority(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        low, high = (make_task(job, worker_id=worker.worker_id, priority=p) for p in (1, 2))
        await dispatch(storage, job, low, high)
        assert await take_ids(storage, worker, 2) == [high.id, low.id]

    async def test_preassigned_tasks_ignore_eligible_and_supported_tasks(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        task = make_task(job, "z", worker_id=worker.worker_id)
        await dispatch(storage, job, task)
        taken = await take(storage, worker, eligible=nobody)
        assert taken is not None
        assert taken.id == task.id

    async def test_ineligible_tasks_are_skipped_and_stay_queued(self, storage: Storage) -> None:
        job = await new_job(storage)
        picky, plain = make_task(job, priority=5, requirements={"gpu": True}), make_task(job)
        await dispatch(storage, job, picky, plain)
        no_gpu = make_worker("a")
        taken = await take(storage, no_gpu, eligible=without_requirements)
        assert taken is not None
        assert taken.id == plain.id
        assert await take(storage, no_gpu, eligible=without_requirements) is None
        assert (await storage.queue_lengths()).get("a") == 1
        taken = await take(storage, make_worker("a", gpu=True))
        assert taken is not None
        assert taken.id == picky.id

    async def test_a_task_over_the_workers_max_cost_is_skipped(self, storage: Storage) -> None:
        job = await new_job(storage)
        costly, cheap = make_task(job, priority=5, max_cost=0.5), make_task(job, max_cost=2.0)
        await dispatch(storage, job, costly, cheap)
        worker = make_worker("a", cost_per_second=1.0)
        taken = await take(storage, worker, eligible=lambda task: (task.max_cost or 0) >= 1.0)
        assert taken is not None
        assert taken.id == cheap.id
        assert await take(storage, worker, eligible=lambda task: (task.max_cost or 0) >= 1.0) is None

    async def test_eligible_is_asked_only_about_tasks_with_requirements_or_max_cost(self, storage: Storage) -> None:
        job = await new_job(storage)
        plain = make_task(job, priority=9, requirements={})
        picky, costly = make_task(job, priority=5, requirements={"gpu": True}), make_task(job, max_cost=1.0)
        await dispatch(storage, job, plain, picky, costly)
        asked: list[str] = []

        def refuse(task: Task) -> bool:
            asked.append(task.id)
            return False

        worker = make_worker("a")
        taken = await take(storage, worker, eligible=refuse)
        assert taken is not None
        assert taken.id == plain.id
        assert await take(storage, worker, eligible=refuse) is None
        assert plain.id not in asked
        assert set(asked) == {picky.id, costly.id}

    async def test_requirements_set_on_a_queued_task_are_asked_about(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        await storage.update_task(task.id, requirements={"gpu": True})
        assert await take(storage, make_worker("a"), eligible=without_requirements) is None
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id

    async def test_the_first_eligible_task_behind_many_ineligible_ones_is_found(self, storage: Storage) -> None:
        job = await new_job(storage)
        picky = [make_task(job, priority=5, requirements={"model": i}) for i in range(40)]
        plain = make_task(job)
        await dispatch(storage, job, *picky, plain)
        worker = make_worker("a")
        taken = await take(storage, worker, eligible=lambda task: task.requirements == {"model": 33})
        assert taken is not None
        assert taken.id == picky[33].id
        taken = await take(storage, worker, eligible=nobody)
        assert taken is not None
        assert taken.id == plain.id

    async def test_an_ineligible_task_lets_no_lower_priority_ahead(self, storage: Storage) -> None:
        job = await new_job(storage)
        a_skipped = make_task(job, "a", priority=10, requirements={"gpu": True})
        a_low = make_task(job, "a", priority=1)
        b_middle = make_task(job, "b", priority=5)
        await dispatch(storage, job, a_skipped, a_low, b_middle)
        taken = await take_ids(storage, make_worker("a", "b"), 2, eligible=without_requirements)
        assert taken == [b_middle.id, a_low.id]

    async def test_taken_task_is_marked_assigned(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        before = time.time()
        taken = await take(storage, worker)
        after = time.time()
        assert taken is not None
        assert taken.status == TaskStatus.ASSIGNED
        assert taken.worker_id == worker.worker_id
        assert taken.taken_at is not None
        assert before <= taken.taken_at <= after
        assert taken.deadline == taken.taken_at + DEFAULT_TIMEOUT_S
        assert await storage.get_task(task.id) == taken

    async def test_a_task_with_its_own_timeout_is_due_after_it(self, storage: Storage) -> None:
        job = await new_job(storage)
        own, changed = make_task(job, timeout_s=7.5), make_task(job, timeout_s=7.5)
        await dispatch(storage, job, own, changed)
        await storage.update_task(changed.id, timeout_s=None)
        first, second = await take(storage, make_worker("a")), await take(storage, make_worker("a"))
        assert first is not None
        assert second is not None
        assert first.taken_at is not None
        assert second.taken_at is not None
        assert (first.id, first.deadline) == (own.id, first.taken_at + 7.5)
        assert (second.id, second.deadline) == (changed.id, second.taken_at + DEFAULT_TIMEOUT_S)

    async def test_taken_task_keeps_its_other_fields(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, params={"p": 1}, priority=2, state="work", attempt=2, timeout_s=5.0)
        await dispatch(storage, job, task)
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        changed = {"status", "worker_id", "taken_at", "deadline"}
        assert {k: v for k, v in taken.to_dict().items() if k not in changed} == {
            k: v for k, v in task.to_dict().items() if k not in changed
        }

    async def test_taken_task_has_a_timeout_timer_at_its_deadline(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.deadline is not None
        assert await storage.next_timer_at() == taken.deadline
        assert await claim(storage, taken.deadline - 1) == []
        assert await claim(storage, taken.deadline) == [f"timeout:{task.id}"]

    async def test_take_task_returns_none_after_its_timeout(self, storage: Storage) -> None:
        assert await take(storage, make_worker("a"), timeout_s=SHORT) is None

    async def test_take_task_wakes_when_a_task_is_committed(self, storage: Storage) -> None:
        job = await new_job(storage)
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(take(storage, make_worker("a"), timeout_s=LONG))
        await asyncio.sleep(SHORT)
        task = make_task(job)
        await dispatch(storage, job, task)
        taken = await poll
        assert taken is not None
        assert taken.id == task.id
        assert loop.time() - started < LONG

    async def test_take_task_wakes_for_a_task_preassigned_to_the_worker(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(take(storage, worker, timeout_s=LONG))
        await asyncio.sleep(SHORT)
        task = make_task(job, worker_id=worker.worker_id)
        await dispatch(storage, job, task)
        taken = await poll
        assert taken is not None
        assert taken.id == task.id
        assert loop.time() - started < LONG

    async def test_take_task_gives_each_task_once_to_concurrent_pollers(self, storage: Storage) -> None:
        job = await new_job(storage)
        tasks = [make_task(job) for _ in range(5)]
        polls = [asyncio.create_task(take(storage, make_worker("a"), timeout_s=0.5)) for _ in range(8)]
        await asyncio.sleep(SHORT)
        await dispatch(storage, job, *tasks)
        taken = await asyncio.gather(*polls)
        assert sorted(task.id for task in taken if task is not None) == sorted(task.id for task in tasks)

    async def test_end_polls_answers_waiting_polls_none_at_once_until_connected_again(self, storage: Storage) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        polls = [asyncio.create_task(take(storage, make_worker("a"), timeout_s=LONG)) for _ in range(3)]
        await asyncio.sleep(SHORT)
        storage.end_polls()
        assert await asyncio.gather(*polls) == [None, None, None]
        assert loop.time() - started < LONG
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        assert await take(storage, make_worker("a"), timeout_s=LONG) is None  # ended: not even a queued task
        await storage.connect()
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id

    async def test_a_closed_task_is_never_handed_out(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        queued, preassigned = make_task(job), make_task(job, worker_id=worker.worker_id)
        job = await dispatch(storage, job, queued, preassigned)
        close = {queued.id: TaskStatus.WITHDRAWN, preassigned.id: TaskStatus.WITHDRAWN}
        await storage.commit(Commit(job, close_tasks=close))
        assert await take(storage, worker) is None
        assert await take(storage, make_worker("a")) is None

    async def test_a_task_recommitted_to_another_worker_goes_only_to_it(self, storage: Storage) -> None:
        first, second, anyone_else = make_worker("a"), make_worker("a"), make_worker("a")
        job = await new_job(storage)
        task = make_task(job, worker_id=first.worker_id)
        job = await dispatch(storage, job, task)
        task.worker_id = second.worker_id
        await dispatch(storage, job, task)
        assert await take(storage, first) is None
        assert await take(storage, anyone_else) is None
        assert nonzero(await storage.worker_load()) == {second.worker_id: 1}
        assert (await storage.queue_lengths()).get("a") == 1
        taken = await take(storage, second)
        assert taken is not None
        assert taken.id == task.id

    async def test_a_queued_task_recommitted_to_a_worker_goes_only_to_it(self, storage: Storage) -> None:
        worker, other = make_worker("a"), make_worker("a")
        job = await new_job(storage)
        task = make_task(job)
        job = await dispatch(storage, job, task)
        task.worker_id = worker.worker_id
        await dispatch(storage, job, task)
        assert await take(storage, other) is None
        assert (await storage.queue_lengths()).get("a") == 1
        taken = await take(storage, worker)
        assert taken is not None
        assert taken.id == task.id

    # -- queue_lengths and worker_load -----------------------------------------------------------
    async def test_queue_lengths_counts_queued_tasks_by_type(self, storage: Storage) -> None:
        job = await new_job(storage)
        await dispatch(storage, job, make_task(job, "a"), make_task(job, "a"), make_task(job, "b"))
        assert nonzero(await storage.queue_lengths()) == {"a": 2, "b": 1}

    async def test_queue_lengths_leaves_out_taken_closed_and_scheduled_tasks(self, storage: Storage) -> None:
        job = await new_job(storage)
        taken, closed, kept = make_task(job), make_task(job), make_task(job)
        scheduled = make_task(job, status=TaskStatus.RETRY_SCHEDULED)
        job = await dispatch(storage, job, taken, closed, kept, scheduled)
        assert await take(storage, make_worker("a")) is not None
        await storage.commit(Commit(job, close_tasks={closed.id: TaskStatus.WITHDRAWN}))
        assert (await storage.queue_lengths()).get("a") == 1

    async def test_queue_lengths_counts_preassigned_tasks(self, storage: Storage) -> None:
        job = await new_job(storage)
        await dispatch(storage, job, make_task(job, "a", worker_id="w-1"), make_task(job, "a"))
        assert nonzero(await storage.queue_lengths()) == {"a": 2}

    async def test_queue_lengths_when_empty(self, storage: Storage) -> None:
        assert nonzero(await storage.queue_lengths()) == {}

    async def test_worker_load_counts_taken_tasks(self, storage: Storage) -> None:
        worker, other = make_worker("a"), make_worker("a")
        job = await new_job(storage)
        await dispatch(storage, job, *(make_task(job) for _ in range(3)))
        await take_ids(storage, worker, 2)
        await take_ids(storage, other, 1)
        assert nonzero(await storage.worker_load()) == {worker.worker_id: 2, other.worker_id: 1}

    async def test_worker_load_counts_preassigned_tasks(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        await dispatch(storage, job, make_task(job, worker_id=worker.worker_id))
        assert nonzero(await storage.worker_load()) == {worker.worker_id: 1}
        assert await take(storage, worker) is not None
        assert nonzero(await storage.worker_load()) == {worker.worker_id: 1}

    async def test_worker_load_drops_closed_tasks(self, storage: Storage) -> None:
        worker = make_worker("a")
        job = await new_job(storage)
        task = make_task(job)
        job = await dispatch(storage, job, task)
        assert await take(storage, worker) is not None
        await storage.commit(Commit(job, close_tasks={task.id: TaskStatus.DONE}))
        assert (await storage.worker_load()).get(worker.worker_id, 0) == 0

    async def test_worker_load_when_empty(self, storage: Storage) -> None:
        assert nonzero(await storage.worker_load()) == {}

    # -- update_task -----------------------------------------------------------------------------
    async def test_update_task_changes_the_given_fields(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, params={"p": 1})
        await dispatch(storage, job, task)
        updated = await storage.update_task(task.id, progress=0.5, progress_message="half")
        expected = Task.from_dict({**task.to_dict(), "progress": 0.5, "progress_message": "half"})
        assert updated == expected
        assert await storage.get_task(task.id) == expected

    async def test_update_task_of_unknown_id_is_none(self, storage: Storage) -> None:
        assert await storage.update_task(new_id(), progress=0.5) is None

    async def test_update_task_keeps_a_queued_task_queued(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        await storage.update_task(task.id, progress=0.1)
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id
        assert taken.progress == 0.1

    # -- fan-in ----------------------------------------------------------------------------------
    async def test_the_result_that_completes_the_round_queues_the_job(self, storage: Storage) -> None:
        job, tasks = await fan_out(storage, 3)
        answers = [await storage.add_branch_result(job.id, task.id, {"i": i}) for i, task in enumerate(tasks)]
        assert answers == [BranchAnswer.RECORDED, BranchAnswer.RECORDED, BranchAnswer.COMPLETE]
        assert await storage.take_runnable(LONG) == job.id
        assert await storage.take_runnable(SHORT) is None

    async def test_concurrent_branch_results_are_all_counted_and_complete_once(self, storage: Storage) -> None:
        job, tasks = await fan_out(storage, 100)
        answers = await asyncio.gather(
            *(storage.add_branch_result(job.id, task.id, {"i": i}) for i, task in enumerate(tasks))
        )
        assert sorted(answers) == sorted([BranchAnswer.RECORDED] * 99 + [BranchAnswer.COMPLETE])
        results = await storage.branch_results(job.id)
        assert results == {task.id: {"i": i} for i, task in enumerate(tasks)}

    async def test_a_branch_result_added_twice_is_a_duplicate(self, storage: Storage) -> None:
        job, (first, second) = await fan_out(storage, 2)
        assert await storage.add_branch_result(job.id, first.id, {"n": 1}) == BranchAnswer.RECORDED
        assert await storage.add_branch_result(job.id, first.id, {"n": 2}) == BranchAnswer.DUPLICATE
        assert await storage.branch_results(job.id) == {first.id: {"n": 1}}
        assert await storage.add_branch_result(job.id, second.id, {"n": 3}) == BranchAnswer.COMPLETE

    async def test_a_branch_that_is_not_taken_and_open_is_closed(self, storage: Storage) -> None:
        job, (withdrawn, _) = await fan_out(storage, 2)
        job = await storage.commit(Commit(job, close_tasks={withdrawn.id: TaskStatus.WITHDRAWN}))
        queued = make_task(job)
        await dispatch(storage, job, queued)
        for task_id in (withdrawn.id, queued.id, new_id()):
            assert await storage.add_branch_result(job.id, task_id, {}) == BranchAnswer.CLOSED
        assert await storage.branch_results(job.id) == {}
        stored = await storage.get_task(withdrawn.id)
        assert stored is not None
        assert stored.status == TaskStatus.WITHDRAWN

    async def test_add_branch_result_closes_the_task_as_done(self, storage: Storage) -> None:
        worker = make_worker("a")
        job, (answered, other) = await fan_out(storage, 2, worker)
        assert await storage.add_branch_result(job.id, answered.id, {"x": 1}) == BranchAnswer.RECORDED
        stored = await storage.get_task(answered.id)
        assert stored is not None
        assert stored.status == TaskStatus.DONE
        assert (await storage.worker_load()).get(worker.worker_id) == 1
        assert await drain_timers(storage) == {f"timeout:{other.id}"}

    async def test_add_branch_result_puts_its_events_in_the_feed(self, storage: Storage) -> None:
        job, (task,) = await fan_out(storage, 1)
        before = len(await feed_rows(storage))
        answered = Event(EventKind.TASK_RESULT, job.id, None, "start", None, {"task_id": task.id}, 4.0)
        await storage.add_branch_result(job.id, task.id, {}, [answered])
        await storage.add_branch_result(job.id, task.id, {}, [answered])  # a duplicate: nothing
        assert (await feed_rows(storage))[before:] == [[row_of(answered)]]

    async def test_branch_results_round_trip(self, storage: Storage) -> None:
        job, (task,) = await fan_out(storage, 1)
        result = {"status": "success", "data": {"list": [1, 2.5, None], "flag": True}, "task_type": "a"}
        await storage.add_branch_result(job.id, task.id, result)
        assert await storage.branch_results(job.id) == {task.id: result}

    async def test_branch_results_are_per_job(self, storage: Storage) -> None:
        worker = make_worker("a")
        (first, (one,)), (second, (two,)) = await fan_out(storage, 1, worker), await fan_out(storage, 1, worker)
        await storage.add_branch_result(first.id, one.id, {"x": 1})
        assert await storage.add_branch_result(second.id, two.id, {"y": 2}) == BranchAnswer.COMPLETE
        assert await storage.branch_results(first.id) == {one.id: {"x": 1}}

    async def test_branch_results_of_a_job_without_any_is_empty(self, storage: Storage) -> None:
        assert await storage.branch_results(new_id()) == {}

    # -- timers ----------------------------------------------------------------------------------
    async def test_claim_timers_returns_only_due_timers(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {"past": at - 10, "now": at, "future": at + 10})
        assert sorted(await claim(storage, at)) == ["now", "past"]
        assert await storage.next_timer_at() == at + 10

    async def test_claim_timers_returns_earliest_first(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {"second": at - 5, "third": at - 1, "first": at - 10})
        assert await claim(storage, at) == ["first", "second", "third"]

    async def test_claim_timers_returns_each_timer_once(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {"t1": at - 1, "t2": at - 2})
        assert sorted(await claim(storage, at)) == ["t1", "t2"]
        assert await claim(storage, at + 100) == []

    async def test_a_claimed_timer_comes_due_again_after_its_lease_unless_finished(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {"done": at - 2, "dropped": at - 1})
        claims = await storage.claim_timers(at, 10.0)
        assert [c.timer_id for c in claims] == ["done", "dropped"]
        assert await storage.next_timer_at() == at + 10.0
        await storage.finish_timers([c for c in claims if c.timer_id == "done"])
        assert await claim(storage, at + 9.0) == []
        assert await claim(storage, at + 10.0) == ["dropped"]  # its claimer died: someone else has it

    async def test_finishing_a_claim_keeps_a_timer_set_again_since(self, storage: Storage) -> None:
        at = time.time()
        job = await new_job(storage)
        job = await storage.commit(Commit(job, timers={"t": at - 1}))
        claims = await storage.claim_timers(at, LEASE_S)
        await storage.commit(Commit(job, timers={"t": at + 50}))  # moved by a commit meanwhile
        await storage.finish_timers(claims)
        assert await storage.next_timer_at() == at + 50

    async def test_claim_timers_respects_limit(self, storage: Storage) -> None:
        at = time.time()
        await set_timers(storage, {f"t{i}": at - 10 + i for i in range(5)})
        assert await claim(storage, at, limit=2) == ["t0", "t1"]
        assert await claim(storage, at, limit=10) == ["t2", "t3", "t4"]

    async def test_concurrent_claims_get_each_timer_once(self, storage: Storage) -> None:
        at = time.time()
        timers = {f"t{i}": at - i for i in range(50)}
        await set_timers(storage, timers)
        claims = await asyncio.gather(*(claim(storage, at, limit=7) for _ in range(10)))
        claimed = [timer_id for claim in claims for timer_id in claim]
        assert sorted(claimed) == sorted(timers)

    async def test_next_timer_at_is_the_earliest_pending_timer(self, storage: Storage) -> None:
        at = time.time()
        job = await new_job(storage)
        assert await storage.next_timer_at() is None
        job = await storage.commit(Commit(job, timers={"t1": at + 30, "t2": at + 10, "t3": at + 20}))
        assert await storage.next_timer_at() == at + 10
        job = await storage.commit(Commit(job, cancel_timers=["t2"]))
        assert await storage.next_timer_at() == at + 20
        claims = await storage.claim_timers(at + 25, LEASE_S)
        assert [c.timer_id for c in claims] == ["t3"]
        assert await storage.next_timer_at() == at + 30
        await storage.finish_timers(claims)
        await storage.finish_timers(await storage.claim_timers(at + 30, LEASE_S))
        assert await storage.next_timer_at() is None

    # -- workers ---------------------------------------------------------------------------------
    async def test_save_and_get_worker_round_trip(self, storage: Storage) -> None:
        worker = make_worker("a", "b", resources={"gpu": {"vram_gb": 8}}, max_concurrent_tasks=4, extra=[1, None])
        await storage.save_worker(worker)
        assert await storage.get_worker(worker.worker_id) == worker

    async def test_get_worker_of_unknown_id_is_none(self, storage: Storage) -> None:
        assert await storage.get_worker(new_id()) is None

    async def test_save_worker_replaces_the_record(self, storage: Storage) -> None:
        worker = make_worker("a")
        await storage.save_worker(worker)
        worker.info["supported_tasks"] = ["b"]
        worker.expires_at += 60
        await storage.save_worker(worker)
        assert await storage.get_worker(worker.worker_id) == worker
        assert len(await storage.list_workers()) == 1

    async def test_list_workers(self, storage: Storage) -> None:
        workers = [make_worker("a"), make_worker("b")]
        for worker in workers:
            await storage.save_worker(worker)
        listed = await storage.list_workers()
        assert sorted(listed, key=lambda w: w.worker_id) == sorted(workers, key=lambda w: w.worker_id)

    async def test_expire_workers_returns_them_with_unanswered_tasks(self, storage: Storage) -> None:
        worker = make_worker("a", expires_in=60)
        await storage.save_worker(worker)
        job = await new_job(storage)
        answered, running = make_task(job), make_task(job)
        waiting = make_task(job, priority=-1, worker_id=worker.worker_id)
        job = await dispatch(storage, job, answered, running)
        await take_ids(storage, worker, 2)
        await storage.commit(Commit(job, tasks=[waiting], close_tasks={answered.id: TaskStatus.DONE}))
        [(record, task_ids)] = await storage.expire_workers(time.time() + 120)
        assert record == worker
        assert sorted(task_ids) == sorted([running.id, waiting.id])

    async def test_expire_workers_leaves_alive_workers(self, storage: Storage) -> None:
        at = time.time()
        dead, alive = make_worker("a", expires_in=-1), make_worker("a", expires_in=60)
        await storage.save_worker(dead)
        await storage.save_worker(alive)
        expired = await storage.expire_workers(at)
        assert [(record.worker_id, task_ids) for record, task_ids in expired] == [(dead.worker_id, [])]
        assert await storage.get_worker(dead.worker_id) is None
        assert await storage.list_workers() == [alive]

    async def test_expire_workers_claims_each_worker_once(self, storage: Storage) -> None:
        workers = [make_worker("a", expires_in=-1) for _ in range(5)]
        for worker in workers:
            await storage.save_worker(worker)
        claims = await asyncio.gather(*(storage.expire_workers(time.time()) for _ in range(4)))
        claimed = [record.worker_id for claim in claims for record, _ in claim]
        assert sorted(claimed) == sorted(worker.worker_id for worker in workers)
        assert await storage.expire_workers(time.time()) == []

    async def test_an_expired_worker_task_never_taken_is_queued_for_anyone(self, storage: Storage) -> None:
        worker = make_worker("a", expires_in=-1)
        await storage.save_worker(worker)
        job = await new_job(storage)
        task = make_task(job, worker_id=worker.worker_id)
        await dispatch(storage, job, task)
        [(_, task_ids)] = await storage.expire_workers(time.time())
        assert task_ids == [task.id]
        assert (await storage.worker_load()).get(worker.worker_id, 0) == 0
        assert await storage.queue_lengths() == {"a": 1}
        taken = await take(storage, make_worker("a"))
        assert taken is not None
        assert taken.id == task.id
        assert await drain_timers(storage) == {f"timeout:{task.id}"}

    async def test_an_expired_worker_taken_task_gets_a_lost_timer_due_at_once(self, storage: Storage) -> None:
        worker = make_worker("a", expires_in=60)
        await storage.save_worker(worker)
        job = await new_job(storage)
        task = make_task(job)
        await dispatch(storage, job, task)
        assert await take(storage, worker) is not None
        at = time.time() + 120
        [(_, task_ids)] = await storage.expire_workers(at)
        assert task_ids == [task.id]
        claims = await storage.claim_timers(at, LEASE_S)
        assert [c.timer_id for c in claims] == [f"lost:{task.id}"]
        await storage.finish_timers(claims)
        assert await drain_timers(storage) == set()  # its timeout timer is gone
        stored = await storage.get_task(task.id)
        assert stored is not None
        assert stored.status == TaskStatus.ASSIGNED  # the scheduler retries it from the timer

    # -- the history feed ------------------------------------------------------------------------
    async def test_taking_a_task_puts_its_task_taken_event_in_the_feed(self, storage: Storage) -> None:
        job = await new_job(storage)
        task = make_task(job, task_type="resize", state="work", attempt=2)
        await dispatch(storage, job, task)
        worker = make_worker("resize")
        taken = await take(storage, worker)
        assert taken is not None
        assert taken.taken_at is not None
        event = task_taken(job.id, "work", task.id, "resize", worker.worker_id, 2, taken.taken_at)
        [[row]] = await feed_rows(storage)
        assert row[:6] == row_of(event)[:6]
        assert orjson.loads(row[6]) == event.data
        assert row[7] == row_of(event)[7]

    async def test_read_feed_goes_on_after_a_position(self, storage: Storage) -> None:
        jobs = [await storage.create_job(make_job(), run=False, events=[created_event(make_job())]) for _ in range(5)]
        assert len(jobs) == 5
        entries = await storage.read_feed(None, 2)
        assert len(entries) == 2
        rest = await storage.read_feed(entries[-1].position, 10)
        assert len(rest) == 3
        assert await storage.read_feed(rest[-1].position, 10) == []
        every = [entry.position for entry in await storage.read_feed(None, 10)]
        assert every == [entry.position for entry in [*entries, *rest]]

    async def test_the_feed_keeps_what_a_reader_seen_lately_has_not_written(self, storage: Storage) -> None:
        for _ in range(3):
            await storage.create_job(make_job(), run=False, events=[created_event(make_job())])
        first, second, third = await storage.read_feed(None, 10)
        assert await storage.lease_feed("db-1", "writer-1", 30)
        assert await storage.lease_feed("db-2", "writer-2", 30)
        await storage.trim_feed("db-1", third.position)
        assert await storage.feed_length() == 3  # db-2 has written none of them
        await storage.trim_feed("db-2", first.position)
        assert [e.position for e in await storage.read_feed(None, 10)][-2:] == [second.position, third.position]
        await storage.trim_feed("db-2", third.position)
        assert await storage.read_feed(third.position, 10) == []
        assert await storage.feed_length() <= 1  # a backend may keep the last entry written

    async def test_one_writer_at_a_time_holds_a_database_lease(self, storage: Storage) -> None:
        assert await storage.lease_feed("db", "writer-1", 30)
        assert await storage.lease_feed("db", "writer-1", 30)  # kept
        assert not await storage.lease_feed("db", "writer-2", 30)
        assert await storage.lease_feed("other-db", "writer-2", 30)
        assert await storage.lease_feed("db", "writer-1", 0)  # given up
        assert await storage.lease_feed("db", "writer-2", 30)

    async def test_feed_id_names_this_data_set(self, storage: Storage) -> None:
        assert storage.feed_id
        assert storage.feed_id == storage.feed_id
