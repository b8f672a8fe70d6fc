"""The step debugger's checkpoints: checkpoints to go back to, the branches left behind, and the log.

Plain data, no engine calls (:class:`~avtomatika.debugger.session.DebugSession` does those).
A :class:`Checkpoint` is the job as it was before a step ran (and, when a line is left, as it was
left). Checkpoints form a tree: going back to one makes it the head, and what followed it on the line
left behind stays in the tree as a *branch*, whose checkpoints can be restored later (``redo`` walks
forward along the branch just left). Every log :class:`LogEntry` knows whether it is on the current line
(``branch`` None) or on a branch left behind (``branch`` its number, as the log shows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import Job, JobStatus
from ..reads import Change, Transition

#: Statuses in which a job document alone is the whole job: restoring it needs no task nor child job.
SELF_CONTAINED = frozenset(
    {
        JobStatus.PENDING,
        JobStatus.RUNNING,
        JobStatus.WAITING_FOR_HUMAN,
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.QUARANTINED,
    }
)


def copy_job(job: Job) -> Job:
    """A deep copy of ``job`` (its JSON form read back)."""
    return Job.from_dict(job.to_dict())  # type: ignore[no-any-return]


def restorable(job: Job) -> bool:
    """Whether the job document alone can be put back: it waits for no task, retry timer nor child job."""
    wait = job.wait or {}
    holds = wait.get("task_ids") or wait.get("held_task_ids") or wait.get("child_job_id")
    return job.status in SELF_CONTAINED and not holds


@dataclass(slots=True)
class LogEntry:
    """One line of the debugger's log: a step, a task answered, a restore, an edit, or a change from outside."""

    kind: str  # step | answer | decide | back | redo | edit | release | outside
    state: str  # the state it happened in
    action: str  # what was done, in words
    status: str  # the job's status after it
    next_state: str  # the job's state after it
    handler: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # what the handler received (step) or was shown
    changes: list[Change] = field(default_factory=list)  # the state_history diff
    error: str | None = None
    traceback: str | None = None
    step: int | None = None  # the step's number on its line, for kind "step"
    seq: int = 0  # the log line's number: unique, in the order things happened
    branch: int | None = None  # None: on the current line; else the branch left behind that holds it
    moves: list[Transition] = field(default_factory=list)  # the states it entered, by which edge

    @property
    def navigation(self) -> bool:
        """Back and redo move along the time line; they are never left behind on a branch."""
        return self.kind in ("back", "redo")


@dataclass(slots=True)
class Checkpoint:
    """The job as it was after ``step`` steps on its line, before the next one ran (or as a line was left).

    Attributes:
        id: Unique, in the order checkpoints were recorded.
        step: Steps taken on its line when it was recorded.
        job: A copy of the job then.
        parent: The checkpoint before it on its line.
        entries: Log lines (their ``seq``) between the parent and this checkpoint.
        tip: Recorded as a line was left (the job as it was then), not before a step.
        branch_results: In an aggregation state, the fan-in results the aggregator was about to get.
    """

    id: int
    step: int
    job: Job
    parent: int | None
    entries: list[int] = field(default_factory=list)
    tip: bool = False
    branch_results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        how = " · as left" if self.tip else ""
        status = "" if self.job.status in (JobStatus.RUNNING, JobStatus.PENDING) else f" · {self.job.status}"
        return f"step {self.step} · {self.job.state}{status}{how}"


class CheckpointTree:
    """Checkpoints in a tree, the current line through it, the branches left, and the log."""

    def __init__(self) -> None:
        self.checkpoints: dict[int, Checkpoint] = {}
        self.entries: list[LogEntry] = []
        self.head: Checkpoint | None = None
        #: The job's version when the head was recorded or restored: a later one means it moved on.
        self.head_version = -1
        #: Log lines since the head.
        self.pending: list[int] = []
        #: Checkpoints ``redo`` visits next: forward along the branch last left.
        self.redo_path: list[int] = []
        self.branches_left = 0

    # -- recording ------------------------------------------------------------------------------
    def add(self, entry: LogEntry) -> LogEntry:
        """Append a log line (on the current line)."""
        entry.seq = len(self.entries) + 1
        self.entries.append(entry)
        if not entry.navigation:
            self.pending.append(entry.seq)
            self.redo_path = []  # something new happened here: the branch left is no longer "ahead"
        return entry

    def record(
        self, job: Job, step: int, *, tip: bool = False, branch_results: dict[str, dict[str, Any]] | None = None
    ) -> Checkpoint:
        """A checkpoint of ``job`` after the head; it becomes the head."""
        parent = self.head.id if self.head else None
        checkpoint = Checkpoint(
            len(self.checkpoints) + 1, step, copy_job(job), parent, self.pending, tip, dict(branch_results or {})
        )
        self.checkpoints[checkpoint.id] = checkpoint
        self.head, self.head_version, self.pending = checkpoint, job.version, []
        return checkpoint

    def moved_on(self, job: Job) -> bool:
        """Whether ``job`` changed since the head was recorded or restored."""
        return self.head is None or job.version != self.head_version

    # -- reading --------------------------------------------------------------------------------
    def moves(self) -> list[Transition]:
        """The edges taken on the current line (what Back left behind is not on it)."""
        return [move for entry in self.entries if entry.branch is None for move in entry.moves]

    def path(self, checkpoint: Checkpoint) -> list[Checkpoint]:
        """The checkpoints from the first one to ``checkpoint``."""
        found: list[Checkpoint] = []
        current: Checkpoint | None = checkpoint
        while current is not None:
            found.append(current)
            current = self.checkpoints.get(current.parent) if current.parent is not None else None
        return found[::-1]

    def line(self) -> list[Checkpoint]:
        """The current line: the first checkpoint to the head."""
        return self.path(self.head) if self.head is not None else []

    def on_branches(self) -> list[Checkpoint]:
        """Checkpoints left behind (not on the current line), newest first."""
        on_line = {c.id for c in self.line()}
        return [c for c in reversed(self.checkpoints.values()) if c.id not in on_line]

    def at_step(self, step: int) -> Checkpoint | None:
        """The latest checkpoint of the current line after ``step`` steps."""
        return next((c for c in reversed(self.line()) if c.step == step), None)

    def previous(self, steps_taken: int) -> Checkpoint | None:
        """Where Back goes by default: before the last step of the current line (the first checkpoint at step 0)."""
        line = self.line()
        earlier = [c for c in line if c.step < steps_taken]
        return earlier[-1] if earlier else (line[0] if line else None)

    def branch_of(self, checkpoint: Checkpoint) -> int | None:
        """The number of the branch holding ``checkpoint`` (of its newest entry), None on the current line."""
        for seq in reversed(checkpoint.entries):
            branch = self.entries[seq - 1].branch
            if branch is not None:
                return branch
        return None

    # -- moving ---------------------------------------------------------------------------------
    def leave_for(
        self, target: Checkpoint, job: Job, steps_taken: int, branch_results: dict[str, dict[str, Any]] | None = None
    ) -> int | None:
        """Make ``target`` the head; what is left behind becomes a branch. Returns its number, if any.

        Args:
            target: The checkpoint restored.
            job: The job as it was before the restore (recorded as the line's tip when it had moved on
                and can be restored).
            steps_taken: Steps taken on the line being left.
            branch_results: The fan-in results ``job`` held (in an aggregation state).
        """
        if self.head is not None and self.moved_on(job) and restorable(job):
            self.record(job, steps_taken, tip=True, branch_results=branch_results)
        before = self._live()
        leaving = self.head
        self.head, self.pending = target, []
        after = self._live()
        left = before - after
        number = None
        if left:
            self.branches_left += 1
            number = self.branches_left
            for seq in left:
                self.entries[seq - 1].branch = number
        for seq in after:
            self.entries[seq - 1].branch = None
        self.redo_path = self._ahead(target, leaving)
        return number

    def _live(self) -> set[int]:
        seqs = {seq for c in self.line() for seq in c.entries}
        return seqs | set(self.pending)

    def _ahead(self, target: Checkpoint, leaving: Checkpoint | None) -> list[int]:
        """Checkpoints after ``target`` toward the tip left (or toward its newest descendant)."""
        if leaving is None:
            return []
        path = [c.id for c in self.path(leaving)]
        if target.id in path:  # plain Back along the line: redo goes forward again toward the tip
            return path[path.index(target.id) + 1 :]
        children = [c for c in self.checkpoints.values() if c.parent == target.id]
        ahead: list[int] = []
        while children:  # restored onto a branch: redo follows its newest line
            newest = max(children, key=lambda c: c.id)
            ahead.append(newest.id)
            children = [c for c in self.checkpoints.values() if c.parent == newest.id]
        return ahead
