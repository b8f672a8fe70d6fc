"""The storage contract on :class:`MemoryStorage`, and what only the in-memory backend promises."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from support.storage_contract import StorageContract, create_jobs, dispatch, make_task, make_worker, take

from avtomatika.models import Job, JobStatus, Task, TaskStatus, WorkerRecord, new_id, pack, unpack
from avtomatika.storage import Commit, JobFilter, MemoryStorage
from avtomatika.storage.memory import (
    _ITS_TASKS,
    _JOB_HEAD,
    _JOB_TAIL,
    _TASK_TAIL,
    _Label,
    _StoredJob,
    _StoredTask,
    _TaskQueue,
)


@pytest.fixture
async def memory() -> AsyncIterator[MemoryStorage]:
    storage = MemoryStorage(max_terminal_jobs=2)
    await storage.connect()
    yield storage
    await storage.close()


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[MemoryStorage]:
        storage = MemoryStorage()
        await storage.connect()
        yield storage
        await storage.close()


async def finish(storage: MemoryStorage, job: Job, status: str = JobStatus.FINISHED) -> Job:
    job.status = status
    return await storage.commit(Commit(job))


async def test_max_terminal_jobs_forgets_the_oldest_terminal_jobs(memory: MemoryStorage) -> None:
    jobs = await create_jobs(memory, {}, {}, {})
    for job in jobs:
        await finish(memory, job)
    assert await memory.get_job(jobs[0].id) is None
    assert [job.id for job in await memory.list_jobs(JobFilter())] == [jobs[2].id, jobs[1].id]
    assert sum((await memory.count_jobs()).values()) == 2


async def test_max_terminal_jobs_forgets_their_tasks_and_branch_results(memory: MemoryStorage) -> None:
    oldest, *others = await create_jobs(memory, {}, {}, {})
    task = make_task(oldest)
    oldest = await memory.commit(Commit(oldest, tasks=[task], fan_in=2))
    assert await take(memory, make_worker("a")) is not None
    await memory.add_branch_result(oldest.id, task.id, {"x": 1})
    assert await memory.branch_results(oldest.id) == {task.id: {"x": 1}}
    for job in [oldest, *others]:
        await finish(memory, (await memory.get_job(job.id)) or job)
    assert await memory.get_task(task.id) is None
    assert await memory.branch_results(oldest.id) == {}
    assert await memory.update_task(task.id, progress=1.0) is None


async def test_max_terminal_jobs_keeps_every_live_job(memory: MemoryStorage) -> None:
    live = await create_jobs(memory, *({} for _ in range(5)))
    finished = await create_jobs(memory, {}, {}, {})
    for job in finished:
        await finish(memory, job)
    assert all([await memory.get_job(job.id) is not None for job in live])
    assert await memory.get_job(finished[0].id) is None


async def test_quarantined_and_waiting_jobs_are_never_forgotten(memory: MemoryStorage) -> None:
    quarantined, waiting, *ended = await create_jobs(memory, *({} for _ in range(6)))
    await finish(memory, quarantined, JobStatus.QUARANTINED)
    await finish(memory, waiting, JobStatus.WAITING_FOR_HUMAN)
    for job in ended:
        await finish(memory, job, JobStatus.CANCELLED)
    assert await memory.get_job(quarantined.id) is not None
    assert await memory.get_job(waiting.id) is not None
    assert [await memory.get_job(job.id) is not None for job in ended] == [False, False, True, True]


async def test_a_job_that_leaves_a_terminal_status_is_not_forgotten(memory: MemoryStorage) -> None:
    retried, first, second = await create_jobs(memory, {}, {}, {})
    retried = await finish(memory, retried, JobStatus.FAILED)
    retried.status = JobStatus.PENDING
    await memory.commit(Commit(retried))
    await finish(memory, first)
    await finish(memory, second)
    assert await memory.get_job(retried.id) is not None
    assert await memory.get_job(first.id) is not None


async def test_a_job_terminal_again_counts_as_the_newest_terminal_job(memory: MemoryStorage) -> None:
    again, first, second = await create_jobs(memory, {}, {}, {})
    again = await finish(memory, again, JobStatus.FAILED)
    again.status = JobStatus.PENDING
    again = await memory.commit(Commit(again))
    await finish(memory, first)
    await finish(memory, again, JobStatus.FAILED)
    await finish(memory, second)
    assert await memory.get_job(first.id) is None
    assert await memory.get_job(again.id) is not None
    assert await memory.get_job(second.id) is not None


async def test_a_forgotten_job_queued_task_is_not_handed_out(memory: MemoryStorage) -> None:
    job, *others = await create_jobs(memory, {}, {}, {})
    task = make_task(job)
    job = await dispatch(memory, job, task)
    for each in [job, *others]:
        await finish(memory, each)
    assert await take(memory, make_worker("a")) is None
    assert (await memory.queue_lengths()).get("a", 0) == 0


def test_packed_records_are_their_values_after_the_id_without_trailing_defaults_and_read_back_the_same():
    task = Task(id="t", job_id="j", type="echo", queued_at=5.0)
    assert orjson.loads(pack(task)) == ["j", "echo", {}, {}, "", 5.0]
    assert unpack(Task, pack(task), "t") == task
    later = Task(id="t", job_id="j", type="echo", queued_at=5.0, priority=2.0, aggregate_into="all")
    assert orjson.loads(pack(later)) == ["j", "echo", {}, {}, "", 5.0, 1, 2.0, None, "default", None, None, "all"]
    assert unpack(Task, pack(later), "t") == later
    job = Job(id="j", blueprint="b", state="s", initial_data={"n": 1}, wait={"kind": "tasks"}, version=3)
    assert unpack(Job, pack(job), "j") == job
    worker = WorkerRecord("w", {"supported_tasks": ["echo"]}, expires_at=9.5)
    assert unpack(WorkerRecord, pack(worker), "w") == worker
    assert orjson.loads(pack(worker, head=1, tail=3)) == [{"supported_tasks": ["echo"]}]  # one field
    assert orjson.loads(pack(worker, head=1, tail=4)) == []


def test_a_job_is_packed_without_what_its_stored_form_keeps_beside_it():
    names = [f.name for f in dataclasses.fields(Job)]
    assert names[:_JOB_HEAD] == ["id", "blueprint", "state", "status", "client"]
    assert names[len(names) - _JOB_TAIL :] == ["version"]
    job = Job(id="j", blueprint="b", state="s", status="running", client="c", created_at=1.0, updated_at=2.0, version=3)
    packed = pack(job, head=_JOB_HEAD, tail=_JOB_TAIL)
    assert orjson.loads(packed) == [{}, 1.0, 2.0]  # the defaults after updated_at left out, and version
    assert _StoredJob(packed, 3, _Label("b", "running", "s", "c")).job("j") == job
    assert orjson.loads(pack(WorkerRecord("w", registered_at=1.0, last_seen=2.0))) == [{}, 1.0, 2.0]
    assert orjson.loads(pack(WorkerRecord("w", registered_at=0.0, last_seen=0.0))) == [{}, 0.0, 0.0]


async def test_a_task_is_packed_once_and_taking_and_closing_it_change_only_where_it_is(memory: MemoryStorage) -> None:
    names = [f.name for f in dataclasses.fields(Task)]
    assert names[len(names) - _TASK_TAIL :] == [f.name for f in dataclasses.fields(_StoredTask)][1:]
    (job,) = await create_jobs(memory, {})
    task = make_task(job)
    job = await dispatch(memory, job, task)
    packed = memory._tasks[task.id]
    assert isinstance(packed, bytes)  # queued for anyone: the record alone
    taken = await take(memory, make_worker("a"))
    assert taken is not None
    stored = memory._tasks[task.id]
    assert stored == _StoredTask(packed, TaskStatus.ASSIGNED, taken.worker_id, taken.taken_at, taken.deadline)
    assert await memory.get_task(task.id) == taken
    await memory.add_branch_result(job.id, task.id, {"status": "success"})
    assert memory._tasks[task.id] == dataclasses.replace(stored, status=TaskStatus.DONE)
    assert await memory.get_task(task.id) == dataclasses.replace(taken, status=TaskStatus.DONE)


def test_a_task_queue_pops_by_priority_then_arrival_and_keeps_what_it_passes_over() -> None:
    queue = _TaskQueue()
    for priority, task_id in [(0, "a0"), (5, "b5"), (0, "c0"), (-1.5, "d"), (5, "e5")]:
        queue.push(priority, task_id)
    assert list(queue) == ["b5", "e5", "a0", "c0", "d"]
    tasks = {task_id: Task(id=task_id, job_id="j", type="t") for task_id in list(queue)}

    # b5 is stale (dropped), e5 is passed over (kept in place), a0 is taken.
    verdicts: dict[str, bool] = {"b5": True, "e5": False}
    assert queue.pop_first(lambda task_id: verdicts.get(task_id, tasks[task_id])) is tasks["a0"]
    assert list(queue) == ["e5", "c0", "d"]

    queue.put_back(0, "a0")  # back at the head of its priority
    assert list(queue) == ["e5", "a0", "c0", "d"]
    assert queue.pop_first(lambda task_id: True) is None  # every entry stale: all dropped
    assert not queue
    assert list(queue) == []


def test_new_ids_are_distinct_version_4_uuids_in_their_usual_text() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_stored_job_keeps_its_only_task_id_alone_and_more_in_a_tuple():
    stored = _StoredJob(b"[]", 1, _Label("b", "pending", "s", None))
    assert stored.tasks() == ()
    stored.add_tasks(("t1",))
    assert (stored.task_ids, stored.tasks()) == ("t1", ("t1",))
    stored.add_tasks(("t2", "t3"))
    assert stored.tasks() == ("t1", "t2", "t3")
    fan_out = _StoredJob(b"[]", 1, _Label("b", "pending", "s", None))
    fan_out.add_tasks(("a", "b"))
    assert fan_out.tasks() == ("a", "b")


async def test_a_wait_on_every_task_the_job_dispatched_is_packed_as_a_mark_and_read_back_whole(
    memory: MemoryStorage,
) -> None:
    (job,) = await create_jobs(memory, {})
    first = make_task(job)
    job.status, job.wait = JobStatus.WAITING_FOR_WORKER, {"kind": "tasks", "task_ids": [first.id]}
    job = await dispatch(memory, job, first)
    assert orjson.loads(memory._jobs[job.id].packed)[-1] == _ITS_TASKS  # its task id is held beside it
    assert job.wait == {"kind": "tasks", "task_ids": [first.id]}  # the caller's job as it was committed
    assert (await memory.get_job(job.id)) == job
    retry = make_task(job)  # a second attempt: the wait names one of the two tasks the job dispatched
    job.wait = {"kind": "tasks", "task_ids": [retry.id]}
    job = await memory.commit(Commit(job, tasks=[retry], close_tasks={first.id: TaskStatus.WITHDRAWN}))
    assert orjson.loads(memory._jobs[job.id].packed)[-1] == {"kind": "tasks", "task_ids": [retry.id]}
    assert (await memory.get_job(job.id)).wait == {"kind": "tasks", "task_ids": [retry.id]}
    more = {"kind": "tasks", "task_ids": [first.id, retry.id], "condition": "x > 1"}  # more than the tasks
    job.wait = dict(more)
    job = await memory.commit(Commit(job))
    assert (await memory.get_job(job.id)).wait == more


async def test_a_commit_whose_job_cannot_be_packed_notes_none_of_its_tasks(memory: MemoryStorage) -> None:
    (job,) = await create_jobs(memory, {})
    first = make_task(job)
    job.status, job.wait = JobStatus.WAITING_FOR_WORKER, {"kind": "tasks", "task_ids": [first.id]}
    job = await dispatch(memory, job, first)
    kept = await memory.get_job(job.id)
    job.state_history = {"not JSON": object()}
    with pytest.raises(TypeError):
        await memory.commit(Commit(job, tasks=[make_task(job)]))
    assert memory._jobs[job.id].tasks() == (first.id,)
    assert await memory.get_job(job.id) == kept


async def test_jobs_alike_share_one_label_and_are_counted_by_it(memory: MemoryStorage) -> None:
    first, second, other = await create_jobs(memory, {"client": "c"}, {"client": "c"}, {"client": "d"})
    stored = [memory._jobs[job.id] for job in (first, second, other)]
    assert stored[0].label is stored[1].label
    assert stored[2].label == _Label("bp", "pending", "start", "d")
    assert await memory.count_jobs() == {("bp", "pending", "start"): 3}
    assert await memory.count_jobs("c") == {("bp", "pending", "start"): 2}
    await finish(memory, first)
    assert memory._jobs[first.id].label == _Label("bp", "finished", "start", "c")
    assert await memory.count_jobs("c") == {("bp", "pending", "start"): 1, ("bp", "finished", "start"): 1}
