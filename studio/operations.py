"""Operations on one job, by an operator: cancel, retry, release (as is or with edited params), fail.

Each is a POST (CSRF-checked and refused to viewers by the access middleware), confirmed in the page
(``hx-confirm``), and calls the engine with ``actor="operator:<name>"`` so history records who did it.
The answer is a short note for ``#flash``; the page itself follows through its SSE stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from avtomatika.api.limits import check_size
from avtomatika.api.requests import BadJson, decode_json
from avtomatika.errors import JobNotFound
from avtomatika.models import Job
from avtomatika.studio.app_keys import engine_key, limiter_key, prefix_key
from avtomatika.studio.htmx import htmx
from avtomatika.studio.middleware import StudioError
from avtomatika.studio.partial_contexts import FlashContext
from avtomatika.studio.render import json_response, render_fragment, user_of, wants_json

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

Operation = Callable[[web.Request, str, str, Any], Awaitable[Job]]


def parse_params(request: web.Request, text: str | None) -> dict[str, Any] | None:
    """Edited task params from the release form: a JSON object within the API's limits, or None when
    left empty."""
    if text is None or not text.strip():
        return None
    engine = request.app[engine_key]
    try:
        params = decode_json(text, max_depth=engine.config.MAX_JSON_DEPTH)
    except BadJson as exc:
        raise StudioError(422, "Invalid params", f"Params are {exc}") from None
    if not isinstance(params, dict):
        raise StudioError(422, "Invalid params", "Task params must be a JSON object ({...}).")
    check_size(request.app[limiter_key].limits, "params", params)
    return params


async def owned_job(request: web.Request, job_id: str) -> Job:
    """The live job, if this session may act on it; JobNotFound for another client's job too."""
    job = await request.app[engine_key].get_job(job_id)
    if job is None or not user_of(request).sees(job.client):
        raise JobNotFound(job_id)
    return job


async def _cancel(request: web.Request, job_id: str, actor: str, form: Any) -> Job:
    return await request.app[engine_key].cancel_job(job_id, actor=actor)


async def _retry(request: web.Request, job_id: str, actor: str, form: Any) -> Job:
    return await request.app[engine_key].retry_job(job_id, actor=actor, from_state=form.get("from_state") or None)


async def _release(request: web.Request, job_id: str, actor: str, form: Any) -> Job:
    params = parse_params(request, form.get("params"))
    return await request.app[engine_key].release_job(job_id, actor=actor, params=params)


async def _fail(request: web.Request, job_id: str, actor: str, form: Any) -> Job:
    reason = str(form.get("reason") or "").strip() or None
    return await request.app[engine_key].fail_job(job_id, actor=actor, reason=reason)


OPERATIONS: dict[str, tuple[Operation, str]] = {
    "cancel": (_cancel, "Cancelled"),
    "retry": (_retry, "Retried"),
    "release": (_release, "Released"),
    "fail": (_fail, "Failed"),
}


async def done(request: web.Request, message: str, jobs: list[Job], url: str | None = None) -> web.StreamResponse:
    """The answer to an operation: JSON, a note for ``#flash``, or a redirect back for a plain form."""
    if wants_json(request):
        return json_response({"message": message, "jobs": [{"id": j.id, "status": j.status} for j in jobs]})
    if htmx(request):
        return await render_fragment(request, "_flash.html", FlashContext(message, "ok"))
    raise web.HTTPSeeOther(url or request.headers.get("Referer") or f"{request.app[prefix_key]}/jobs")


@routes.post("/jobs/{job_id}/{operation}", name="job_operation")
async def operate(request: web.Request) -> web.StreamResponse:
    name = request.match_info["operation"]
    if name not in OPERATIONS:
        raise web.HTTPNotFound(text=f"No operation {name!r}")
    operation, verb = OPERATIONS[name]
    job_id = request.match_info["job_id"]
    actor = user_of(request).actor
    form = await request.post()
    await owned_job(request, job_id)
    job = await operation(request, job_id, actor, form)
    logger.info("studio: %s %s job %s", actor, name, job_id)
    where = f" from {form.get('from_state')}" if name == "retry" and form.get("from_state") else ""
    return await done(request, f"{verb} job {job_id[:8]}{where}; it is now {job.status.replace('_', ' ')}.", [job])
