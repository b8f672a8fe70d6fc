"""Page contexts: what each template receives, one dataclass per page, every field documented.

A handler builds its context once and renders it as a page, as a fragment, or as JSON
(``to_json``): the JSON twin carries the same data as the page.
"""

# Long: one documented dataclass per page, side by side with PAGE_CONTEXTS, which the contract test
# (tests/test_studio_contracts.py) checks against the templates; the partials' own are in partial_contexts.py.

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from avtomatika.api.views import (
    iso,
    job_row_view,
    job_summary,
    job_view,
    line_json,
    task_view,
    worker_summary,
    worker_view,
)
from avtomatika.models import ENDED_STATUSES, Breakpoint, BulkAction, Job, JobStatus, Task
from avtomatika.reads import (
    Attempt,
    Branch,
    BranchCounts,
    ErrorSignature,
    JobDetail,
    JobRow,
    Moment,
    QueueDepth,
    TimelineRow,
    Visit,
)
from avtomatika.reads import WorkerView as Worker
from avtomatika.studio.breakpoint_data import breakpoint_json
from avtomatika.studio.forms import StartForm
from avtomatika.studio.graphs import VersionDiff
from avtomatika.studio.marks import GraphMarks
from avtomatika.studio.ui import TONES

if TYPE_CHECKING:
    from avtomatika.studio.bulk_form import BulkForm, Sample


def field_help(text: str) -> dict[str, str]:
    """A context field's documentation, as dataclass field metadata."""
    return {"help": text}


@dataclass(slots=True)
class BlueprintCard:
    """One blueprint as the blueprints page shows it."""

    name: str = field(metadata=field_help("The blueprint's name."))
    description: str = field(metadata=field_help("Its description, may be empty."))
    version: str = field(metadata=field_help("Hash of its graph and handlers' code; the SVG is cached per version."))
    svg: Markup = field(metadata=field_help("The cached inline SVG."))
    marks: GraphMarks = field(
        metadata=field_help("Badges of jobs in flight, notes of ended jobs and fan-outs, tooltips.")
    )
    states: list[str] = field(metadata=field_help("Its states, in registration order."))
    has_input_model: bool = field(metadata=field_help("Whether the start form is built from a pydantic model."))
    in_flight: dict[str, dict[str, int]] = field(
        default_factory=dict, metadata=field_help("Live jobs not ended, per state and status.")
    )
    ended: dict[str, dict[str, int]] = field(
        default_factory=dict, metadata=field_help("Jobs that ended (history), per state they ended in and status.")
    )
    fan_outs: dict[str, BranchCounts] = field(
        default_factory=dict, metadata=field_help("Branches of the fan-outs under way, per state.")
    )
    breakpoints: list[Breakpoint] = field(
        default_factory=list, metadata=field_help("Its breakpoints this session sees (drawn on the graph).")
    )

    def to_json(self) -> dict[str, Any]:
        counts = {n.state: n.count for n in self.marks.nodes}
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "counts": counts,
            "in_flight": self.in_flight,
            "ended": self.ended,
            "fan_outs": {state: c.to_json() for state, c in self.fan_outs.items()},
            "breakpoints": [breakpoint_json(bp) for bp in self.breakpoints],
        }


@dataclass(slots=True)
class PageContext:
    """A whole page's context: its title, then what its template shows."""

    title: str = field(metadata=field_help("Page title."))


@dataclass(slots=True)
class BlueprintsContext(PageContext):
    cards: list[BlueprintCard] = field(metadata=field_help("Every registered blueprint."))

    def to_json(self) -> dict[str, Any]:
        return {"blueprints": [card.to_json() for card in self.cards]}


@dataclass(slots=True)
class BlueprintContext(PageContext):
    card: BlueprintCard = field(metadata=field_help("The blueprint, with its graph."))
    form: StartForm = field(metadata=field_help("The start form, with values and inline errors after a failed try."))

    def to_json(self) -> dict[str, Any]:
        return {**self.card.to_json(), "states": self.card.states, "form": self.form.to_json()}


@dataclass(slots=True)
class BlueprintStateContext:
    """A state clicked on a blueprint's graph: its breakpoints and the jobs in it now."""

    blueprint: str = field(metadata=field_help("The blueprint."))
    state: str = field(metadata=field_help("The state clicked."))
    breakpoints: list[Breakpoint] = field(metadata=field_help("Breakpoints on this state this session sees."))
    in_flight: int = field(metadata=field_help("Jobs in this state now (not ended)."))

    @property
    def every_new_job(self) -> Breakpoint | None:
        """The breakpoint on this state that holds every new job, if set."""
        return next((bp for bp in self.breakpoints if bp.job_id is None), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "blueprint": self.blueprint,
            "state": self.state,
            "in_flight": self.in_flight,
            "breakpoints": [breakpoint_json(bp) for bp in self.breakpoints],
        }


@dataclass(slots=True)
class BlueprintBreakpoints:
    """A blueprint's breakpoints after one was set or removed: the list, the graph's marks, the state's panel."""

    card: BlueprintCard = field(metadata=field_help("The blueprint, its breakpoints and marks."))
    panel: BlueprintStateContext | None = field(metadata=field_help("The state panel that was open, redrawn."))
    message: str = field(default="", metadata=field_help("What was done."))

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "breakpoints": [breakpoint_json(bp) for bp in self.card.breakpoints]}


@dataclass(slots=True)
class HoldPanel:
    """The job page's breakpoints: the hold (where, by which breakpoint, the context editors) and the
    job's breakpoints with the form to add one."""

    job: Job = field(metadata=field_help("The job."))
    breakpoints: list[Breakpoint] = field(
        metadata=field_help("Breakpoints that may hold it: its own, and its blueprint's set before it was created.")
    )
    states: list[str] = field(metadata=field_help("States it may be held at (its blueprint's)."))
    holding: Breakpoint | None = field(
        default=None, metadata=field_help("The breakpoint holding it now, if still set.")
    )
    initial_data: str = field(default="", metadata=field_help("The initial_data editor text (as typed, if refused)."))
    state_history: str = field(default="", metadata=field_help("The state_history editor's text."))
    errors: dict[str, str] = field(default_factory=dict, metadata=field_help("Errors by field name."))
    message: str = field(default="", metadata=field_help("What was just done."))

    @property
    def held(self) -> bool:
        return self.job.status == JobStatus.HELD

    @property
    def held_by(self) -> dict[str, Any]:
        """The hold as the job's ``wait`` records it: ``breakpoint_id``, ``once`` (a step); {} if not held."""
        return (self.job.wait or {}) if self.held else {}

    @property
    def can_break(self) -> bool:
        """Whether a breakpoint may still hold the job (it has not ended)."""
        return self.job.status not in ENDED_STATUSES and self.job.status != JobStatus.LOST

    def to_json(self) -> dict[str, Any]:
        hold = self.held_by
        return {
            "job_id": self.job.id,
            "held": self.held,
            "held_at": self.job.state if self.held else None,
            "held_by": hold.get("breakpoint_id"),
            "step": bool(hold.get("once")),
            "breakpoints": [breakpoint_json(bp) for bp in self.breakpoints],
            "errors": self.errors,
            "message": self.message,
        }


@dataclass(slots=True)
class JobsContext(PageContext):
    filters: dict[str, str] = field(metadata=field_help("The filter form's raw values, to refill it."))
    rows: list[JobRow] = field(metadata=field_help("This page of jobs, newest first."))
    next_url: str | None = field(metadata=field_help("URL of the next (older) page; None on the last page."))
    first_page: bool = field(metadata=field_help("Whether this is the newest page (live rows are added only there)."))
    blueprints: list[str] = field(metadata=field_help("Blueprint names, for the filter."))
    states: list[str] = field(metadata=field_help("State names (of the chosen blueprint, or all), for the filter."))
    statuses: list[str] = field(metadata=field_help("Every job status (lost included), for the filter."))
    live_query: str = field(metadata=field_help("The filters as a query string, for the SSE stream."))
    source: str = field(metadata=field_help("Where the list comes from: engine (live storage) or history."))
    history_pending: int = field(
        metadata=field_help("Events not yet in history when the list was read (it may miss that many changes).")
    )
    operations: tuple[str, ...] = field(
        default=(), metadata=field_help("The bulk operations offered on the selection.")
    )
    rate_per_s: float = field(default=10.0, metadata=field_help("The bulk form's default rate (jobs per second)."))
    max_jobs: int = field(default=10_000, metadata=field_help("The most jobs one bulk action takes."))

    def to_json(self) -> dict[str, Any]:
        cursor = self.next_url.split("cursor=", 1)[1] if self.next_url and "cursor=" in self.next_url else None
        return {
            "jobs": [job_row_view(r) for r in self.rows],
            "next_cursor": cursor,
            "source": self.source,
            "history_pending": self.history_pending,
        }


@dataclass(slots=True)
class JobContext(PageContext):
    job: Job = field(metadata=field_help("The job as last committed (or as history knows it)."))
    detail: JobDetail = field(
        metadata=field_help("Its current tasks and timeline; ``from_history`` when only history still knows the job.")
    )
    svg: Markup = field(metadata=field_help("The SVG of the blueprint version the job ran on."))
    marks: GraphMarks | None = field(metadata=field_help("Current state, exactly the edges taken, fan-out counts."))
    retry_states: list[str] = field(metadata=field_help("States the job may be retried from (failed state first)."))
    path: list[tuple[str, int]] = field(metadata=field_help("States the job entered, with how many times."))
    rows: list[TimelineRow] = field(
        default_factory=list, metadata=field_help("The compact timeline: visits, tasks, fan-outs.")
    )
    branches: list[Branch] = field(
        default_factory=list,
        metadata=field_help("The fan-out branches of its current (or last) visit, if it fanned out."),
    )
    fan_out: BranchCounts | None = field(default=None, metadata=field_help("Those branches at a glance."))
    version: VersionDiff | None = field(
        default=None, metadata=field_help("The version it ran on, and how today's blueprint differs from it.")
    )
    graph_note: str = field(
        default="", metadata=field_help("Why the graph shown is not the one the job ran on, if so.")
    )
    hold: HoldPanel | None = field(
        default=None, metadata=field_help("Its breakpoints and, held, the hold with the context editors (live jobs).")
    )

    def to_json(self) -> dict[str, Any]:
        view = job_view(self.job, self.detail.tasks)
        timeline = self.detail.timeline
        view.update(
            visits=self.job.visits,
            from_history=self.detail.from_history,
            history_pending=self.detail.history_pending,
            blueprint_version=self.detail.blueprint_version,
            cause=self.detail.cause,
            timeline=None if timeline is None else [line_json(line) for line in timeline.lines],
            path=[_move_json(m) for m in (timeline.transitions if timeline is not None else [])],
            taken_edges={e.dom_id: e.visits for e in (self.marks.edges if self.marks else []) if e.visits},
            off_graph=[_move_json(m) for m in (self.marks.off_graph if self.marks else [])],
            fan_out=self.fan_out.to_json() if self.fan_out is not None else None,
            branches=[branch_json(b) for b in self.branches],
            version=asdict(self.version) if self.version is not None else None,
            rerun_of=self.detail.rerun_of,
            reruns=[{**rerun, "at": iso(rerun["at"])} for rerun in self.detail.reruns],
            hold=self.hold.to_json() if self.hold is not None else None,
        )
        return view


def _move_json(move: Any) -> dict[str, Any]:
    return {
        "from": move.source,
        "to": move.target,
        "kind": move.kind,
        "label": move.label,
        "condition": move.condition,
        "seq": move.seq,
        "at": iso(move.at),
        "actor": move.actor,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "task_id": attempt.task_id,
        "task_type": attempt.task_type,
        "attempt": attempt.attempt,
        "status": attempt.status,
        "params": attempt.params,
        "worker_id": attempt.worker_id,
        "dispatched_at": iso(attempt.dispatched_at),
        "taken_at": iso(attempt.taken_at),
        "answered_at": iso(attempt.answered_at),
        "result": attempt.result,
        "error": attempt.error or None,
    }


def branch_json(branch: Branch) -> dict[str, Any]:
    return {"number": branch.number, "status": branch.status, "attempts": [attempt_json(a) for a in branch.attempts]}


def visit_json(visit: Visit) -> dict[str, Any]:
    handler = visit.handler
    return {
        "state": visit.state,
        "number": visit.number,
        "entered_at": iso(visit.entered_at),
        "left_at": iso(visit.left_at),
        "duration_ms": visit.duration_ms,
        "from": visit.previous,
        "via": visit.via,
        "handler": handler.data.get("handler") if handler else None,
        "condition": handler.data.get("condition") if handler else None,
        "changes": handler.data.get("changes") if handler else None,
        "branches": [branch_json(b) for b in visit.branches],
    }


@dataclass(slots=True)
class MomentContext:
    """The job page's time travel: the job as it was right after one line of its timeline."""

    job: Job = field(metadata=field_help("The job (as it is now)."))
    moment: Moment = field(metadata=field_help("What it was then: state, status, state_history, task, branches."))
    marks: GraphMarks | None = field(metadata=field_help("The graph as it was then."))
    last_seq: int = field(metadata=field_help("The number of the timeline's last line."))

    def to_json(self) -> dict[str, Any]:
        moment = self.moment
        return {
            "job_id": self.job.id,
            "seq": moment.seq,
            "last_seq": self.last_seq,
            "line": line_json(moment.line),
            "state": moment.state,
            "status": moment.status,
            "error": moment.error,
            "visits": moment.visits,
            "path": [_move_json(m) for m in moment.transitions],
            "state_history": moment.state_history,
            "task": attempt_json(moment.task) if moment.task is not None else None,
            "branches": [branch_json(b) for b in moment.branches],
            "taken_edges": {e.dom_id: e.visits for e in (self.marks.edges if self.marks else []) if e.visits},
        }


@dataclass(slots=True)
class StateContext:
    """One state of a job: every visit, the handler that ran, its tasks, inputs and outputs."""

    job: Job = field(metadata=field_help("The job."))
    state: str = field(metadata=field_help("The state clicked."))
    visits: list[Visit] = field(metadata=field_help("Its visits of that state, oldest first."))

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job.id, "state": self.state, "visits": [visit_json(v) for v in self.visits]}


@dataclass(slots=True)
class RerunContext(PageContext):
    """Rerun a job: the state a new job starts at, and the data the job had there, to edit."""

    job: Job = field(metadata=field_help("The job to rerun (live, or as history knows it)."))
    states: list[tuple[str, int]] = field(
        metadata=field_help("Its blueprint's states, how often the job entered each.")
    )
    state: str = field(metadata=field_help("The state the new job starts at."))
    visit: int | None = field(
        metadata=field_help("Which visit of it the data is from; None: never entered (as it ended).")
    )
    visits: int = field(default=0, metadata=field_help("How often the job entered that state."))
    data: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=field_help("``initial_data`` and ``state_history`` as the job had them there.")
    )
    texts: dict[str, str] = field(
        default_factory=dict,
        metadata=field_help("The form's JSON fields: that data, or as typed when a form came back."),
    )
    errors: dict[str, str] = field(default_factory=dict, metadata=field_help("Why the form was refused, by field."))

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job.id,
            "blueprint": self.job.blueprint,
            "status": self.job.status,
            "state": self.state,
            "visit": self.visit,
            "states": [{"state": state, "entered": times} for state, times in self.states],
            **self.data,
            "errors": self.errors,
        }


@dataclass(slots=True)
class TriageItem:
    """A quarantined job in the triage table."""

    job: Job = field(metadata=field_help("The quarantined job."))
    task: Task | None = field(metadata=field_help("The held task a release sends again (None: held by its handler)."))
    signature: ErrorSignature = field(metadata=field_help("Its error signature (its group)."))


@dataclass(slots=True)
class TriageGroup:
    signature: ErrorSignature = field(metadata=field_help("What the group's jobs share: task type, code, message."))
    items: list[TriageItem] = field(metadata=field_help("Its jobs shown as rows, oldest quarantined first."))
    total: int = field(metadata=field_help("How many jobs it has (more than its rows when the table is full)."))
    jobs: list[Job] = field(default_factory=list, metadata=field_help("All its jobs, oldest quarantined first."))


@dataclass(slots=True)
class QuarantineContext(PageContext):
    groups: list[TriageGroup] = field(metadata=field_help("Quarantined jobs by error signature, largest group first."))
    total: int = field(metadata=field_help("How many jobs are quarantined."))
    arrived: str | None = field(
        metadata=field_help("The job the operator came for (``?job=``): highlighted, selected.")
    )
    states: list[str] = field(metadata=field_help("States the selected jobs may be retried from (their blueprints')."))
    held: dict[str, Any] | None = field(metadata=field_help("The arrived job's held task params, shown by the editor."))
    rate_per_s: float = field(metadata=field_help("The action form's default rate (jobs per second)."))

    def to_json(self) -> dict[str, Any]:
        groups = [
            {**g.signature.to_json(), "count": g.total, "jobs": [job.id for job in g.jobs], "shown": len(g.items)}
            for g in self.groups
        ]
        jobs = [
            {**job_summary(i.job), "signature": i.signature.key, "tasks": [task_view(i.task)] if i.task else []}
            for g in self.groups
            for i in g.items
        ]
        return {"total": self.total, "groups": groups, "jobs": jobs}


@dataclass(slots=True)
class QuarantineCounts:
    """The quarantine's live counts: sent instead of rows, so nothing moves under the operator."""

    total: int = field(metadata=field_help("Jobs quarantined now."))
    counts: dict[str, int] = field(metadata=field_help("Jobs quarantined now per signature key."))
    arrivals: int = field(metadata=field_help("Jobs quarantined since the page was drawn (announced, not inserted)."))
    left: list[str] = field(
        metadata=field_help("Ids of jobs that left quarantine since the stream began (rows dimmed).")
    )


def bulk_json(action: BulkAction) -> dict[str, Any]:
    """A bulk action's progress, as the studio's JSON twins give it."""
    return {
        "id": action.id,
        "action": action.kind.value,
        "status": action.status.value,
        "actor": action.actor,
        "options": action.options,
        "rate_per_s": action.rate_per_s,
        "total": action.total,
        "handled": action.handled,
        "done": action.done,
        "skipped": action.skipped,
        "problems": [{"job_id": job_id, "reason": reason} for job_id, reason in action.problems],
        "created_at": iso(action.created_at),
        "ended_at": iso(action.ended_at),
        "cancelled_by": action.cancelled_by,
    }


@dataclass(slots=True)
class BulkReviewContext:
    """What the confirm shows before a bulk action starts (or the form's problems)."""

    form: BulkForm = field(metadata=field_help("The action, its jobs, rate and options, and its problems by field."))
    sample: Sample | None = field(metadata=field_help("A release's edit on one selected job's held params, as a diff."))

    def to_json(self) -> dict[str, Any]:
        sample = None
        if self.sample is not None:
            found = self.sample
            changes = [{"key": c.key, "kind": c.kind, "before": c.before, "after": c.after} for c in found.changes]
            sample = {"job_id": found.job_id, "task_type": found.task_type, "changes": changes}
        return {**self.form.to_json(), "job_ids": self.form.job_ids, "sample": sample}


@dataclass(slots=True)
class BulkContext(PageContext):
    action: BulkAction = field(metadata=field_help("The bulk action and its progress."))
    at: float = field(metadata=field_help("When it was read (UNIX seconds), for its elapsed time and observed rate."))

    def to_json(self) -> dict[str, Any]:
        return bulk_json(self.action)


@dataclass(slots=True)
class BulkListContext(PageContext):
    actions: list[BulkAction] = field(metadata=field_help("Recent bulk actions, newest first."))

    def to_json(self) -> dict[str, Any]:
        return {"bulk_actions": [bulk_json(a) for a in self.actions]}


@dataclass(slots=True)
class WorkersContext(PageContext):
    workers: list[Worker] = field(
        metadata=field_help("Registered workers, alive first, with their running and inbox tasks.")
    )
    at: float = field(metadata=field_help("When the list was read (UNIX seconds)."))
    queues: list[QueueDepth] = field(
        default_factory=list, metadata=field_help("Per task type: waiting, in inboxes, taken.")
    )
    details: bool = field(
        default=True,
        metadata=field_help(
            "Hosts, loads and queues shown (operators); a client's session sees what each worker is, and its tasks."
        ),
    )

    def to_json(self) -> dict[str, Any]:
        workers = []
        for w in self.workers:
            shown = worker_view(w.record, w.load, self.at) if self.details else worker_summary(w.record, self.at)
            running = [task_view(t) for t in w.running]
            inbox = [task_view(t) for t in w.inbox]
            workers.append({**shown, "running": running, "inbox": inbox, "tasks": running})
        queues = [
            {"task_type": q.task_type, "queued": q.queued, "in_inboxes": q.in_inboxes, "running": q.running}
            for q in self.queues
        ]
        return {"workers": workers, "queues": queues if self.details else None}


@dataclass(slots=True)
class PatternsContext(PageContext):
    tones: tuple[str, ...] = field(default=TONES, metadata=field_help("The status colours."))
    samples: dict[str, Any] = field(default_factory=dict, metadata=field_help("Fixture data for every partial."))


@dataclass(slots=True)
class ErrorContext:
    """An error: a page of its own (``error.html``), or a note for ``#flash`` (``_error.html``)."""

    status: int = field(metadata=field_help("The HTTP status."))
    title: str = field(metadata=field_help("What kind of error, in a few words."))
    message: str = field(metadata=field_help("What went wrong."))


@dataclass(slots=True)
class LoginContext(PageContext):
    error: str | None = field(metadata=field_help("Why the last try was refused, if it was."))
    next: str = field(metadata=field_help("Where to go once signed in (a path inside the studio)."))
    name: str = field(metadata=field_help("The name given, to refill the form."))


PAGE_CONTEXTS: dict[str, type] = {
    "error.html": ErrorContext,
    "login.html": LoginContext,
    "blueprints.html": BlueprintsContext,
    "blueprint.html": BlueprintContext,
    "jobs.html": JobsContext,
    "job.html": JobContext,
    "quarantine.html": QuarantineContext,
    "workers.html": WorkersContext,
    "bulk.html": BulkListContext,
    "bulk_action.html": BulkContext,
    "patterns.html": PatternsContext,
    "rerun.html": RerunContext,
}
