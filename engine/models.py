"""The records the engine keeps: jobs, tasks, workers, breakpoints and bulk actions.

They are slotted dataclasses (cheap to hold by the ten thousand) that serialise to plain dicts; storage
backends keep them as JSON so what is read back is always exactly what was written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

import orjson

R = TypeVar("R", bound="_Record")


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_WORKER = "waiting_for_worker"
    WAITING_FOR_HUMAN = "waiting_for_human"
    WAITING_FOR_PARALLEL_TASKS = "waiting_for_parallel_tasks"
    WAITING_FOR_SUB_JOB = "waiting_for_sub_job"
    AWAITING_RETRY = "awaiting_retry"
    #: Stopped at a breakpoint before its state's handler (see avtomatika.runtime.breakpoints).
    HELD = "held"
    FINISHED = "finished"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    CANCELLED = "cancelled"
    #: Only in history: the job was held in memory by an engine that stopped (its live state went
    #: with it). Never in live storage.
    LOST = "lost"


#: Statuses in which nothing happens to a job without an operator.
TERMINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.QUARANTINED, JobStatus.CANCELLED})
#: Statuses a job ends in for good: only such jobs are ever forgotten by live storage (a quarantined
#: job waits for an operator to release, retry or fail it).
ENDED_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})
#: Statuses in which the job's current state handler is due to run.
RUNNABLE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
WAITING_ON_TASKS = frozenset({JobStatus.WAITING_FOR_WORKER, JobStatus.WAITING_FOR_PARALLEL_TASKS})
#: Statuses a job has in live storage (``lost`` is history's alone).
LIVE_STATUSES = frozenset(JobStatus) - {JobStatus.LOST}


class TaskStatus(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RETRY_SCHEDULED = "retry_scheduled"
    DONE = "done"
    WITHDRAWN = "withdrawn"


def pack(record: object, *, head: int = 1, tail: int = 0) -> bytes:
    """A record (or any JSON-able value) as compact JSON bytes, for a storage in this process's memory.

    A record is written as the list of its field values in declaration order, without its first
    ``head`` fields (its id, the key the storage keeps it under, and any other the storage keeps
    beside the record), without its last ``tail`` fields (likewise), without the field names and
    without the trailing fields that hold their defaults: :func:`unpack` reads it back. Only a
    storage whose records never leave the process can use a form that depends on the fields' order
    (Redis keeps named fields). orjson hands back bytes inside a buffer of several KB; the copy
    keeps just the document.
    """
    if isinstance(record, _Record):
        record = _values(record, head, tail)
    return bytes(memoryview(orjson.dumps(record)))


def unpack(cls: type[R], packed: bytes, *head: Any) -> R:
    """The record :func:`pack` made of an instance of ``cls``, given the first fields it left out
    (``head``, in order: the id first). Fields left out at the end keep their defaults: the caller
    sets them (taking them here as keywords made a job read cost 4.5 µs instead of 2.9)."""
    return cls(*head, *orjson.loads(packed))


def _values(record: _Record, head: int, tail: int) -> tuple[Any, ...]:
    layout = _layout(type(record), head, tail)
    values, defaults = layout.read(record), layout.defaults
    # Most records hold their defaults in the second half of their fields (see Job): one comparison
    # of tuples (in C) for it first, then field by field.
    end = len(values)
    if values[end // 2 :] == defaults[end // 2 :]:
        end //= 2
    while end and defaults[end - 1] is not _REQUIRED and values[end - 1] == defaults[end - 1]:
        end -= 1
    return values[:end]


def named(record: _Record, leave_out: frozenset[str] = frozenset()) -> bytes:
    """A record as a JSON object of the fields that do not hold their defaults, by name (bar ``leave_out``,
    fields the caller stores apart).

    For a storage that keeps records outside this process (Redis): named fields read back by any
    version of the engine (``from_dict`` gives the fields left out their defaults), and the defaults
    most fields of a record hold take no room (a waiting job's document 452 -> ~330 bytes, its task's
    455 -> ~250).
    """
    layout = _layout(type(record))
    values = zip(layout.names, layout.read(record), layout.defaults, strict=True)
    return orjson.dumps({name: value for name, value, default in values if value != default and name not in leave_out})


def wait_on_tasks(task_ids: list[str]) -> dict[str, Any]:
    """A job's wait for the results of ``task_ids``, as a dispatch makes it (before what a fan-out adds)."""
    return {"kind": "tasks", "task_ids": task_ids}


def tasks_waited_alone(wait: dict[str, Any] | None) -> list[str] | None:
    """The ids ``wait`` waits on when it is a wait on tasks alone (:func:`wait_on_tasks`'s, nothing
    added), else None: a storage whose record of the job lists those tasks keeps such a wait as a mark."""
    if wait is None or len(wait) != 2 or wait.get("kind") != "tasks":
        return None
    task_ids: list[str] | None = wait.get("task_ids")
    return task_ids


def new_id() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` gives it, in half the time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def now() -> float:
    return time.time()


class _Record:
    """Dict round trip shared by the records below."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        try:
            return cls(**data)
        except TypeError:  # keys this version does not know (or lacks): left out
            names = _field_names(cls)
            return cls(**{k: v for k, v in data.items() if k in names})


_REQUIRED = object()  # the "default" of a field without one


class _Layout(NamedTuple):
    """A record class's field names but its first ``head`` and last ``tail``, the default of each
    (:data:`_REQUIRED` if none), and a reader of their values at once (``attrgetter``: one C call
    instead of a getattr per field; the fields left out are not read at all)."""

    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    read: Callable[[Any], tuple[Any, ...]]


_LAYOUTS: dict[tuple[type, int, int], _Layout] = {}


def _layout(cls: type, head: int = 0, tail: int = 0) -> _Layout:
    layout = _LAYOUTS.get((cls, head, tail))
    if layout is None:
        found = fields(cls)
        found = found[head : len(found) - tail]
        names = tuple(f.name for f in found)
        defaults = tuple(_default_of(f) for f in found)
        layout = _LAYOUTS[cls, head, tail] = _Layout(names, defaults, _reader(names))
    return layout


def _reader(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) >= 2:
        return attrgetter(*names)
    return lambda record: tuple(getattr(record, name) for name in names)  # attrgetter gives one bare


def _default_of(spec: Field[Any]) -> Any:
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING and spec.default_factory is not now:  # "now" is no constant
        return spec.default_factory()
    return _REQUIRED


def _field_names(cls: type) -> tuple[str, ...]:
    return _layout(cls).names


@dataclass(slots=True)
class Wait:
    """What a non-runnable, non-terminal job is waiting on; every such job names one."""

    kind: str  # "tasks" | "human" | "sub_job" | "retry"
    task_ids: list[str] = field(default_factory=list)
    aggregate_into: str | None = None
    transitions: dict[str, str] = field(default_factory=dict)
    child_job_id: str | None = None
    retry_at: float | None = None
    message: str | None = None


@dataclass(slots=True)
class Job(_Record):
    id: str
    blueprint: str
    state: str
    status: str = JobStatus.PENDING
    client: str | None = None
    # What most jobs hold first, what most leave at its default after: a record kept in this
    # process's memory leaves out the trailing defaults (``pack``).
    initial_data: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    visits: dict[str, int] = field(default_factory=dict)
    wait: dict[str, Any] | None = None
    state_history: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    retry_count: int = 0
    handler_attempts: int = 0
    parent_job_id: str | None = None
    tracing_context: dict[str, str] = field(default_factory=dict)
    version: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def waiting(self) -> Wait | None:
        return Wait(**self.wait) if self.wait else None


@dataclass(slots=True)
class Task(_Record):
    id: str
    job_id: str
    type: str
    # As in Job, what most tasks hold first, what most leave at its default after.
    params: dict[str, Any] = field(default_factory=dict)
    transitions: dict[str, str] = field(default_factory=dict)
    state: str = ""
    queued_at: float = field(default_factory=now)
    attempt: int = 1
    priority: float = 0.0
    timeout_s: float | None = None
    strategy: str = "default"
    requirements: dict[str, Any] | None = None
    max_cost: float | None = None
    aggregate_into: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    tracing_context: dict[str, str] = field(default_factory=dict)
    # Where the task is, last: what taking and closing it change (a storage may keep them apart).
    status: str = TaskStatus.QUEUED
    worker_id: str | None = None
    taken_at: float | None = None
    deadline: float | None = None

    def wire(self) -> dict[str, Any]:
        """The task as a worker receives it (PROTOCOL.md)."""
        return {
            "job_id": self.job_id,
            "task_id": self.id,
            "type": self.type,
            "params": self.params,
            "tracing_context": self.tracing_context,
            "priority": float(self.priority),
        }


@dataclass(slots=True)
class WorkerRecord(_Record):
    """A registered worker. ``info`` keeps every field the worker sent, known or not."""

    worker_id: str
    info: dict[str, Any] = field(default_factory=dict)
    registered_at: float = field(default_factory=now)
    last_seen: float = field(default_factory=now)
    expires_at: float = 0.0

    @property
    def supported_tasks(self) -> list[str]:
        tasks = self.info.get("supported_tasks") or []
        return [t for t in tasks if isinstance(t, str)]

    @property
    def max_concurrent_tasks(self) -> int:
        resources = self.info.get("resources") or {}
        value = self.info.get("max_concurrent_tasks") or (
            resources.get("max_concurrent_tasks") if isinstance(resources, dict) else None
        )
        return value if isinstance(value, int) and value > 0 else 1

    def alive(self, at: float) -> bool:
        return self.expires_at > at


#: ``Breakpoint.state`` that holds a job at the next state it enters, whatever it is.
ANY_STATE = "*"


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """Where jobs are held. ``once``: removed when it holds its first job (a step)."""

    blueprint: str
    state: str
    job_id: str | None = None
    once: bool = False
    actor: str | None = None
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=now)

    def holds(self, job: Job) -> bool:
        """Whether ``job``, about to run its state's handler, is held here."""
        if job.blueprint != self.blueprint or self.state not in (job.state, ANY_STATE):
            return False
        if self.job_id is not None:
            return job.id == self.job_id
        return job.created_at >= self.created_at  # "every new job of the blueprint"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breakpoint:
        return cls(**{name: data[name] for name in _BREAKPOINT_FIELDS if name in data})


_BREAKPOINT_FIELDS = ("blueprint", "state", "job_id", "once", "actor", "id", "created_at")


#: Skipped jobs whose reason is kept, per bulk action.
MAX_PROBLEMS = 100


class BulkKind(StrEnum):
    RELEASE = "release"
    RETRY = "retry"
    FAIL = "fail"
    CANCEL = "cancel"
    CONTINUE = "continue"
    RERUN = "rerun"


class BulkStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class BulkAction:
    """One bulk action and its progress. ``options``: the operation's own (release ``params``, retry
    ``from_state``, fail ``reason``); ``handled``: jobs dealt with so far (the index of the next one)."""

    kind: BulkKind
    total: int
    rate_per_s: float
    actor: str
    options: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=now)
    status: BulkStatus = BulkStatus.RUNNING
    handled: int = 0
    done: int = 0
    skipped: int = 0
    #: ``[job id, reason]`` of the first MAX_PROBLEMS jobs skipped.
    problems: list[list[str]] = field(default_factory=list)
    ended_at: float | None = None
    cancelled_by: str | None = None
    #: Bumped by every save: a save from a stale read is refused (see Storage.save_bulk).
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BulkAction:
        action = cls(**{name: data[name] for name in _BULK_FIELDS if name in data})
        action.kind, action.status = BulkKind(action.kind), BulkStatus(action.status)
        return action

    def record(self, done: int, skipped: list[tuple[str, str]], handled: int) -> None:
        """Count a round's jobs; the action is finished once every job was handled."""
        self.handled += handled
        self.done += done
        self.skipped += len(skipped)
        room = MAX_PROBLEMS - len(self.problems)
        self.problems += [[job_id, reason] for job_id, reason in skipped[: max(0, room)]]
        if self.status == BulkStatus.RUNNING and self.handled >= self.total:
            self.status, self.ended_at = BulkStatus.FINISHED, now()


_BULK_FIELDS = tuple(BulkAction.__dataclass_fields__)
