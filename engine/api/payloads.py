"""Request bodies and response views of the HTTP API, as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ..models import JobStatus, TaskStatus
from ..reads import Line
from ..runtime.bulk import MAX_JOBS, MAX_RATE


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


#: Longest ids and result status a result may name (:class:`TaskResult`, :func:`read_task_result`).
ID_MAX_CHARS, STATUS_MAX_CHARS = 200, 100


class ResultError(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str | None = Field(default=None, max_length=100)
    message: str | None = Field(default=None, max_length=10_000)


class TaskOutcome(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str = Field(min_length=1, max_length=STATUS_MAX_CHARS)
    data: dict[str, Any] | None = None
    error: ResultError | None = None


class TaskResult(BaseModel):
    job_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    task_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    worker_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    result: TaskOutcome


def plain_task_result(body: Any) -> tuple[str, str, str, dict[str, Any]] | None:
    """``(job_id, task_id, worker_id, result)`` of a result without ``error``, checked by hand.

    What :class:`TaskResult` would accept and give back (``result`` without its None fields), for
    the shape every successful task posts; None for any other body, which the model reads then
    (naming what is wrong): validating and dumping the model was a tenth of a result's handling.
    """
    if not isinstance(body, dict):
        return None
    job_id, task_id, worker_id = body.get("job_id"), body.get("task_id"), body.get("worker_id")
    result = body.get("result")
    if not (_is_text(job_id, ID_MAX_CHARS) and _is_text(task_id, ID_MAX_CHARS) and _is_text(worker_id, ID_MAX_CHARS)):
        return None
    if not isinstance(result, dict) or not _is_text(result.get("status"), STATUS_MAX_CHARS):
        return None
    data = result.get("data")
    if not (data is None or isinstance(data, dict)) or result.get("error") is not None:
        return None
    return job_id, task_id, worker_id, {k: v for k, v in result.items() if v is not None}


def _is_text(value: Any, max_chars: int) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= max_chars


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] | None = None


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_state: str | None = Field(default=None, min_length=1)


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class BreakpointRequest(BaseModel):
    """Hold a job (``job_id``) or every new job of ``blueprint`` before ``state``'s handler runs."""

    model_config = ConfigDict(extra="forbid")
    state: str = Field(min_length=1, max_length=200, description="A state, or '*' (a job's next state)")
    blueprint: str | None = Field(default=None, min_length=1, max_length=200)
    job_id: str | None = Field(default=None, min_length=1, max_length=200)


class ContinueRequest(BaseModel):
    """Continue a held job: its data replaced by what is given; ``step``: held again at its next state."""

    model_config = ConfigDict(extra="forbid")
    initial_data: dict[str, Any] | None = None
    state_history: dict[str, Any] | None = None
    step: bool = False


class RerunRequest(BaseModel):
    """Rerun a job from ``state`` (default: the start state); ``visit``: which visit of it the data
    comes from (default: the last); ``initial_data``, ``state_history``: replace the data there."""

    model_config = ConfigDict(extra="forbid")
    state: str | None = Field(default=None, min_length=1, max_length=200)
    visit: int | None = Field(default=None, ge=1)
    initial_data: dict[str, Any] | None = None
    state_history: dict[str, Any] | None = None


class RerunDone(BaseModel):
    status: Literal["accepted"] = "accepted"
    job_id: str
    current_state: str
    rerun_of: str


class BulkRequest(BaseModel):
    """One operation on many jobs, at most ``rate_per_s`` jobs a second."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["release", "retry", "fail", "cancel", "continue", "rerun"]
    job_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=MAX_JOBS)
    rate_per_s: float = Field(default=10.0, gt=0, le=MAX_RATE)
    params: dict[str, Any] | None = Field(default=None, description="release: merged into the held task's params")
    from_state: str | None = Field(default=None, min_length=1, description="retry: the state to run again from")
    state: str | None = Field(default=None, min_length=1, description="rerun: the state new jobs start at")
    reason: str | None = Field(default=None, max_length=2000, description="fail: why")


class ApprovalRequest(BaseModel):
    decision: str = Field(min_length=1, max_length=200)


#: ``YYYY-MM-DDTHH:MM:SS`` of the whole seconds :func:`iso` wrote lately (they cluster around now).
# -- responses -------------------------------------------------------------------------------------
# Every handler builds its answer with one of these models, and the OpenAPI document is generated
# from them (engine/api/openapi.py): the shape of a response is written once.


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    model_config = ConfigDict(extra="allow")
    error: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    job_id: str


class TaskView(BaseModel):
    task_id: str
    type: str
    params: dict[str, Any]
    status: TaskStatus
    worker_id: str | None
    attempt: int
    priority: float
    progress: float | None
    progress_message: str | None
    queued_at: str | None
    taken_at: str | None
    deadline: str | None


#: A job's view shows at most this many of its tasks (the first dispatched) and counts them all: reading
#: and rendering every branch of a wide fan-out on each poll cost more than the rest of its work.
VIEW_TASKS = 20


class ApprovalView(BaseModel):
    message: str | None
    choices: list[str]


class JobView(BaseModel):
    """A job as its client sees it: never tokens or request headers."""

    id: str
    blueprint_name: str
    status: JobStatus
    current_state: str
    initial_data: dict[str, Any]
    state_history: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    error_message: str | None
    retry_count: int
    parent_job_id: str | None
    waiting_for: str | None
    task: TaskView | None = Field(description="The task the job waits on (or holds, when quarantined), if just one.")
    tasks: list[TaskView] = Field(
        description=f"When the job waits on (or holds) several tasks: the first ones dispatched, at most {VIEW_TASKS}."
    )
    task_count: int = Field(description="How many tasks the job waits on (or holds, when quarantined).")
    approval: ApprovalView | None = Field(default=None, description="Only while the job waits for a human.")


class JobSummary(BaseModel):
    id: str
    blueprint_name: str
    status: JobStatus
    current_state: str
    created_at: str | None
    updated_at: str | None
    error_message: str | None
    retry_count: int


#: How far history is behind when a read of it answers (JobList, JobTimeline).
HistoryPending = Annotated[
    int,
    Field(
        ge=0,
        description="Events not yet written to history when this was read (after waiting up to "
        "HISTORY_READ_WAIT_SECONDS): the answer may miss that many recent changes; 0: it is up to date",
    ),
]


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = None
    history_pending: HistoryPending = 0


class JobViewList(BaseModel):
    jobs: list[JobView]


class JobTimeline(BaseModel):
    history: list[Line]
    history_pending: HistoryPending = 0


class Cancelled(BaseModel):
    status: Literal["cancelled"] = "cancelled"
    job_id: str


class OperationDone(BaseModel):
    """The job after an operator action (retry, release, fail)."""

    status: JobStatus
    job_id: str
    current_state: str | None = None


class BreakpointView(BaseModel):
    id: str
    blueprint: str
    state: str
    job_id: str | None
    step: bool = Field(description="Set by a step: goes away once it holds its job")
    set_by: str | None
    created_at: str | None


class BreakpointList(BaseModel):
    breakpoints: list[BreakpointView]


class BreakpointRemoved(BaseModel):
    id: str
    continued: list[str] = Field(description="The jobs it held, continued")


class BulkView(BaseModel):
    id: str
    action: str
    status: Literal["running", "finished", "cancelled"]
    total: int
    handled: int
    done: int
    skipped: int
    rate_per_s: float
    options: dict[str, Any]
    actor: str
    created_at: str | None
    ended_at: str | None
    cancelled_by: str | None
    problems: list[dict[str, str]] = Field(description="The first skipped jobs and why")


class BulkList(BaseModel):
    bulk_actions: list[BulkView]


class BlueprintInfo(BaseModel):
    name: str
    version: str | None
    endpoint: str
    states: list[str]
    start_state: str | None
    end_states: list[str]
    description: str | None


class BlueprintList(BaseModel):
    blueprints: list[BlueprintInfo]


class WorkerView(BaseModel):
    """A worker's record (every field it sent, secrets left out) and what the engine knows of it."""

    model_config = ConfigDict(extra="allow")
    worker_id: str
    alive: bool
    current_tasks: int
    registered_at: str | None
    last_seen: str | None
    expires_at: str | None


class WorkerSummary(BaseModel):
    """A worker as a client among others sees it: what it is, not what it does for the others."""

    worker_id: str
    worker_type: str | None
    supported_tasks: list[str]
    alive: bool
    status: str | None = Field(description="What the worker last said of itself (idle, busy)")


class WorkerList(BaseModel):
    workers: list[WorkerView | WorkerSummary]


class JobCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class WorkerCounts(BaseModel):
    total: int
    alive: int


class Dashboard(BaseModel):
    jobs: JobCounts = Field(description="Live jobs: a client's own when it has a token, else every job")
    workers: WorkerCounts
    queues: dict[str, int] | None = Field(description="Queued tasks by type; on an open API only (null for a client)")


class Registered(BaseModel):
    status: Literal["registered"] = "registered"
    worker_id: str


class TtlRefreshed(BaseModel):
    status: Literal["ttl_refreshed"] = "ttl_refreshed"


class HeartbeatAnswer(RootModel[WorkerView | TtlRefreshed]):
    """The merged worker record, or only ``ttl_refreshed`` for an empty heartbeat."""


class TaskWire(BaseModel):
    """A task as its worker receives it (PROTOCOL.md)."""

    job_id: str
    task_id: str
    type: str
    params: dict[str, Any]
    tracing_context: dict[str, Any]
    priority: float


class ResultAck(BaseModel):
    status: str = Field(description="result_accepted_..., or what a duplicate was answered")


class StatusOk(BaseModel):
    status: Literal["ok"] = "ok"


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["healthy"]
    storage: str
    history: str | None = None


class Unhealthy(BaseModel):
    status: Literal["unhealthy"]
    error: str


class DecisionAccepted(BaseModel):
    status: Literal["decision_accepted"] = "decision_accepted"
    job_id: str
    current_state: str
