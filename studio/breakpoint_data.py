"""Breakpoints as pages show them: as JSON, drawn on a graph, and those a session may see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from avtomatika.api.views import breakpoint_view
from avtomatika.models import ANY_STATE, Breakpoint, Job

from .graphs import GraphMarks
from .keys import engine_key
from .render import user_of


def breakpoint_json(breakpoint: Breakpoint) -> dict[str, Any]:
    """A breakpoint as the studio's JSON twins show it (as the API does)."""
    return breakpoint_view(breakpoint).model_dump(mode="json")


def applies_to(breakpoint: Breakpoint, job: Job) -> bool:
    """Whether ``breakpoint`` may hold ``job`` (at some state): its own, or its blueprint's set before
    the job was created (a blueprint's breakpoint holds the jobs created after it)."""
    if breakpoint.blueprint != job.blueprint:
        return False
    return breakpoint.job_id == job.id if breakpoint.job_id is not None else job.created_at >= breakpoint.created_at


async def visible_breakpoints(request: web.Request, blueprint: str | None = None) -> list[Breakpoint]:
    """The breakpoints this session may see (of ``blueprint`` when given): every one for an operator,
    those of its own jobs for a client's session."""
    engine, session = request.app[engine_key], user_of(request)
    found = [bp for bp in await engine.breakpoints() if blueprint is None or bp.blueprint == blueprint]
    if session.scope is None:
        return found
    mine = []
    for breakpoint in found:
        job = await engine.get_job(breakpoint.job_id) if breakpoint.job_id is not None else None
        if job is not None and session.sees(job.client):
            mine.append(breakpoint)
    return mine


def mark_breakpoints(marks: GraphMarks, breakpoints: Iterable[Breakpoint]) -> GraphMarks:
    """``marks`` with each state that has a breakpoint classed ``breakpoint`` (and said so in its tooltip)."""
    by_state: dict[str, list[Breakpoint]] = {}
    for breakpoint in breakpoints:
        if breakpoint.state != ANY_STATE:
            by_state.setdefault(breakpoint.state, []).append(breakpoint)
    for node in marks.nodes:
        if here := by_state.get(node.state):
            node.classes.append("breakpoint")
            whose = ", ".join("this job" if bp.job_id else "every new job" for bp in here)
            node.title = f"{node.title}\nbreakpoint: holds {whose} before its handler runs"
    return marks
