"""The rerun route: a new job started at a chosen state of an ended one, with its data there, edited.

An operator (an API without client tokens) may rerun any job; a client with a token its own, and the
rerun counts against its monthly attempts like any job it creates.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import JobNotFound
from .app_keys import engine_key
from .auth import client_actor, client_of, owner_of
from .limits import check_size, job_attempt, limits_key
from .payloads import RerunDone, RerunRequest
from .render import model_response
from .requests import optional_body
from .routes import Operation, Routes

routes = Routes("client", "client")


@routes.post(
    "/jobs/{job_id}/rerun",
    Operation(
        "Start a new job at a state of this one, with the data it had there (edited if given)",
        body=RerunRequest,
        body_required=False,
        responses={202: RerunDone},
        errors={
            404: "Unknown job, or one of another client",
            409: "The job is still in flight, never had that visit, or has no history to rebuild the data from",
            429: "The client's monthly attempts are spent",
        },
    ),
)
async def rerun_job(request: web.Request) -> web.Response:
    """The new job's initial_data and state_history are the old job's when it entered the state (its last visit
    there, or `visit`), rebuilt from its history; those given replace them. The old job is left as it is; each
    one's history names the other.
    """
    engine = request.app[engine_key]
    owner = owner_of(request)
    job_id = request.match_info["job_id"]
    known, owned_by = await engine.reads.owner(job_id)  # whose job comes before what is asked of it
    if not known or (owner is not None and owned_by != owner):
        raise JobNotFound(job_id)
    body = await optional_body(request, RerunRequest)
    limits = request.app[limits_key].limits
    for name in ("initial_data", "state_history"):
        if (value := getattr(body, name)) is not None:
            check_size(limits, name, value)
    with job_attempt(engine.access, client_of(request)):
        job = await engine.rerun(
            job_id,
            body.state,
            visit=body.visit,
            initial_data=body.initial_data,
            state_history=body.state_history,
            client=owner,
            actor=client_actor(request),
        )
    return model_response(RerunDone(job_id=job.id, current_state=job.state, rerun_of=job_id), 202)
