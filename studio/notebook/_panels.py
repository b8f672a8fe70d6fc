"""HTML of the step debugger's panels: the header, and what the next step will do and receive."""

from __future__ import annotations

from avtomatika.blueprint import Problem
from avtomatika.debugger.preview import AGGREGATION_SHAPE, Preview
from avtomatika.models import Job, JobStatus

from . import _render

RUNNABLE = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.AWAITING_RETRY)


def header_html(name: str, job: Job | None, steps: int, url: str | None, errors: int) -> str:
    """Blueprint, job, status, state and step; an invalid blueprint says so first."""
    esc = _render.esc
    parts = [f"<b>{esc(name)}</b>"]
    if errors:
        parts.append(
            f"<span class='badge tone-failed'>invalid blueprint</span> <span class='error'>{errors} "
            f"error{'s' if errors != 1 else ''}: stepping is off until fixed</span>"
        )
    if job is None:
        parts.append("<span class='muted'>no job yet</span>" if errors else "<span class='muted'>starting…</span>")
        return " · ".join(parts)
    parts += [
        f"job <code>{esc(job.id[:8])}</code>",
        _render.badge(job.status),
        f"state <b class='current-state'>{esc(job.state)}</b>",
        f"step {steps}",
    ]
    if url:
        parts.append(f"serving <a href='{esc(url)}/studio/jobs/{esc(job.id)}' target='_blank'>{esc(url)}</a>")
    return " · ".join(parts)


def now_html(job: Job | None, coming: Preview | None, problems: list[Problem]) -> str:
    """The next step (handler, or why none) and the context it will receive."""
    errors = [p for p in problems if p.severity == "error"]
    parts = [_render.problems_html(problems)] if errors else []
    if job is None:
        return "".join(parts)
    esc = _render.esc
    if job.status in RUNNABLE and coming is not None:
        if coming.handler:
            parts.append(
                f"<h4>Next step</h4><div>state <b>{esc(job.state)}</b> runs <code>{esc(coming.handler)}</code></div>"
            )
        else:
            parts.append(f"<h4>Next step</h4><div class='error'>{esc(coming.problem)}</div>")
        if job.error and job.status == JobStatus.AWAITING_RETRY:
            parts.append(f"<div class='warning'>The handler raised: {esc(job.error)}. Step runs it again.</div>")
    else:
        parts.append(f"<h4>Now</h4><div>{_render.badge(job.status)} {esc(job.error or '')}</div>")
    inputs = coming.inputs if coming is not None else {}
    parts.append("<h4>Context</h4>")
    for name in ("initial_data", "state_history", "aggregation_results", "client"):
        if name in inputs:
            note = f" <span class='muted'>{esc(AGGREGATION_SHAPE)}</span>" if name == "aggregation_results" else ""
            parts.append(f"<div class='muted'>{name}{note}</div>{_render.json_block(inputs[name])}")
    if not inputs:
        parts.append(f"<div class='muted'>state_history</div>{_render.json_block(job.state_history)}")
    return "".join(parts)
