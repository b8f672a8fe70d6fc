"""Partial contexts: what each ``_`` partial receives, rendered alone (htmx fragment, SSE event) or included.

A partial rendered with a page's context (``_job_header.html`` with :class:`JobContext`) declares that
context; a partial rendered with names of its own declares a small dataclass here. A page that includes
a partial must hold (or bind, by ``{% with %}`` or ``{% for %}``) every field of the partial's context
that has no default. ``tests/test_studio_contracts.py`` checks all of it against the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avtomatika.models import Job
from avtomatika.reads import Branch, BranchCounts, JobDetail, JobRow, Line, NavCounts, Timeline, TimelineRow
from avtomatika.studio.contexts import (
    BlueprintBreakpoints,
    BlueprintCard,
    BlueprintContext,
    BlueprintStateContext,
    BulkContext,
    BulkReviewContext,
    ErrorContext,
    HoldPanel,
    JobContext,
    JobsContext,
    MomentContext,
    QuarantineContext,
    QuarantineCounts,
    RerunContext,
    StateContext,
    WorkersContext,
    field_help,
)
from avtomatika.studio.marks import GraphMarks


@dataclass(slots=True)
class FlashContext:
    """A short note for ``#flash``: what an operation did."""

    message: str = field(metadata=field_help("The note."))
    tone: str = field(metadata=field_help("ok or error: its colour."))


@dataclass(slots=True)
class NavCountsContext:
    counts: NavCounts = field(metadata=field_help("Quarantined jobs and alive workers, for the navigation bar."))


@dataclass(slots=True)
class JobRowContext:
    row: JobRow = field(metadata=field_help("The job's row."))
    new: bool = field(default=False, metadata=field_help("Whether the jobs table adds it (a job created since)."))


@dataclass(slots=True)
class GraphMarksContext:
    marks: GraphMarks = field(metadata=field_help("What static/studio.js lays over one drawn graph."))


@dataclass(slots=True)
class BlueprintMarksContext:
    all_marks: list[GraphMarks] = field(metadata=field_help("The marks of every blueprint graph on the page."))


@dataclass(slots=True)
class BlueprintCardContext:
    card: BlueprintCard = field(metadata=field_help("The blueprint, with its graph."))
    graph_mode: str = field(
        default="counts", metadata=field_help("What a click on a state does: counts (its jobs) or breakpoints.")
    )


@dataclass(slots=True)
class BranchesContext:
    branches: list[Branch] = field(metadata=field_help("A fan-out's branches."))
    counts: BranchCounts | None = field(metadata=field_help("Those branches at a glance."))
    table_id: str = field(metadata=field_help("The table's id, for its filters."))


@dataclass(slots=True)
class StatePanelContext:
    panel: BlueprintStateContext = field(metadata=field_help("A state clicked on a blueprint's graph."))


@dataclass(slots=True)
class JobHoldContext:
    hold: HoldPanel | None = field(metadata=field_help("The job's breakpoints and, held, the hold (None: ended)."))


@dataclass(slots=True)
class TimelineLinesContext:
    lines: list[Line] = field(metadata=field_help("The lines to show (all of them, or those new since the last sent)."))
    timeline: Timeline = field(metadata=field_help("The timeline they belong to."))
    t0: float = field(metadata=field_help("When the job was created, for times since."))


@dataclass(slots=True)
class TimelineRowsContext:
    rows: list[TimelineRow] = field(metadata=field_help("Rows of the compact timeline."))
    detail: JobDetail = field(metadata=field_help("The job's tasks and timeline."))
    job: Job = field(metadata=field_help("The job."))
    new: bool = field(default=False, metadata=field_help("Whether rows not on the page yet are added (live)."))


#: Every partial and the context it is rendered with; ``_macros.html`` and ``_line.html`` hold macros only.
PARTIAL_CONTEXTS: dict[str, type] = {
    "_blueprint_breakpoints.html": BlueprintBreakpoints,
    "_blueprint_card.html": BlueprintCardContext,
    "_blueprint_marks.html": BlueprintMarksContext,
    "_branches.html": BranchesContext,
    "_bulk_progress.html": BulkContext,
    "_bulk_review.html": BulkReviewContext,
    "_error.html": ErrorContext,
    "_flash.html": FlashContext,
    "_graph_marks.html": GraphMarksContext,
    "_job_branches.html": JobContext,
    "_job_header.html": JobContext,
    "_job_hold.html": JobHoldContext,
    "_job_marks.html": JobContext,
    "_job_panel.html": JobContext,
    "_job_reruns.html": JobContext,
    "_job_row.html": JobRowContext,
    "_job_rows.html": JobsContext,
    "_moment.html": MomentContext,
    "_nav_counts.html": NavCountsContext,
    "_pager_cell.html": JobsContext,
    "_quarantine_counts.html": QuarantineCounts,
    "_rerun_form.html": RerunContext,
    "_start_form.html": BlueprintContext,
    "_state_breakpoint.html": StatePanelContext,
    "_state_visits.html": StateContext,
    "_timeline.html": JobContext,
    "_timeline_lines.html": TimelineLinesContext,
    "_timeline_rows.html": TimelineRowsContext,
    "_triage_form.html": QuarantineContext,
    "_worker_table.html": WorkersContext,
}
