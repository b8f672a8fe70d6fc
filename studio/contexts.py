"""Page contexts: what each template receives, one dataclass per page, every field documented.

A handler builds its context once and renders it as a page, as a fragment, or as JSON
(``to_json``). ``tests/test_studio_contracts.py`` checks that each template uses only documented
fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from ..api.payloads import iso, job_summary, job_view, task_view, worker_summary, worker_view
from ..models import Job
from .data import JobDetail, JobQuery, JobRow, TimelineLine, WorkerView
from .forms import StartForm
from .graphs import GraphMarks
from .ui import TONES


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(slots=True)
class BlueprintCard:
    """One blueprint as the blueprints page shows it."""

    name: str = field(metadata=_help("The blueprint's name."))
    description: str = field(metadata=_help("Its description, may be empty."))
    version: str = field(metadata=_help("Hash of its graph; the SVG is cached per version."))
    svg: Markup = field(metadata=_help("The cached inline SVG."))
    marks: GraphMarks = field(metadata=_help("Count badges per state."))
    states: list[str] = field(metadata=_help("Its states, in registration order."))
    has_input_model: bool = field(metadata=_help("Whether the start form is built from a pydantic model."))

    def to_json(self) -> dict[str, Any]:
        counts = {n.state: n.count for n in self.marks.nodes}
        return {"name": self.name, "description": self.description, "version": self.version, "counts": counts}


@dataclass(slots=True)
class BlueprintsContext:
    title: str = field(metadata=_help("Page title."))
    cards: list[BlueprintCard] = field(metadata=_help("Every registered blueprint."))

    def to_json(self) -> dict[str, Any]:
        return {"blueprints": [card.to_json() for card in self.cards]}


@dataclass(slots=True)
class BlueprintContext:
    title: str = field(metadata=_help("Page title."))
    card: BlueprintCard = field(metadata=_help("The blueprint, with its graph."))
    form: StartForm = field(metadata=_help("The start form, with values and inline errors after a failed try."))

    def to_json(self) -> dict[str, Any]:
        return {**self.card.to_json(), "states": self.card.states, "form": self.form.to_json()}


@dataclass(slots=True)
class JobsContext:
    title: str = field(metadata=_help("Page title."))
    query: JobQuery = field(metadata=_help("The filters in force."))
    filters: dict[str, str] = field(metadata=_help("The filter form's raw values, to refill it."))
    rows: list[JobRow] = field(metadata=_help("This page of jobs, newest first."))
    next_url: str | None = field(metadata=_help("URL of the next (older) page; None on the last page."))
    first_page: bool = field(metadata=_help("Whether this is the newest page (live rows are added only there)."))
    blueprints: list[str] = field(metadata=_help("Blueprint names, for the filter."))
    states: list[str] = field(metadata=_help("State names (of the chosen blueprint, or all), for the filter."))
    statuses: list[str] = field(metadata=_help("Every job status, for the filter."))
    live_query: str = field(metadata=_help("The filters as a query string, for the SSE stream."))
    source: str = field(metadata=_help("Where the list comes from: engine (live storage) or history."))
    history_pending: int = field(
        metadata=_help("Events not yet in history when the list was read (it may miss that many changes).")
    )

    def to_json(self) -> dict[str, Any]:
        cursor = self.next_url.split("cursor=", 1)[1] if self.next_url and "cursor=" in self.next_url else None
        return {
            "jobs": [_row_json(r) for r in self.rows],
            "next_cursor": cursor,
            "source": self.source,
            "history_pending": self.history_pending,
        }


def _row_json(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "blueprint_name": row.blueprint,
        "status": row.status,
        "current_state": row.state,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "error_message": row.error,
    }


@dataclass(slots=True)
class JobContext:
    title: str = field(metadata=_help("Page title."))
    job: Job = field(metadata=_help("The job as last committed."))
    detail: JobDetail = field(
        metadata=_help("Its current tasks and timeline; ``from_history`` when only history still knows the job.")
    )
    svg: Markup = field(metadata=_help("The blueprint's cached SVG."))
    marks: GraphMarks | None = field(metadata=_help("Current state and taken edges; None for an unknown blueprint."))
    retry_states: list[str] = field(metadata=_help("States the job may be retried from (failed state first)."))
    path: list[tuple[str, int]] = field(metadata=_help("States the job entered, with how many times."))

    def to_json(self) -> dict[str, Any]:
        view = job_view(self.job, self.detail.tasks)
        view["visits"] = self.job.visits
        view["from_history"] = self.detail.from_history
        view["history_pending"] = self.detail.history_pending
        view["timeline"] = None if self.detail.timeline is None else [_line_json(x) for x in self.detail.timeline]
        return view


def _line_json(line: TimelineLine) -> dict[str, Any]:
    return {"at": iso(line.at), "kind": line.kind, "state": line.state, "status": line.status, "data": line.data}


@dataclass(slots=True)
class QuarantineGroup:
    error: str = field(metadata=_help("The error the jobs share."))
    items: list[JobDetail] = field(metadata=_help("Quarantined jobs with their held tasks."))


@dataclass(slots=True)
class QuarantineContext:
    title: str = field(metadata=_help("Page title."))
    groups: list[QuarantineGroup] = field(metadata=_help("Quarantined jobs grouped by error."))
    total: int = field(metadata=_help("How many jobs are quarantined."))

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": [
                {**job_summary(d.job), "tasks": [task_view(t) for t in d.tasks]} for g in self.groups for d in g.items
            ]
        }


@dataclass(slots=True)
class WorkersContext:
    title: str = field(metadata=_help("Page title."))
    workers: list[WorkerView] = field(metadata=_help("Registered workers, alive first."))
    at: float = field(metadata=_help("When the list was read (UNIX seconds)."))
    details: bool = field(
        default=True,
        metadata=_help(
            "Hosts and loads shown (operators); a client's session sees what each worker is, and its tasks."
        ),
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [
                {
                    **(worker_view(w.record, w.load, self.at) if self.details else worker_summary(w.record, self.at)),
                    "tasks": [task_view(t) for t in w.tasks],
                }
                for w in self.workers
            ]
        }


@dataclass(slots=True)
class PatternsContext:
    title: str = field(metadata=_help("Page title."))
    tones: tuple[str, ...] = field(default=TONES, metadata=_help("The status colours."))
    samples: dict[str, Any] = field(default_factory=dict, metadata=_help("Fixture data for every partial."))


PAGE_CONTEXTS: dict[str, type] = {
    "blueprints.html": BlueprintsContext,
    "blueprint.html": BlueprintContext,
    "jobs.html": JobsContext,
    "job.html": JobContext,
    "quarantine.html": QuarantineContext,
    "workers.html": WorkersContext,
    "patterns.html": PatternsContext,
}
