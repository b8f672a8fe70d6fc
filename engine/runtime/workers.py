"""Workers as the engine sees them: registration, heartbeats, the long poll for a task, a task given
back by a poll that hung up, and progress reports. (Their answers are :mod:`.results`.)"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import JobNotFound, WorkerNotFound
from ..events import task_progress, task_taken, worker_registered
from ..models import Job, Task, TaskStatus, WorkerRecord, now
from ..storage import Commit, TaskPoll
from ..timers import TimerKind
from .dispatch import meets_requirements
from .shared import Runtime


class Workers:
    """Registers workers, keeps them alive and hands them tasks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.storage = runtime.storage
        self.config = runtime.config
        self.events = runtime.committer.events

    @property
    def ttl_s(self) -> float:
        """How long a worker is alive after its last registration or heartbeat."""
        return 2 * self.config.WORKER_HEALTH_CHECK_INTERVAL_SECONDS

    async def register(self, info: dict[str, Any]) -> WorkerRecord:
        worker_id = str(info["worker_id"])
        existing = await self.storage.get_worker(worker_id)
        at = now()
        record = WorkerRecord(worker_id, dict(info), existing.registered_at if existing else at, at, at + self.ttl_s)
        await self.storage.save_worker(record)
        self.runtime.workers_changed()
        self.events.publish(worker_registered(worker_id, record.supported_tasks))
        return record

    async def heartbeat(self, worker_id: str, changes: dict[str, Any]) -> WorkerRecord:
        record = await self.storage.get_worker(worker_id)
        at = now()
        if record is None or not record.alive(at):
            raise WorkerNotFound(worker_id)
        if changes.get("supported_tasks") == []:
            # SDK 1.0b1 advertises no task types while it is full; the record keeps what it registered.
            changes = {k: v for k, v in changes.items() if k != "supported_tasks"}
        record.info.update(changes)
        record.last_seen = at
        record.expires_at = at + self.ttl_s
        await self.storage.save_worker(record)
        if changes:
            self.runtime.workers_changed()
        return record

    async def next_task(self, worker_id: str, timeout_s: float | None = None) -> Task | None:
        """Long poll: the worker's next task, or None after ``timeout_s``."""
        record = await self.storage.get_worker(worker_id)
        if record is None or not record.alive(now()):
            raise WorkerNotFound(worker_id)
        wait_s = self.config.WORKER_POLL_TIMEOUT_SECONDS if timeout_s is None else timeout_s
        poll = TaskPoll(record, wait_s, self.config.WORKER_TIMEOUT_SECONDS, lambda t: meets_requirements(record, t))
        task = await self.storage.take_task(poll)
        if task is not None:  # storage recorded the same event in history's feed with the take
            self.events.publish(
                task_taken(task.job_id, task.state, task.id, task.type, worker_id, task.attempt, task.taken_at or now())
            )
        return task

    async def give_back(self, task: Task) -> None:
        """Queue a task taken by a worker that never received it (its long poll hung up)."""

        async def build(job: Job) -> Commit | None:
            stored = await self.storage.get_task(task.id)
            if (
                stored is None
                or stored.status != TaskStatus.ASSIGNED
                or task.id not in (job.wait or {}).get("task_ids", [])
            ):
                return None
            stored.status, stored.worker_id, stored.taken_at, stored.deadline = TaskStatus.QUEUED, None, None, None
            await self.runtime.assign_workers([stored])
            return Commit(job, tasks=[stored], cancel_timers=[TimerKind.TIMEOUT.of(task.id)])

        with contextlib.suppress(JobNotFound):
            await self.runtime.committer.update_job(task.job_id, build)

    async def record_progress(
        self, worker_id: str | None, job_id: str, task_id: str, progress: float | None, message: str | None
    ) -> None:
        """Store a worker's progress report. ``worker_id`` None (a WebSocket known only by the global
        token, as SDK 1.0b1 connects) accepts it for whichever worker holds the task."""
        task = await self.storage.get_task(task_id)
        if task is None or task.job_id != job_id or (worker_id is not None and task.worker_id != worker_id):
            return
        await self.storage.update_task(task_id, progress=progress, progress_message=message)
        self.events.publish(task_progress(job_id, task.state, task_id, progress, message))
