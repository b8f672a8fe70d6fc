"""Bulk action routes: start one operation on many jobs at a capped rate, follow it, cancel it.

An operator (an API without client tokens) may name any jobs; a client with a token only its own,
and sees only the bulk actions it started.
"""

from __future__ import annotations

from aiohttp import web

from ..models import BulkAction
from .app_keys import engine_key
from .auth import client_actor, owner_of
from .errors import ApiError
from .limits import check_size, limits_key
from .payloads import BulkList, BulkRequest, BulkView
from .render import model_response
from .requests import required_body
from .routes import Operation, Routes
from .views import iso

routes = Routes("bulk", "client")
NOT_FOUND = {404: "Unknown bulk action (or one of another client)"}
#: The request's fields that are the operation's own options.
OPTIONS = ("params", "from_state", "state", "reason")
#: Bulk actions listed at most.
MAX_LISTED = 200


def _view(action: BulkAction) -> BulkView:
    return BulkView(
        **{name: getattr(action, name) for name in _AS_RECORDED},
        action=str(action.kind),
        status=action.status.value,
        created_at=iso(action.created_at),
        ended_at=iso(action.ended_at),
        problems=[{"job_id": job_id, "reason": reason} for job_id, reason in action.problems],
    )


#: The fields a bulk action's view shows as its record holds them.
_AS_RECORDED = ("id", "total", "handled", "done", "skipped", "rate_per_s", "options", "actor", "cancelled_by")


async def _visible(request: web.Request, bulk_id: str) -> BulkAction:
    owner = owner_of(request)
    action = await request.app[engine_key].bulk.get(bulk_id)
    if owner is not None and action.actor != client_actor(request):
        raise ApiError(404, f"Bulk action '{bulk_id}' not found")
    return action


@routes.post(
    "/bulk",
    Operation(
        "Start one operation (release, retry, fail, cancel, continue, rerun) on many jobs, at most rate_per_s a second",
        body=BulkRequest,
        responses={202: BulkView},
        errors={404: "A job that is unknown, or another client's"},
    ),
)
async def start_bulk(request: web.Request) -> web.Response:
    """Each job's operation is the single-job one, recorded in its history with the actor and the bulk action's
    id. A job it no longer applies to is skipped (the first reasons are kept). GET /bulk/{bulk_id} follows its
    progress; POST /bulk/{bulk_id}/cancel stops it.
    """
    engine = request.app[engine_key]
    owner = owner_of(request)  # who asks comes before what is asked (401 first)
    body = await required_body(request, BulkRequest)
    if body.params is not None:
        check_size(request.app[limits_key].limits, "params", body.params)
    if owner is not None:
        if body.action == "rerun":  # new jobs, each a monthly attempt: one by one (POST /jobs/{id}/rerun)
            raise ApiError(403, "a rerun in bulk is for operators; rerun your jobs one by one", field="action")
        for job_id in body.job_ids:
            await engine.require_job(job_id, owner)
    action = await engine.bulk.start(
        body.action,
        body.job_ids,
        rate_per_s=body.rate_per_s,
        actor=client_actor(request),
        **{
            name: value
            for name in ("params", "from_state", "state", "reason")
            if (value := getattr(body, name)) is not None
        },
    )
    return model_response(_view(action), status=202)


@routes.get("/bulk", Operation("Bulk actions, newest first", {200: BulkList}))
async def list_bulk(request: web.Request) -> web.Response:
    owner = owner_of(request)
    found = await request.app[engine_key].storage.list_bulks(MAX_LISTED)
    if owner is not None:
        found = [action for action in found if action.actor == client_actor(request)]
    return model_response(BulkList(bulk_actions=[_view(action) for action in found]))


@routes.get("/bulk/{bulk_id}", Operation("A bulk action's progress", {200: BulkView}, errors=NOT_FOUND))
async def get_bulk(request: web.Request) -> web.Response:
    return model_response(_view(await _visible(request, request.match_info["bulk_id"])))


@routes.post(
    "/bulk/{bulk_id}/cancel",
    Operation("Stop a bulk action before its next job (the jobs done stay done)", {200: BulkView}, errors=NOT_FOUND),
)
async def cancel_bulk(request: web.Request) -> web.Response:
    action = await _visible(request, request.match_info["bulk_id"])
    action = await request.app[engine_key].bulk.cancel(action.id, client_actor(request))
    return model_response(_view(action))
