"""Breakpoint routes: set, list and remove breakpoints; continue (or step) a held job.

Blueprint-wide breakpoints hold every client's jobs, so only an operator (an API without client
tokens) sets, lists or removes them; a client with a token works with breakpoints on its own jobs.
"""

from __future__ import annotations

from aiohttp import web

from ..models import Breakpoint
from .app_keys import engine_key
from .auth import client_actor, owner_of
from .errors import ApiError
from .limits import check_size, limits_key
from .payloads import (
    BreakpointList,
    BreakpointRemoved,
    BreakpointRequest,
    BreakpointView,
    ContinueRequest,
    OperationDone,
)
from .render import model_response
from .requests import optional_body, required_body
from .routes import Operation, Routes
from .views import breakpoint_view

routes = Routes("breakpoints", "client")
NOT_FOUND = {404: "Unknown breakpoint, job or blueprint (or one of another client)"}


async def _visible(request: web.Request) -> list[Breakpoint]:
    """The breakpoints the caller may see: every one for an operator, those of its jobs for a client."""
    engine = request.app[engine_key]
    owner = owner_of(request)
    found = await engine.breakpoints()
    if owner is None:
        return found
    mine = []
    for breakpoint in found:
        if breakpoint.job_id is not None and (job := await engine.get_job(breakpoint.job_id)) and job.client == owner:
            mine.append(breakpoint)
    return mine


@routes.get("/breakpoints", Operation("Breakpoints set (a client sees those on its own jobs)", {200: BreakpointList}))
async def list_breakpoints(request: web.Request) -> web.Response:
    return model_response(BreakpointList(breakpoints=[breakpoint_view(bp) for bp in await _visible(request)]))


@routes.post(
    "/breakpoints",
    Operation(
        "Hold a job, or every new job of a blueprint, before a state's handler runs",
        body=BreakpointRequest,
        responses={201: BreakpointView},
        errors={**NOT_FOUND, 403: "A client's token may only set breakpoints on its own jobs"},
    ),
)
async def set_breakpoint(request: web.Request) -> web.Response:
    """state '*' holds the job named by job_id at the next state it enters. A held job has the status 'held'
    until it is continued (POST /jobs/{job_id}/continue) or its breakpoint is removed.
    """
    engine = request.app[engine_key]
    owner = owner_of(request)  # who asks comes before what is asked (401 first)
    body = await required_body(request, BreakpointRequest)
    if body.job_id is not None:
        await engine.require_job(body.job_id, owner)
    elif owner is not None:
        raise ApiError(
            403, "a breakpoint on every job of a blueprint is for operators; name one of your jobs", field="job_id"
        )
    breakpoint = await engine.set_breakpoint(
        body.blueprint, body.state, job_id=body.job_id, actor=client_actor(request)
    )
    return model_response(breakpoint_view(breakpoint), status=201)


@routes.delete(
    "/breakpoints/{breakpoint_id}",
    Operation("Remove a breakpoint; the jobs it held are continued", {200: BreakpointRemoved}, errors=NOT_FOUND),
)
async def remove_breakpoint(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    breakpoint_id = request.match_info["breakpoint_id"]
    if breakpoint_id not in {bp.id for bp in await _visible(request)}:
        raise ApiError(404, f"Breakpoint '{breakpoint_id}' not found")
    continued = await engine.remove_breakpoint(breakpoint_id, actor=client_actor(request))
    return model_response(BreakpointRemoved(id=breakpoint_id, continued=[job.id for job in continued]))


@routes.post(
    "/jobs/{job_id}/continue",
    Operation(
        "Continue a held job, its initial_data or state_history replaced if given; step: hold it at its next state",
        body=ContinueRequest,
        body_required=False,
        responses={200: OperationDone},
        errors={404: "Unknown job, or one of another client", 409: "The job is not held"},
    ),
)
async def continue_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], owner_of(request))
    body = await optional_body(request, ContinueRequest)
    limits = request.app[limits_key].limits
    for name in ("initial_data", "state_history"):
        if (value := getattr(body, name)) is not None:
            check_size(limits, name, value)
    job = await engine.continue_job(
        job.id, client_actor(request), initial_data=body.initial_data, state_history=body.state_history, step=body.step
    )
    return model_response(OperationDone(status=job.status, job_id=job.id, current_state=job.state))
