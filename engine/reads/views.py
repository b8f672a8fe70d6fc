"""What the reader returns beside jobs and timelines: a job's detail, counts, workers and their queues."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import Job, JobStatus, Task, WorkerRecord
from .signature import ErrorSignature
from .timeline import Timeline

#: Jobs per (blueprint, status, state).
JobCounts = dict[tuple[str, str, str], int]
#: Jobs per state and status: ``{blueprint: {state: {status: n}}}``.
Counts = dict[str, dict[str, dict[str, int]]]


@dataclass(slots=True)
class JobDetail:
    """Everything known of one job: the live job (or what history knows of it), its current tasks and
    its timeline."""

    job: Job
    tasks: list[Task]
    timeline: Timeline | None
    #: True when the engine no longer keeps the job and all of it comes from history.
    from_history: bool = False
    #: Events not yet in history when the timeline was read: it may miss that many recent lines.
    history_pending: int = 0
    #: The blueprint version the job was created on (history's row), if known.
    blueprint_version: str | None = None

    @property
    def cause(self) -> str | None:
        """The error that stopped the job before an operator failed or cancelled it (its root cause)."""
        return self._ending_says("cause")

    @property
    def ran_s(self) -> float:
        """How long it ran: until it ended (a lost job: until the last thing history saw of it)."""
        job, end = self.job, self.job.updated_at
        lines = self.timeline.lines if self.timeline is not None else []
        if job.status == JobStatus.LOST and len(lines) > 1:
            end = lines[-2].at
        return max(end - job.created_at, 0.0)

    @property
    def reason(self) -> str | None:
        """The reason an operator gave when ending it, without its root cause."""
        return self._ending_says("reason")

    def _ending_says(self, key: str) -> str | None:
        """What the job's ending line recorded under ``key``, if anything."""
        ending = self.timeline.ending if self.timeline is not None else None
        value = ending.data.get(key) if ending is not None else None
        return str(value) if value else None

    @property
    def rerun_of(self) -> dict[str, Any] | None:
        """For a rerun: its origin (``job_id``, ``state``, ``visit``) and ``edits``, what differs from
        the origin's data there (``{"initial_data": changes, "state_history": changes}``)."""
        first = self.timeline.lines[0] if self.timeline is not None and self.timeline.lines else None
        origin = first.data.get("rerun_of") if first is not None and first.kind == "job_created" else None
        if not isinstance(origin, dict):
            return None
        edits = first.data.get("edits") if first is not None else None
        return {**origin, "edits": edits if isinstance(edits, dict) else {}}

    @property
    def reruns(self) -> list[dict[str, Any]]:
        """The jobs started as reruns of this one: ``rerun_job_id``, ``state``, ``actor``, ``at``."""
        lines = self.timeline.lines if self.timeline is not None else []
        return [{**line.data, "at": line.at} for line in lines if line.kind == "job_rerun"]


@dataclass(frozen=True, slots=True)
class Signed:
    """A quarantined job and its error signature."""

    job: Job
    signature: ErrorSignature


@dataclass(slots=True)
class WorkerView:
    """A worker, what it is running (taken tasks) and what waits in its inbox (given to it, not taken)."""

    record: WorkerRecord
    alive: bool
    load: int
    running: list[Task] = field(default_factory=list)
    inbox: list[Task] = field(default_factory=list)


@dataclass(slots=True)
class QueueDepth:
    """Tasks of one type: waiting (in the shared queue or a worker's inbox), given to a worker's inbox, taken."""

    task_type: str
    queued: int = 0
    in_inboxes: int = 0
    running: int = 0
    workers: int = 0


@dataclass(frozen=True, slots=True)
class NavCounts:
    """What the studio's navigation bar counts."""

    quarantined: int
    workers_alive: int
    held: int = 0
