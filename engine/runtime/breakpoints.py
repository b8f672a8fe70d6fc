"""Breakpoints on a live engine: hold a job before a state's handler runs, until an operator acts.

A breakpoint names a state of a blueprint, for one job (``job_id``) or for every job of the
blueprint created after it was set; ``state`` ``"*"`` holds a job at whatever state it enters next
(how "step one state" is done). Breakpoints live in storage, so every engine sharing it holds jobs
at them. A held job has the status ``held``: nothing happens to it (no handler, no timer) until it
is continued, with its context edited or not, or until its breakpoint is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..models import ANY_STATE, Breakpoint, Job


def step_breakpoint(job: Job, actor: str | None = None) -> Breakpoint:
    """The breakpoint that holds ``job`` at the next state it enters (one step), then goes away.

    Its id is the job's, so a step asked twice is one breakpoint, and continuing the job removes it
    even if the process that held the job at it died before removing it."""
    return Breakpoint(job.blueprint, ANY_STATE, job_id=job.id, once=True, actor=actor, id=step_id(job.id))


def step_id(job_id: str) -> str:
    return f"step-{job_id}"


def holding(breakpoints: Iterable[Breakpoint], job: Job) -> Breakpoint | None:
    """The breakpoint that holds ``job`` before its state's handler runs, if one does and the job was
    not continued past it at this visit of its state (its ``wait`` says so then)."""
    if not breakpoints:
        return None
    passed = job.wait or {}
    if passed.get("kind") == PASSED and (passed.get("state"), passed.get("visit")) == (job.state, visit(job)):
        return None
    # A job's own breakpoints first: a step is used up before a blueprint's breakpoint holds the job.
    found = sorted((bp for bp in breakpoints if bp.holds(job)), key=lambda bp: bp.job_id is None)
    return found[0] if found else None


def held_wait(breakpoint: Breakpoint) -> dict[str, Any]:
    """``Job.wait`` of a job held at ``breakpoint``."""
    return {"kind": HELD, "breakpoint_id": breakpoint.id, "once": breakpoint.once}


def passed_wait(job: Job) -> dict[str, Any]:
    """``Job.wait`` of a job continued from its hold: no breakpoint holds it again at this visit."""
    return {"kind": PASSED, "state": job.state, "visit": visit(job)}


def visit(job: Job) -> int:
    return job.visits.get(job.state, 0)


#: ``Job.wait["kind"]`` of a held job, and of one continued from its hold.
HELD = "breakpoint"
PASSED = "breakpoint_passed"
