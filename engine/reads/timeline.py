"""A job's timeline from history, and what it tells: the states it went through and by which edge,
every task and its answer, the branches of a fan-out, and the job as it was at any line.

:class:`Timeline` holds the lines in order and folds them once (again after :meth:`Timeline.extend`)
into :class:`Visit` (one stay in a state: how it was entered, the handler that ran, the tasks it
dispatched), :class:`Attempt` (one task: dispatched, taken, answered) chained into :class:`Branch`
(a task and its retries), and :class:`Transition` (an edge taken). :meth:`Timeline.at` is the job as
it was right after a line (:class:`Moment`): history keeps what is needed to rebuild it, including
``state_history`` (each step records what it changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .changes import apply_changes
from .lines import Line
from .visits import Attempt, Branch, Moment, TimelineRow, Transition, Visit

#: Lines after which the job moves no more by itself.
ENDINGS = frozenset({"job_finished", "job_failed", "job_cancelled", "job_lost"})
#: Lines folded into a row of their visit or task in the compact timeline.
_FOLDED = frozenset({"step_finished", "state_left", "task_dispatched", "task_taken", "task_result", "task_retry"})


@dataclass(slots=True)
class _Fold:
    """Everything the lines say, read once."""

    visits: list[Visit] = field(default_factory=list)
    attempts: dict[str, Attempt] = field(default_factory=dict)
    branch_of: dict[str, Branch] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    visit_counts: dict[str, int] = field(default_factory=dict)
    state_history: dict[str, Any] = field(default_factory=dict)
    initial_data: dict[str, Any] = field(default_factory=dict)
    blueprint_version: str | None = None
    state: str = ""
    status: str = ""
    error: str | None = None
    ending: Line | None = None
    touched: Attempt | None = None  # the task of the last task line
    retried_from: dict[str, str] = field(default_factory=dict)  # next task id -> the failed one

    @property
    def current(self) -> Visit | None:
        return self.visits[-1] if self.visits else None

    def enter(self, line: Line, previous: str | None, via: dict[str, Any] | None) -> None:
        state = str(line.state)
        self.close_open(line.at)
        self.visit_counts[state] = self.visit_counts.get(state, 0) + 1
        self.visits.append(Visit(state, self.visit_counts[state], line.at, line.seq, previous, via))

    def close_open(self, at: float, *, held: bool = False) -> None:
        """The job left its visit (or, ``held``, was quarantined in it): tasks still without an answer
        there were withdrawn (held, to be sent again on release)."""
        current = self.current
        if current is None:
            return
        if current.left_at is None and not held:
            current.left_at = at
        for branch in current.branches:
            last = branch.last
            if last.result is None and last.lost_reason is None and last.withdrawn_at is None:
                last.withdrawn_at, last.held = at, held

    def dispatched(self, line: Line) -> None:
        data = line.data
        task_id = str(data.get("task_id"))
        replaces = data.get("replaces") or self.retried_from.get(task_id)
        attempt = Attempt(
            task_id,
            str(data.get("task_type") or "?"),
            line.state,
            int(data.get("attempt") or 1),
            data.get("params") if isinstance(data.get("params"), dict) else {},
            line.at,
            line.seq,
            replaces=str(replaces) if replaces else None,
            worker_id=data.get("worker_id"),
        )
        self.attempts[task_id] = self.touched = attempt
        earlier = self.branch_of.get(attempt.replaces) if attempt.replaces else None
        if earlier is not None:
            earlier.attempts.append(attempt)
            self.branch_of[task_id] = earlier
            return
        current = self.current
        if current is None:  # history joined late: a visit of the state it names
            self.visits.append(Visit(str(line.state), 1, line.at, line.seq))
            current = self.visits[-1]
        branch = Branch(len(current.branches) + 1, [attempt])
        current.branches.append(branch)
        self.branch_of[task_id] = branch

    def task_line(self, line: Line) -> None:
        data = line.data
        attempt = self.attempts.get(str(data.get("task_id")))
        if attempt is None:
            return
        self.touched = attempt
        if line.kind == "task_taken":
            attempt.worker_id, attempt.taken_at = data.get("worker_id") or line.worker_id, line.at
        elif line.kind == "task_result":
            result = data.get("result")
            attempt.result = result if isinstance(result, dict) else {"status": str(result)}
            attempt.answered_at = line.at
            attempt.worker_id = attempt.worker_id or data.get("worker_id") or line.worker_id
        elif line.kind == "task_retry":
            if attempt.result is None:
                attempt.lost_reason = str(data.get("error") or "no answer")
                attempt.answered_at = line.at
            following = data.get("next_task_id")
            if following:
                attempt.retried_by = str(following)
                self.retried_from[str(following)] = attempt.task_id
            self.error = data.get("error")

    def read(self, line: Line) -> None:  # noqa: C901 - one branch per kind of line, flat
        kind, data = line.kind, line.data
        if kind == "job_created":
            initial = data.get("initial_data")
            self.initial_data = dict(initial) if isinstance(initial, dict) else {}
            started = data.get("state_history")  # a rerun starts with the data of its origin
            self.state_history = dict(started) if isinstance(started, dict) else {}
            self.blueprint_version = data.get("blueprint_version")
            self.enter(line, None, None)
        elif kind == "state_entered":
            via = data.get("via")
            self.enter(line, data.get("previous"), via if isinstance(via, dict) else None)
            self.transitions.append(Transition.of(line))
            apply_changes(self.state_history, data.get("changes"))
            merged = self.attempts.get(str(data.get("merged"))) if data.get("merged") else None
            if merged is not None and isinstance(merged.data, dict):
                self.state_history.update(merged.data)
            self.error = None
        elif kind == "state_left":
            current = self.current
            if current is not None and current.state == line.state:
                current.left_at, current.duration_ms = line.at, line.duration_ms
        elif kind == "step_finished":
            if self.current is not None:
                self.current.steps.append(line)
            apply_changes(self.state_history, data.get("changes"))
        elif kind == "task_dispatched":
            self.dispatched(line)
        elif kind in ("task_taken", "task_result", "task_retry"):
            self.task_line(line)
        elif kind == "job_continued":  # from a breakpoint, perhaps with its data edited
            edits = data.get("edits") if isinstance(data.get("edits"), dict) else {}
            apply_changes(self.state_history, edits.get("state_history"))
            apply_changes(self.initial_data, edits.get("initial_data"))
        elif kind == "job_retried" and isinstance(data.get("state_history"), dict):
            self.state_history = dict(data["state_history"])  # the step debugger put the job back
        elif kind in ("job_released", "job_retried"):
            self.error, self.ending = None, None
        elif kind == "handler_retry":
            self.error = data.get("error")
        elif kind in ENDINGS or kind == "job_quarantined":
            self.ending = line
            self.error = data.get("error")
            self.close_open(line.at, held=kind == "job_quarantined")
        if line.state and line.status is not None:
            self.state = line.state
        if line.status is not None:
            self.status = line.status


class Timeline:
    """A job's timeline lines, in order, and what they tell (folded once, again after :meth:`extend`).

    Args:
        lines: The lines, oldest first (``seq`` 1, 2...).
    """

    def __init__(self, lines: Iterable[Line] = ()) -> None:
        self.lines: list[Line] = []
        self._fold: _Fold | None = None
        self.extend(lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __repr__(self) -> str:
        return f"Timeline({len(self.lines)} lines)"

    def extend(self, lines: Iterable[Line]) -> list[Line]:
        """Add the lines after the last one held (a line seen twice is skipped); returns those added."""
        added = [line for line in lines if line.seq > self.last_seq]
        added.sort(key=lambda line: line.seq)
        if added:
            self.lines.extend(added)
            self._fold = None
        return added

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq if self.lines else 0

    @property
    def fold(self) -> _Fold:
        if self._fold is None:
            fold = _Fold()
            for line in self.lines:
                fold.read(line)
            self._fold = fold
        return self._fold

    # -- what the lines tell ------------------------------------------------------------------------
    @property
    def visits(self) -> list[Visit]:
        return self.fold.visits

    @property
    def transitions(self) -> list[Transition]:
        return self.fold.transitions

    @property
    def visit_counts(self) -> dict[str, int]:
        return dict(self.fold.visit_counts)

    @property
    def state_history(self) -> dict[str, Any]:
        """``state_history`` rebuilt from what each step recorded it changed."""
        return dict(self.fold.state_history)

    @property
    def initial_data(self) -> dict[str, Any]:
        return self.fold.initial_data

    @property
    def status(self) -> str:
        """The job's status as its last line with one leaves it."""
        return self.fold.status

    @property
    def blueprint_version(self) -> str | None:
        return self.fold.blueprint_version

    @property
    def ending(self) -> Line | None:
        """The line that stopped the job (finished, failed, cancelled, quarantined, lost), if it stopped."""
        return self.fold.ending

    @property
    def span(self) -> tuple[float, float]:
        """The first and last lines' times."""
        if not self.lines:
            return 0.0, 0.0
        return self.lines[0].at, self.lines[-1].at

    def attempt(self, task_id: str) -> Attempt | None:
        return self.fold.attempts.get(task_id)

    def visits_of(self, state: str) -> list[Visit]:
        return [v for v in self.visits if v.state == state]

    def released_params(self, line: Line) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """For a ``job_released`` line with params: the held task's params and those it was sent
        again with (the operator's params merged in), for a diff."""
        for attempt in self.fold.attempts.values():
            if attempt.dispatched_seq > line.seq and attempt.replaces:
                held = self.fold.attempts.get(attempt.replaces)
                return (held.params, attempt.params) if held is not None else None
        return None

    # -- time travel ----------------------------------------------------------------------------------
    def at(self, seq: int) -> Moment:
        """The job as it was right after line ``seq`` (the first line for less, the last for more)."""
        if not self.lines:
            raise ValueError("an empty timeline has no moments")
        return self.upto(max(seq, self.lines[0].seq)).moment()

    def upto(self, seq: int) -> Timeline:
        """The timeline as it was right after line ``seq``."""
        return Timeline(line for line in self.lines if line.seq <= seq)

    def moment(self) -> Moment:
        """The job as the last line leaves it."""
        fold = self.fold
        visit = fold.current
        task = fold.touched if fold.touched is not None and visit is not None else None
        if task is not None and visit is not None and fold.branch_of.get(task.task_id) not in visit.branches:
            task = None
        branches = list(visit.branches) if visit is not None and visit.fan_out else []
        return Moment(
            self.lines[-1],
            fold.state,
            fold.status,
            fold.error,
            dict(fold.visit_counts),
            list(fold.transitions),
            dict(fold.state_history),
            visit,
            task,
            branches,
            list(fold.visits),
        )

    # -- the compact timeline -----------------------------------------------------------------------
    def rows(self) -> list[TimelineRow]:
        """The timeline folded: a row per visit, per task (with its retries) or per fan-out, and the
        other lines (operators' actions, waits, ends) as they are."""
        fold = self.fold
        visit_at = {v.entered_seq: v for v in fold.visits}
        rows: list[TimelineRow] = []
        for line in self.lines:
            visit = visit_at.get(line.seq)
            if visit is not None:
                rows.append(TimelineRow("visit", line.seq, line.at, line=line, visit=visit))
                rows += _task_rows(visit)
            elif line.kind not in _FOLDED:
                rows.append(TimelineRow("line", line.seq, line.at, line=line))
        return rows


def _task_rows(visit: Visit) -> list[TimelineRow]:
    """A visit's tasks: one row for a fan-out, else a row per branch."""
    if not visit.branches:
        return []
    if visit.fan_out:
        first = visit.branches[0].first
        return [TimelineRow("fan_out", first.dispatched_seq, first.dispatched_at, visit=visit, branches=visit.branches)]
    return [
        TimelineRow("task", b.first.dispatched_seq, b.first.dispatched_at, visit=visit, branch=b)
        for b in visit.branches
    ]


def edge_visits(transitions: Sequence[Transition]) -> dict[tuple[str | None, str, str | None, str, str | None], int]:
    """How often each (source, target, kind, label, condition) was taken."""
    found: dict[tuple[str | None, str, str | None, str, str | None], int] = {}
    for t in transitions:
        if t.on_graph:
            key = (t.source, t.target, t.kind, t.label, t.condition)
            found[key] = found.get(key, 0) + 1
    return found
