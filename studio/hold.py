"""The job page's breakpoints: break this job at a state, remove a breakpoint, and, once it is held,
edit its context and continue it or step it one state.

The panel is ``_job_hold.html``, on the job page and alone as the answer to each POST here (and as
the ``job-hold`` SSE event). The editors hold ``initial_data`` and ``state_history`` as JSON; what
cannot be read (not JSON, not an object, over the API's size limits, refused by the blueprint's
``input_model``) comes back in the panel as typed, with the error under its field.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from pydantic import ValidationError

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import check_size
from avtomatika.api.requests import BadJson, decode_json
from avtomatika.errors import BreakpointNotFound
from avtomatika.models import Job
from avtomatika.studio.app_keys import engine_key, limiter_key, prefix_key
from avtomatika.studio.breakpoint_data import applies_to
from avtomatika.studio.contexts import HoldPanel
from avtomatika.studio.htmx import htmx
from avtomatika.studio.operations import owned_job
from avtomatika.studio.partial_contexts import JobHoldContext
from avtomatika.studio.render import json_response, render_fragment, user_of, wants_json
from avtomatika.studio.ui import pretty_json

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

#: The context editors of a held job, in the order the panel shows them.
EDITORS = ("initial_data", "state_history")


async def hold_panel(request: web.Request, job: Job, message: str = "") -> HoldPanel:
    """``job``'s panel: the breakpoints that may hold it, and its context in the editors."""
    engine = request.app[engine_key]
    found = [bp for bp in await engine.breakpoints() if applies_to(bp, job)]
    blueprint = engine.blueprints.get(job.blueprint)
    holding_id = (job.wait or {}).get("breakpoint_id")
    return HoldPanel(
        job=job,
        breakpoints=found,
        states=list(blueprint.states) if blueprint is not None else [],
        holding=next((bp for bp in found if bp.id == holding_id), None),
        initial_data=pretty_json(job.initial_data),
        state_history=pretty_json(job.state_history),
        message=message,
    )


def parse_edits(request: web.Request, posted: MultiMapping[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The edited ``initial_data`` and ``state_history`` (JSON objects within the API's limits), and
    an error per field that could not be read."""
    max_depth = request.app[engine_key].config.MAX_JSON_DEPTH
    limits = request.app[limiter_key].limits
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in EDITORS:
        text = str(posted.get(name) or "")
        if not text.strip():
            continue  # left empty: kept as it is
        try:
            value = decode_json(text, max_depth=max_depth)
        except BadJson as exc:
            errors[name] = f"{name} is {exc}"
            continue
        if not isinstance(value, dict):
            errors[name] = f"{name} must be a JSON object ({{...}})."
            continue
        try:
            check_size(limits, name, value)
        except ApiError as exc:
            errors[name] = exc.message
            continue
        values[name] = value
    return values, errors


def _refused(panel: HoldPanel, posted: MultiMapping[Any], errors: dict[str, str]) -> HoldPanel:
    """The panel with the editors as typed and the errors under them."""
    panel.initial_data = str(posted.get("initial_data") or panel.initial_data)
    panel.state_history = str(posted.get("state_history") or panel.state_history)
    panel.errors = errors
    return panel


def input_errors(exc: ValidationError) -> str:
    """The blueprint's ``input_model`` refusing the edited ``initial_data``, in one line."""
    found = exc.errors(include_url=False, include_input=False)
    return "initial_data: " + "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in found)


async def _answer(request: web.Request, panel: HoldPanel, status: int = 200) -> web.StreamResponse:
    if wants_json(request):
        return json_response(panel.to_json(), status)
    if htmx(request):
        return await render_fragment(request, "_job_hold.html", JobHoldContext(panel), status)
    if status >= 400:
        raise web.HTTPUnprocessableEntity(text="; ".join(panel.errors.values()))
    raise web.HTTPSeeOther(f"{request.app[prefix_key]}/jobs/{panel.job.id}")


async def continue_held(request: web.Request, *, step: bool) -> web.StreamResponse:
    job = await owned_job(request, request.match_info["job_id"])
    posted = await request.post()
    edits, errors = parse_edits(request, posted)
    engine, actor = request.app[engine_key], user_of(request).actor
    if not errors:
        try:
            job = await engine.continue_job(job.id, actor, step=step, **edits)
        except ValidationError as exc:
            errors["initial_data"] = input_errors(exc)
    if errors:
        return await _answer(request, _refused(await hold_panel(request, job), posted, errors), 422)
    logger.info("studio: %s %s job %s", actor, "stepped" if step else "continued", job.id)
    edited = f" with {' and '.join(sorted(edits))} as edited" if edits else ""
    how = "Stepped: it runs this state and is held at the next one" if step else "Continued"
    return await _answer(request, await hold_panel(request, job, f"{how}{edited}."))


@routes.post("/jobs/{job_id}/continue", name="continue_job")
async def continue_job(request: web.Request) -> web.StreamResponse:
    """POST: continue the held job, its context as edited."""
    return await continue_held(request, step=False)


@routes.post("/jobs/{job_id}/step", name="step_job")
async def step_job(request: web.Request) -> web.StreamResponse:
    """POST: continue the held job one state (held again at the next state it enters)."""
    return await continue_held(request, step=True)


@routes.post("/jobs/{job_id}/breakpoints", name="set_job_breakpoint")
async def set_job_breakpoint(request: web.Request) -> web.StreamResponse:
    """POST: hold this job before the handler of the state posted."""
    job = await owned_job(request, request.match_info["job_id"])
    state = str((await request.post()).get("state") or "")
    actor = user_of(request).actor
    breakpoint = await request.app[engine_key].set_breakpoint(None, state, job_id=job.id, actor=actor)
    logger.info("studio: %s set breakpoint %s on job %s at %s", actor, breakpoint.id, job.id, state)
    return await _answer(request, await hold_panel(request, job, f"This job will be held before {state}."))


@routes.post("/jobs/{job_id}/breakpoints/{breakpoint_id}/remove", name="remove_job_bp")
async def remove_job_breakpoint(request: web.Request) -> web.StreamResponse:
    """POST: remove one of the breakpoints that may hold this job; the jobs it held are continued."""
    job = await owned_job(request, request.match_info["job_id"])
    breakpoint_id = request.match_info["breakpoint_id"]
    target = next((bp for bp in (await hold_panel(request, job)).breakpoints if bp.id == breakpoint_id), None)
    # A client's session removes only its own job's breakpoints, not its blueprint's (an operator's).
    if target is None or (user_of(request).scope is not None and target.job_id != job.id):
        raise BreakpointNotFound(breakpoint_id)
    await request.app[engine_key].remove_breakpoint(breakpoint_id, actor=user_of(request).actor)
    job = await owned_job(request, job.id)
    return await _answer(request, await hold_panel(request, job, "Breakpoint removed."))
