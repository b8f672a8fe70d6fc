"""Rerun a job from the studio: the state to start at, and the data the job had there, to edit.

``GET /jobs/{id}/rerun?state=&visit=`` shows the form filled with the job's ``initial_data`` and
``state_history`` as they were when it entered the state (its last visit, or the one chosen); the
state's select reloads the form (htmx) with that state's data. ``POST`` starts the new job through
``engine.rerun`` (the API's limits and a client's monthly attempts apply) and opens its page; a
refused form comes back with the reason beside the field it concerns.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import check_size, job_attempt
from avtomatika.api.requests import BadJson, decode_json
from avtomatika.errors import InvalidOperation
from avtomatika.reads import JobDetail
from avtomatika.studio.app_keys import data_key, engine_key, limiter_key, prefix_key
from avtomatika.studio.contexts import RerunContext
from avtomatika.studio.htmx import htmx, redirect
from avtomatika.studio.job import load_detail
from avtomatika.studio.render import json_response, render_fragment, render_page, user_of, wants_json
from avtomatika.studio.ui import pretty_json

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

#: The form's JSON fields, in the order they are checked.
DATA_FIELDS = ("initial_data", "state_history")


def _visit(raw: str | None) -> int | None:
    try:
        visit = int(raw) if raw else None
    except ValueError:
        return None
    return visit if visit is not None and visit >= 1 else None


async def _context(request: web.Request, detail: JobDetail, state: str | None, visit: int | None) -> RerunContext:
    """The form for ``state`` (default: the start state), filled with the job's data there."""
    engine = request.app[engine_key]
    job = detail.job
    blueprint = engine.blueprints.get(job.blueprint)
    states = list(blueprint.states) if blueprint is not None else []
    entered = detail.timeline.visit_counts if detail.timeline is not None else dict(job.visits)
    title = f"Rerun job {job.id[:8]} · {job.blueprint}"
    context = RerunContext(title, job, [(s, entered.get(s, 0)) for s in states], state or "", visit)
    try:
        origin = await request.app[data_key].rerun_origin(job.id, state, visit)
    except InvalidOperation as exc:
        context.errors["state"] = exc.reason
        return context
    except ApiError as exc:
        context.errors["state"] = exc.message
        return context
    context.state, context.visit = origin.state, origin.visit
    context.data = {"initial_data": origin.initial_data, "state_history": origin.state_history}
    context.texts = {name: pretty_json(value) for name, value in context.data.items()}
    context.visits = entered.get(origin.state, 0)
    return context


@routes.get("/jobs/{job_id}/rerun", name="job_rerun")
async def rerun_page(request: web.Request) -> web.StreamResponse:
    """The rerun form (a fragment when the state's select reloads it; JSON for its twin)."""
    detail = await load_detail(request, tasks=False)
    query = request.query
    context = await _context(request, detail, query.get("state") or None, _visit(query.get("visit")))
    if wants_json(request):
        return json_response(context.to_json())
    if htmx(request):
        return await render_fragment(request, "_rerun_form.html", context)
    return await render_page(request, "rerun.html", context, section="jobs")


def _parse(request: web.Request, form: Any, context: RerunContext) -> dict[str, dict[str, Any]]:
    """The edited data fields as JSON objects; errors are noted on ``context`` by field."""
    depth = request.app[engine_key].config.MAX_JSON_DEPTH
    parsed: dict[str, dict[str, Any]] = {}
    for name in DATA_FIELDS:
        text = str(form.get(name) or "")
        context.texts[name] = text
        try:
            value = decode_json(text, max_depth=depth) if text.strip() else {}
        except BadJson as exc:
            context.errors[name] = f"{name} is {exc}"
            continue
        if not isinstance(value, dict):
            context.errors[name] = f"{name} must be a JSON object ({{...}})"
            continue
        try:
            check_size(request.app[limiter_key].limits, name, value)
        except ApiError as exc:
            context.errors[name] = exc.message
            continue
        parsed[name] = value
    return parsed


@routes.post("/jobs/{job_id}/rerun", name="job_rerun_start")
async def start_rerun(request: web.Request) -> web.StreamResponse:
    """POST: start the rerun, then open the new job's page."""
    detail = await load_detail(request, tasks=False)
    form = await request.post()
    state = str(form.get("state") or "") or None
    context = await _context(request, detail, state, _visit(str(form.get("visit") or "")))
    edited = _parse(request, form, context)
    if not context.errors:
        engine, session = request.app[engine_key], user_of(request)
        try:
            with job_attempt(engine.access, engine.access.client_by_name(session.scope)):
                job = await engine.rerun(
                    detail.job.id, context.state, visit=context.visit, actor=session.actor, **edited
                )
        except InvalidOperation as exc:
            context.errors["state"] = exc.reason
        except ValidationError as exc:  # the blueprint's input model refused initial_data
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            context.errors["initial_data"] = f"{where}: {first['msg']}" if where else first["msg"]
        except ApiError as exc:  # a client's monthly attempts are spent
            context.errors["initial_data"] = exc.message
        else:
            logger.info("studio: %s reran job %s from %s as %s", session.actor, detail.job.id, job.state, job.id)
            url = f"{request.app[prefix_key]}/jobs/{job.id}"
            if wants_json(request):
                return json_response({"id": job.id, "url": url, "rerun_of": detail.job.id}, 201)
            return redirect(request, url)
    if wants_json(request):
        return json_response({"errors": context.errors}, 422)
    if htmx(request):
        return await render_fragment(request, "_rerun_form.html", context, 422)
    response = await render_page(request, "rerun.html", context, section="jobs")
    response.set_status(422)
    return response
