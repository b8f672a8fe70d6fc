"""Tasks answered by hand: the step debugger takes a task as a worker would and posts its result.

The debugger registers one worker of its own (:data:`MANUAL_WORKER`), takes the chosen task through
the engine's queue (``engine.next_task``, so the task is assigned and its lease kept as for any
worker) and answers it with ``engine.submit_result``: the engine handles the result exactly as it
would a real worker's (transitions, fan-in, retries, quarantine).
"""

from __future__ import annotations

from typing import Any

from ..engine import OrchestratorEngine
from ..errors import DebuggerError
from ..models import WAITING_ON_TASKS, Job, JobStatus, Task, TaskStatus

#: The worker id under which tasks are answered by hand.
MANUAL_WORKER = "notebook-step-debugger"
#: The error code of a failure that is retried (``JOB_MAX_RETRIES`` times, then ``failure`` or quarantine).
TRANSIENT = "TRANSIENT_ERROR"


def result_of(
    status: str, data: dict[str, Any] | None = None, error_code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """A worker's result: ``{"status", "data"?, "error"?: {"code", "message"}}``."""
    result: dict[str, Any] = {"status": status}
    if data is not None:
        result["data"] = data
    if status == "failure" or error_code:
        result["error"] = {"code": error_code or TRANSIENT, "message": message or "answered by hand"}
    return result


class HandAnswers:
    """Answers a job's tasks in ``engine`` as the debugger's own worker."""

    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine

    async def open_tasks(self, job: Job) -> list[Task]:
        """The tasks ``job`` waits on that are not answered yet, in dispatch order (a coroutine: await it)."""
        if job.status not in WAITING_ON_TASKS and job.status != JobStatus.AWAITING_RETRY:
            return []
        tasks = await self.engine.current_tasks(job)
        return [t for t in tasks if t.status not in (TaskStatus.DONE, TaskStatus.WITHDRAWN)]

    async def choose(self, job: Job, task_id: str | None) -> Task:
        """The open task ``task_id`` (the first open one when None)."""
        tasks = await self.open_tasks(job)
        if not tasks:
            raise DebuggerError(f"the job is {job.status.replace('_', ' ')} and waits for no task to answer")
        if task_id is None:
            return tasks[0]
        found = next((t for t in tasks if t.id == task_id or t.id.startswith(task_id)), None)
        if found is None:
            listed = ", ".join(f"{t.id[:8]} ({t.type})" for t in tasks)
            raise DebuggerError(f"the job waits for no task {task_id!r}; open: {listed}")
        return found

    async def answer(self, job: Job, task: Task, result: dict[str, Any]) -> tuple[Task, str]:
        """Take ``task`` and submit ``result`` for it; returns the task taken and the engine's answer."""
        try:
            taken = await self._take(task)
            ack = await self.engine.submit_result(job.id, taken.id, MANUAL_WORKER, result)
        finally:
            await self._register([])  # real workers get the next tasks
        return taken, ack

    async def exhaust(self, job: Job, task: Task, message: str) -> int:
        """Fail ``task`` with a transient error until its retries are spent; returns how many answers it took.

        Each answer is a real ``TRANSIENT_ERROR`` result: the engine schedules the retry (dispatched at
        once here), and after ``JOB_MAX_RETRIES`` of them follows the task's ``failure`` transition or,
        without one (or for a fan-out branch), quarantines the job.
        """
        result = result_of("failure", error_code=TRANSIENT, message=message)
        answers, current = 0, task
        for _ in range(self.engine.config.JOB_MAX_RETRIES + 2):
            slot = (job.wait or {}).get("task_ids", []).index(current.id)
            taken, _ack = await self.answer(job, current, result)
            answers += 1
            job = await self._job(job.id)
            retry = await self._retry_of(job, taken, slot)
            if retry is None:
                return answers
            current = retry
        raise DebuggerError(f"task {task.type!r} was still retried after {answers} failures")

    async def _retry_of(self, job: Job, failed: Task, slot: int) -> Task | None:
        """The task that replaced ``failed`` in the job's wait (its next attempt), if the job still waits."""
        if job.status not in WAITING_ON_TASKS and job.status != JobStatus.AWAITING_RETRY:
            return None
        ids = (job.wait or {}).get("task_ids", [])
        if slot >= len(ids) or ids[slot] == failed.id:
            return None
        retry = await self.engine.storage.get_task(ids[slot])
        return retry if retry is not None and retry.attempt > failed.attempt else None

    async def _job(self, job_id: str) -> Job:
        job = await self.engine.get_job(job_id)
        if job is None:
            raise DebuggerError(f"job {job_id} is gone from the engine")
        return job

    async def _register(self, task_types: list[str], task: Task | None = None) -> None:
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
        await self._register([task.type], task)
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
