"""Request bodies and response views of the HTTP API, as pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import Job, Task, WorkerRecord

#: Field names of secrets a worker may send (its token...), never stored nor shown; also as a
#: suffix (``worker_token``, ``db_password``), but not as a mere substring (``max_tokens`` is kept).
_SECRET_NAMES = frozenset(
    {"token", "secret", "password", "passwd", "api_key", "apikey", "credential", "credentials", "authorization"}
)


def is_secret(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return name in _SECRET_NAMES or any(name.endswith("_" + secret) for secret in _SECRET_NAMES)


def without_secrets(value: Any) -> Any:
    """``value`` with every secret-looking key removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not is_secret(k)}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


class _WorkerFields(BaseModel):
    """The worker record fields the engine reads, typed; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")
    worker_type: str | None = None
    max_concurrent_tasks: int | None = Field(default=None, ge=1)
    resources: dict[str, Any] | None = None
    installed_models: list[Any] | None = None
    cost: float | None = None
    cost_per_second: float | None = None
    hot_cache: list[str] | None = None
    load: float | None = None
    status: str | None = None
    capabilities: dict[str, Any] | None = None


class WorkerRegistration(_WorkerFields):
    """A worker's record, as registered."""

    worker_id: str = Field(min_length=1, max_length=200)
    supported_tasks: list[str] = Field(default_factory=list, max_length=1000)


class WorkerHeartbeat(_WorkerFields):
    """Changes a heartbeat merges into the worker's record (every field optional)."""

    worker_id: str | None = Field(default=None, min_length=1, max_length=200)
    supported_tasks: list[str] | None = Field(default=None, max_length=1000)


class ResultError(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str | None = Field(default=None, max_length=100)
    message: str | None = Field(default=None, max_length=10_000)


class TaskOutcome(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] | None = None
    error: ResultError | None = None


class TaskResult(BaseModel):
    job_id: str = Field(min_length=1, max_length=200)
    task_id: str = Field(min_length=1, max_length=200)
    worker_id: str = Field(min_length=1, max_length=200)
    result: TaskOutcome


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] | None = None


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_state: str | None = Field(default=None, min_length=1)


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class ApprovalRequest(BaseModel):
    decision: str = Field(min_length=1, max_length=200)


def iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else None


def task_view(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "type": task.type,
        "params": task.params,
        "status": task.status,
        "worker_id": task.worker_id,
        "attempt": task.attempt,
        "priority": task.priority,
        "progress": task.progress,
        "progress_message": task.progress_message,
        "queued_at": iso(task.queued_at),
        "taken_at": iso(task.taken_at),
        "deadline": iso(task.deadline),
    }


def job_view(job: Job, tasks: list[Task]) -> dict[str, Any]:
    """A job as clients see it: never tokens or request headers."""
    view: dict[str, Any] = {
        "id": job.id,
        "blueprint_name": job.blueprint,
        "status": job.status,
        "current_state": job.state,
        "initial_data": job.initial_data,
        "state_history": job.state_history,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "error_message": job.error,
        "retry_count": job.retry_count,
        "parent_job_id": job.parent_job_id,
        "waiting_for": (job.wait or {}).get("kind") if not job.is_terminal else None,
        "task": task_view(tasks[0]) if len(tasks) == 1 else None,
        "tasks": [task_view(t) for t in tasks] if len(tasks) > 1 else [],
    }
    if job.wait and job.wait.get("kind") == "human":
        view["approval"] = {"message": job.wait.get("message"), "choices": sorted(job.wait.get("transitions", {}))}
    return view


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "blueprint_name": job.blueprint,
        "status": job.status,
        "current_state": job.state,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "error_message": job.error,
        "retry_count": job.retry_count,
    }


def worker_view(record: WorkerRecord, load: int, at: float) -> dict[str, Any]:
    """A worker's record without anything secret it may have sent."""
    info = without_secrets(record.info)
    return {
        **info,
        "worker_id": record.worker_id,
        "alive": record.alive(at),
        "current_tasks": load,
        "registered_at": iso(record.registered_at),
        "last_seen": iso(record.last_seen),
        "expires_at": iso(record.expires_at),
    }
