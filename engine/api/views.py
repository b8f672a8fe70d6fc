"""How the HTTP API shows the engine's records: jobs, tasks, workers, breakpoints, timeline lines,
their times in ISO 8601, and never a secret a worker sent. The studio's JSON twins show them alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..models import Breakpoint, Job, Task, WorkerRecord
from ..reads import JobRow, Line
from .payloads import BreakpointView, WorkerView

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


_SECONDS: dict[int, str] = {}
_MAX_SECONDS = 4096


def iso(timestamp: float | None) -> str | None:
    """``datetime.fromtimestamp(timestamp, UTC).isoformat()``, which is slow, its seconds remembered.

    The microseconds are rounded as ``datetime`` rounds them (half to even); a job view has up to
    60 of these.
    """
    if timestamp is None:
        return None
    if timestamp < 0:
        return datetime.fromtimestamp(timestamp, UTC).isoformat()
    second = int(timestamp)
    micro = round((timestamp - second) * 1e6)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= _MAX_SECONDS:
            _SECONDS.clear()
        prefix = _SECONDS[second] = datetime.fromtimestamp(second, UTC).isoformat()[:19]
    return f"{prefix}.{micro:06d}+00:00" if micro else f"{prefix}+00:00"


def breakpoint_view(breakpoint: Breakpoint) -> BreakpointView:
    """A breakpoint as the API (and the studio's JSON twins) show it."""
    return BreakpointView(
        id=breakpoint.id,
        blueprint=breakpoint.blueprint,
        state=breakpoint.state,
        job_id=breakpoint.job_id,
        step=breakpoint.once,
        set_by=breakpoint.actor,
        created_at=iso(breakpoint.created_at),
    )


# The views read on every poll are built as dicts directly, in the shape of their model (tests check
# that validating a view with its model gives it back unchanged): pydantic there was most of a poll.


def task_view(task: Task) -> dict[str, Any]:
    """A task as clients see it (:class:`TaskView`)."""
    return {
        "task_id": task.id,
        "type": task.type,
        "params": task.params,
        "status": str(task.status),
        "worker_id": task.worker_id,
        "attempt": task.attempt,
        "priority": float(task.priority),
        "progress": task.progress,
        "progress_message": task.progress_message,
        "queued_at": iso(task.queued_at),
        "taken_at": iso(task.taken_at),
        "deadline": iso(task.deadline),
    }


def job_view(job: Job, tasks: list[Task], task_count: int | None = None) -> dict[str, Any]:
    """A job as clients see it (:class:`JobView`): never tokens or request headers.

    ``tasks`` are those it waits on, or the first ones of them when ``task_count`` says there are more.
    """
    wait = job.wait or {}
    count = len(tasks) if task_count is None else task_count
    view = {
        "id": job.id,
        "blueprint_name": job.blueprint,
        "status": str(job.status),
        "current_state": job.state,
        "initial_data": job.initial_data,
        "state_history": job.state_history,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "error_message": job.error,
        "retry_count": job.retry_count,
        "parent_job_id": job.parent_job_id,
        "waiting_for": wait.get("kind") if not job.is_terminal else None,
        "task": task_view(tasks[0]) if count == 1 and tasks else None,
        "tasks": [task_view(t) for t in tasks] if count > 1 else [],
        "task_count": count,
    }
    if wait.get("kind") == "human":
        view["approval"] = {"message": wait.get("message"), "choices": sorted(wait.get("transitions", {}))}
    return view


def job_summary(job: Job | JobRow) -> dict[str, Any]:
    """A job in a list (:class:`JobSummary`): a live job, or a row of a jobs page (same field names)."""
    return {
        "id": job.id,
        "blueprint_name": job.blueprint,
        "status": str(job.status),
        "current_state": job.state,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "error_message": job.error,
        "retry_count": job.retry_count,
    }


def job_row_view(row: JobRow) -> dict[str, Any]:
    """A jobs page's row as the studio's JSON twins show it: its summary, when it ended, how long it ran."""
    return {**job_summary(row), "finished_at": iso(row.finished_at), "duration_s": round(row.duration_s, 3)}


def worker_view(record: WorkerRecord, load: int, at: float) -> dict[str, Any]:
    """A worker's record without anything secret it may have sent (:class:`WorkerView`)."""
    info = without_secrets(record.info)
    return WorkerView.model_validate(
        {
            **info,
            "worker_id": record.worker_id,
            "alive": record.alive(at),
            "current_tasks": load,
            "registered_at": iso(record.registered_at),
            "last_seen": iso(record.last_seen),
            "expires_at": iso(record.expires_at),
        }
    ).model_dump(mode="json")


def worker_summary(record: WorkerRecord, at: float) -> dict[str, Any]:
    """A worker as a client among others sees it (:class:`WorkerSummary`)."""
    worker_type, status = record.info.get("worker_type"), record.info.get("status")
    return {
        "worker_id": record.worker_id,
        "worker_type": worker_type if isinstance(worker_type, str) else None,
        "supported_tasks": list(record.supported_tasks),
        "alive": record.alive(at),
        "status": status if isinstance(status, str) else None,
    }


def line_json(line: Line) -> dict[str, Any]:
    """A timeline line as the studio's JSON twins show it (its time in ISO 8601)."""
    return {
        "seq": line.seq,
        "at": iso(line.at),
        "kind": line.kind,
        "state": line.state,
        "status": line.status,
        "worker_id": line.worker_id,
        "duration_ms": line.duration_ms,
        "data": line.data,
    }
