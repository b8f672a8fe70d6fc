"""What a job's timeline folds into: :class:`Visit` (one stay in a state), :class:`Attempt` (one task)
chained into :class:`Branch` (a task and its retries), :class:`Transition` (an edge taken),
:class:`Moment` (the job right after a line) and the compact timeline's :class:`TimelineRow`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

from .lines import EDGE_KINDS, Line


@dataclass(slots=True)
class Attempt:
    """One task, by its id: dispatched, perhaps taken by a worker, perhaps answered."""

    task_id: str
    task_type: str
    state: str | None
    attempt: int
    params: dict[str, Any]
    dispatched_at: float
    dispatched_seq: int
    #: The task this one continues: the attempt before it (a retry), or the held task a release sent again.
    replaces: str | None = None
    worker_id: str | None = None
    taken_at: float | None = None
    answered_at: float | None = None
    result: dict[str, Any] | None = None
    #: Why it failed without an answer (a timeout, its worker expired).
    lost_reason: str | None = None
    #: The attempt dispatched after it failed.
    retried_by: str | None = None
    #: When the job went on (or stopped) without its answer.
    withdrawn_at: float | None = None
    #: Withdrawn by a quarantine, to be sent again if the job is released.
    held: bool = False

    @property
    def status(self) -> str:
        """``queued``, ``running``, ``done``, ``failed``, ``held`` (by a quarantine), ``withdrawn``, or a
        result's own status."""
        if self.result is not None:
            status = str(self.result.get("status"))
            return {"success": "done", "failure": "failed"}.get(status, status)
        if self.lost_reason is not None:
            return "failed"
        if self.withdrawn_at is not None:
            return "held" if self.held else "withdrawn"
        return "running" if self.taken_at is not None else "queued"

    @property
    def data(self) -> Any:
        return (self.result or {}).get("data")

    @property
    def error(self) -> dict[str, Any]:
        """The answer's ``error`` (``code``, ``message``), or the reason it was lost."""
        raw = (self.result or {}).get("error")
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, str):
            return {"message": raw}
        return {"code": "TRANSIENT_ERROR", "message": self.lost_reason} if self.lost_reason else {}

    @property
    def ended_at(self) -> float | None:
        """When it was answered, or withdrawn."""
        return self.answered_at if self.answered_at is not None else self.withdrawn_at

    @property
    def wait_s(self) -> float | None:
        """From dispatch to a worker taking it."""
        return None if self.taken_at is None else max(self.taken_at - self.dispatched_at, 0.0)

    @property
    def run_s(self) -> float | None:
        """From a worker taking it to its answer."""
        if self.taken_at is None or self.answered_at is None:
            return None
        return max(self.answered_at - self.taken_at, 0.0)


@dataclass(slots=True)
class Branch:
    """A task and the attempts that continued it (retries, a release): one branch of a fan-out."""

    number: int
    attempts: list[Attempt]

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def first(self) -> Attempt:
        return self.attempts[0]

    @property
    def status(self) -> str:
        """The last attempt's status; ``retrying`` while a failed one waits for its retry."""
        last = self.last
        return "retrying" if last.retried_by is not None else last.status


@dataclass(frozen=True, slots=True)
class BranchCounts:
    """A fan-out at a glance: how many of its branches are where."""

    total: int = 0
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    withdrawn: int = 0
    held: int = 0

    @classmethod
    def of(cls, statuses: Iterable[str]) -> BranchCounts:
        found = Counter("failed" if status == "retrying" else status for status in statuses)
        return cls(found.total(), **{name: found[name] for name in _PLACES})

    def __add__(self, other: BranchCounts) -> BranchCounts:
        return BranchCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def label(self) -> str:
        """``12/40 done · 3 running · 1 failed`` (parts at zero left out)."""
        parts = [f"{self.done}/{self.total} done"]
        for name in ("running", "queued", "held", "failed", "withdrawn"):
            if value := getattr(self, name):
                parts.append(f"{value} {name}")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


#: Where a branch can be, each counted by :class:`BranchCounts` (``retrying`` counts as failed).
_PLACES = ("done", "running", "queued", "failed", "withdrawn", "held")


@dataclass(slots=True)
class Visit:
    """One stay of the job in a state: how it came in, the handler that ran, what it dispatched."""

    state: str
    number: int  # 1 for its first visit of this state, 2 for the next...
    entered_at: float
    entered_seq: int
    previous: str | None = None
    via: dict[str, Any] | None = None
    left_at: float | None = None
    duration_ms: float | None = None
    steps: list[Line] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)

    @property
    def fan_out(self) -> bool:
        return len(self.branches) > 1 or any(s.data.get("action") == "fan_out" for s in self.steps)

    @property
    def counts(self) -> BranchCounts:
        return BranchCounts.of(b.status for b in self.branches)

    @property
    def tasks_done_at(self) -> float | None:
        """When its last task was answered, once none is open (None while one is)."""
        ends = [b.last.ended_at for b in self.branches]
        if not ends or any(b.status in ("queued", "running", "retrying") for b in self.branches):
            return None
        return max((end for end in ends if end is not None), default=None)

    @property
    def handler(self) -> Line | None:
        """The last handler run in this visit (its ``step_finished`` line)."""
        return self.steps[-1] if self.steps else None


@dataclass(frozen=True, slots=True)
class Transition:
    """A move from one state to the next: an edge of the graph, or an operation (retry, release)."""

    source: str | None
    target: str
    kind: str | None
    label: str
    condition: str | None
    seq: int
    at: float
    actor: str | None = None

    @classmethod
    def of(cls, line: Line) -> Transition:
        """The move a ``state_entered`` line records."""
        return cls.entered(str(line.state), line.data, line.seq, line.at)

    @classmethod
    def entered(cls, state: str, data: Mapping[str, Any], seq: int, at: float) -> Transition:
        """The move into ``state`` that a ``state_entered`` event's ``data`` describes."""
        via = data.get("via")
        via = via if isinstance(via, dict) else {}
        previous = data.get("previous")
        return cls(
            str(previous) if previous is not None else None,
            state,
            via.get("kind"),
            str(via.get("label") or ""),
            via.get("condition"),
            seq,
            at,
            via.get("actor"),
        )

    @property
    def on_graph(self) -> bool:
        """Whether it follows an edge of the graph (an operator's retry or release does not)."""
        return self.kind is None or self.kind in EDGE_KINDS


@dataclass(slots=True)
class Moment:
    """The job as it was right after one line of its timeline."""

    line: Line
    state: str
    status: str
    error: str | None
    visits: dict[str, int]
    transitions: list[Transition]
    state_history: dict[str, Any]
    visit: Visit | None
    #: The task last dispatched, taken or answered in the visit then.
    task: Attempt | None
    #: The visit's fan-out branches then (empty when it has one task or none).
    branches: list[Branch]
    #: Every visit up to then, oldest first.
    all_visits: list[Visit] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return self.line.seq

    @property
    def at(self) -> float:
        return self.line.at


@dataclass(slots=True)
class TimelineRow:
    """One row of the compact timeline: a visit (its entry, handler and time in the state), a task with
    its attempts, a whole fan-out, or a line shown as it is (operator actions, ends)."""

    kind: str  # visit | task | fan_out | line
    seq: int
    at: float
    line: Line | None = None
    visit: Visit | None = None
    branch: Branch | None = None
    branches: list[Branch] = field(default_factory=list)
