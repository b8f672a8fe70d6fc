"""The names of the studio's SSE events. Each name is the partial it carries, without ``_`` and ``.html``.

Pages listen with ``sse-swap="<name>"``; ``tests/test_studio_contracts.py`` checks that every name
has its partial and that every ``sse-swap`` in the templates names an event listed here.
"""

from __future__ import annotations

from enum import StrEnum


class SseEvent(StrEnum):
    NAV_COUNTS = "nav-counts"
    """Quarantine (n) and Workers (n alive) in the navigation bar; on every page."""
    BLUEPRINT_MARKS = "blueprint-marks"
    """Count badges of every blueprint's graph (blueprints page)."""
    JOB_ROW = "job-row"
    """A job's row: new rows are added to the jobs table, changed rows replaced."""
    JOB_MARKS = "job-marks"
    """The job page's graph: current state, its status colour, taken edges."""
    JOB_HEADER = "job-header"
    """The job page's header: status, age, the actions its status allows."""
    JOB_BRANCHES = "job-branches"
    """The job page's fan-out: its branches at a glance and in a table you can filter."""
    JOB_HOLD = "job-hold"
    """The job page's breakpoints: those that may hold it and, held, the hold with its context editors."""
    JOB_PANEL = "job-panel"
    """The job page's side panel: current task and progress, error, context."""
    TIMELINE = "timeline"
    """The job page's whole timeline, sent when its stream (re)connects."""
    TIMELINE_LINES = "timeline-lines"
    """Timeline lines history recorded since the last ones sent, appended to the job page's timeline."""
    TIMELINE_ROWS = "timeline-rows"
    """Rows of the job page's compact timeline (a visit, a task with its retries, a fan-out) that new
    lines changed or added; each replaces its row on the page, or is added at the end."""
    QUARANTINE_COUNTS = "quarantine-counts"
    """What is quarantined now: counts per error signature and the jobs' ids (the triage table's rows are
    never added live: the page announces new ones)."""
    WORKER_TABLE = "worker-table"
    """The workers table."""

    @property
    def partial(self) -> str:
        """The template this event carries: ``job-row`` -> ``_job_row.html``."""
        return f"_{self.value.replace('-', '_')}.html"
