"""Helpers for in-process engine tests: a started engine, status polling, fake workers, invariants.

Nothing here goes over HTTP: workers are driven through ``engine.register_worker``,
``engine.next_task`` and ``engine.submit_result`` directly. Timeouts are guards only; tests wait
for a status, never for an amount of time.

Typical use::

    async with started_engine(blueprint) as engine:
        job = await engine.create_job("my_blueprint", {"x": 1})
        worker = FakeWorker(engine, "w1", ["echo"])
        await worker.register()
        task = await worker.take()
        await worker.answer(task, data={"y": 2})
        await wait_for_status(engine, job.id, "finished")
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.models import TERMINAL_STATUSES, Job, JobStatus, Task, TaskStatus
from avtomatika.storage import MemoryStorage

#: Settings that keep tests quick: short backoffs, long worker TTL (expiry tests lower it).
FAST_SETTINGS: dict[str, Any] = {
    "RETRY_BACKOFF_BASE_SECONDS": 0.01,
    "RETRY_BACKOFF_MAX_SECONDS": 0.05,
    "WORKER_TIMEOUT_SECONDS": 30.0,
    "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": 30.0,
    "WORKER_POLL_TIMEOUT_SECONDS": 5.0,
    "WATCHER_INTERVAL_SECONDS": 0.1,
    "JOB_MAX_RETRIES": 3,
    "EXECUTOR_CONCURRENCY": 4,
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "text",
}

#: Guard for every wait: long enough never to fire on a healthy run.
GUARD_S = 10.0


def fast_config(**overrides: Any) -> Config:
    return Config(**{**FAST_SETTINGS, **overrides})


@contextlib.asynccontextmanager
async def started_engine(*blueprints: StateMachineBlueprint, **settings: Any) -> AsyncIterator[OrchestratorEngine]:
    """An engine with in-memory storage and fast settings, started without HTTP, stopped afterwards."""
    engine = OrchestratorEngine(MemoryStorage(), fast_config(**settings))
    for blueprint in blueprints:
        engine.register_blueprint(blueprint)
    await engine.start(http=False)
    try:
        yield engine
    finally:
        for worker in [w for w in FakeWorker.running if w.engine is engine]:
            await worker.stop()
        await engine.stop()


async def wait_for(
    check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = GUARD_S, interval_s: float = 0.005
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval_s)


async def wait_for_status(
    engine: OrchestratorEngine, job_id: str, statuses: str | Iterable[str], timeout_s: float = GUARD_S
) -> Job:
    """Poll ``engine.get_job`` until the job has one of ``statuses``; return it."""
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    last: list[Job | None] = [None]

    async def check() -> Job | None:
        job = last[0] = await engine.get_job(job_id)
        return job if job is not None and job.status in wanted else None

    try:
        return await wait_for(check, f"job {job_id} to be {sorted(wanted)}", timeout_s)  # type: ignore[no-any-return]
    except AssertionError:
        job = last[0]
        seen = "missing" if job is None else f"{job.status} in state {job.state!r}, error={job.error!r}"
        raise AssertionError(f"job {job_id} never became {sorted(wanted)}; it is {seen}") from None


async def wait_for_state(engine: OrchestratorEngine, job_id: str, state: str, status: str) -> Job:
    """Wait until the job is in ``state`` with ``status``."""

    async def check() -> Job | None:
        job = await engine.get_job(job_id)
        return job if job is not None and job.state == state and job.status == status else None

    return await wait_for(check, f"job {job_id} to be {status} in {state!r}")  # type: ignore[no-any-return]


async def waiting_tasks(engine: OrchestratorEngine, job_id: str) -> list[Task]:
    """The tasks the job waits on now."""
    job = await engine.get_job(job_id)
    assert job is not None
    return await engine.current_tasks(job)


Reply = dict[str, Any] | Callable[[Task], dict[str, Any] | None]


def success(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": "success", "data": data or {}}


def failure(code: str | None, message: str = "boom") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    return {"status": "failure", "error": error}


class FakeWorker:
    """A worker driven in-process: register, take tasks and answer them like a real one would.

    ``info`` is merged into the registration record (``resources``, ``cost``, ``hot_cache``...).
    ``serve(reply)`` answers every task and ``keep_alive(s)`` heartbeats, in the background, until
    ``stop()`` or the end of the ``started_engine`` block.
    """

    #: Workers with background loops, stopped by ``started_engine`` on exit.
    running: ClassVar[weakref.WeakSet[FakeWorker]] = weakref.WeakSet()

    def __init__(
        self, engine: OrchestratorEngine, worker_id: str = "w1", tasks: Iterable[str] = ("echo",), **info: Any
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.info = {"worker_id": worker_id, "supported_tasks": list(tasks), **info}
        self.taken: list[Task] = []
        self.answers: list[str] = []
        self._serving: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None

    async def register(self) -> FakeWorker:
        await self.engine.register_worker(self.info)
        return self

    async def take(self, timeout_s: float = GUARD_S) -> Task:
        """The next task for this worker; fails the test if none comes within ``timeout_s``."""
        task = await self.engine.next_task(self.worker_id, timeout_s)
        assert task is not None, f"worker {self.worker_id} got no task within {timeout_s} s"
        self.taken.append(task)
        return task

    async def poll(self, timeout_s: float = 0.05) -> Task | None:
        """The next task, or None: for checking that a worker does *not* get one."""
        task = await self.engine.next_task(self.worker_id, timeout_s)
        if task is not None:
            self.taken.append(task)
        return task

    async def answer(self, task: Task, result: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Submit ``result`` (``success(data)`` by default) for ``task`` as this worker."""
        if result is None:
            result = success(kwargs.get("data"))
        ack = await self.engine.submit_result(task.job_id, task.id, self.worker_id, result)
        self.answers.append(ack)
        return ack

    async def run_one(self, result: Reply | None = None, timeout_s: float = GUARD_S) -> Task:
        """Take one task and answer it (``result`` may be a function of the task)."""
        task = await self.take(timeout_s)
        reply = result(task) if callable(result) else result
        await self.answer(task, reply)
        return task

    def serve(self, result: Reply | None = None) -> FakeWorker:
        """Answer every task in the background; a ``result`` function returning None skips the answer."""

        async def loop() -> None:
            while True:
                task = await self.engine.next_task(self.worker_id, 0.5)
                if task is None:
                    continue
                self.taken.append(task)
                reply = result(task) if callable(result) else (result or success())
                if reply is not None:
                    self.answers.append(await self.engine.submit_result(task.job_id, task.id, self.worker_id, reply))

        self._serving = asyncio.get_running_loop().create_task(loop(), name=f"fake-worker-{self.worker_id}")
        FakeWorker.running.add(self)
        return self

    def keep_alive(self, every_s: float) -> FakeWorker:
        """Heartbeat in the background every ``every_s`` seconds."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(every_s)
                await self.engine.heartbeat(self.worker_id, {})

        self._beating = asyncio.get_running_loop().create_task(loop(), name=f"fake-heartbeat-{self.worker_id}")
        FakeWorker.running.add(self)
        return self

    async def stop(self) -> None:
        for task in (self._serving, self._beating):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._serving = self._beating = None
        FakeWorker.running.discard(self)

    async def __aenter__(self) -> FakeWorker:
        return await self.register()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def assert_no_silent_stall(engine: OrchestratorEngine) -> None:
    """Every job is terminal, runnable, or waiting on something that will wake it.

    Runnable: queued to be stepped, or being stepped. Waiting on tasks: each open task is queued
    (to a live worker's inbox or its type's queue), assigned with a timeout timer, or scheduled for
    a retry with a timer. Waiting for a human: it names the decisions. Waiting for a sub-job: the
    child exists. Awaiting a retry: a timer is set. Reads MemoryStorage's and the runner's
    internals directly (test-only).
    """
    storage = engine.storage
    assert isinstance(storage, MemoryStorage)
    timers: dict[str, float] = storage._timers
    queued = set(storage._runnable)
    problems = []
    for job in await engine.list_jobs(limit=100_000):
        if job.status in TERMINAL_STATUSES:
            continue
        if job.status in (JobStatus.PENDING, JobStatus.RUNNING):
            if job.id not in queued and job.id not in engine.runner._stepping:
                problems.append(f"job {job.id} ({job.status} in {job.state!r}) is runnable but nobody will step it")
            continue
        wait = job.wait or {}
        kind = wait.get("kind")
        where = f"job {job.id} ({job.status} in {job.state!r}, wait={wait})"
        if job.status == JobStatus.WAITING_FOR_HUMAN:
            if kind != "human" or not wait.get("transitions"):
                problems.append(f"{where}: waits for a human without decisions")
        elif job.status == JobStatus.WAITING_FOR_SUB_JOB:
            if kind != "sub_job" or await engine.get_job(wait.get("child_job_id") or "") is None:
                problems.append(f"{where}: waits for a sub-job that does not exist")
        elif job.status == JobStatus.AWAITING_RETRY and kind == "retry":
            if f"retry_job:{job.id}" not in timers:
                problems.append(f"{where}: awaits a retry without a timer")
        elif kind == "tasks":
            problems += [f"{where}: {p}" for p in await _task_problems(engine, wait, timers)]
        else:
            problems.append(f"{where}: waits on nothing")
    assert not problems, "\n".join(problems)


async def _task_problems(engine: OrchestratorEngine, wait: dict[str, Any], timers: dict[str, float]) -> list[str]:
    problems = []
    open_tasks = 0
    for task_id in wait.get("task_ids", []):
        task = await engine.storage.get_task(task_id)
        if task is None:
            problems.append(f"task {task_id} does not exist")
            continue
        if task.status == TaskStatus.DONE:
            continue
        open_tasks += 1
        if task.status == TaskStatus.QUEUED and task.worker_id:
            worker = await engine.storage.get_worker(task.worker_id)
            if worker is None:
                problems.append(f"task {task_id} is in the inbox of a worker that is gone")
        elif task.status == TaskStatus.ASSIGNED and f"timeout:{task_id}" not in timers:
            problems.append(f"task {task_id} is assigned without a timeout")
        elif task.status == TaskStatus.RETRY_SCHEDULED and f"retry_task:{task_id}" not in timers:
            problems.append(f"task {task_id} awaits a retry without a timer")
        elif task.status == TaskStatus.WITHDRAWN:
            problems.append(f"task {task_id} is withdrawn but still waited on")
    if not open_tasks:
        problems.append("every task is answered but the job still waits")
    return problems
