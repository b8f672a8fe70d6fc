"""Client routes: create jobs on blueprint endpoints, read, list, cancel and operate on them."""

from __future__ import annotations

import asyncio
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ..blueprint import StateMachineBlueprint
from ..models import Job, JobStatus, now
from ..reads import Cursor, InvalidCursor, JobPage, JobQuery, parse_time
from ..runtime.watchers import Until
from .app_keys import engine_key
from .auth import client_actor, client_and_owner, client_of, owner_of
from .errors import ApiError
from .limits import check_size, job_attempt, limits_key
from .payloads import (
    VIEW_TASKS,
    Accepted,
    BlueprintInfo,
    BlueprintList,
    Cancelled,
    Dashboard,
    FailRequest,
    JobList,
    JobTimeline,
    JobView,
    JobViewList,
    OperationDone,
    ReleaseRequest,
    RetryRequest,
    WorkerList,
)
from .render import json_response, model_response
from .requests import optional_body, read_json
from .routes import Operation, Query, Routes, documented
from .views import job_summary, job_view, worker_summary, worker_view

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine

routes = Routes("client", "client")
MAX_PAGE = 500
#: Offsets beyond this are refused: page deeper with the cursor.
MAX_OFFSET = 10_000
#: Longest a client may wait for a job in one request (GET jobs/{id}?wait_s=).
MAX_WAIT_S = 60
#: Rows read per history call while skipping to an offset (history's largest page).
SKIP_PAGE = 1000
#: W3C trace context; any other ``traceparent`` is ignored (as the spec asks), not passed to workers.
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


NOT_FOUND = {404: "Unknown job, or one of another client"}
NOT_NOW = {409: "The job's status does not allow this"}


CREATE_JOB = Operation(
    "Create a job",
    tag="jobs",
    security="client",
    responses={202: Accepted},
    errors={429: "Rate limit, or the client's monthly attempts are spent (Retry-After)"},
    body_description="The job's initial_data",
)


def create_job_handler(blueprint: StateMachineBlueprint) -> Any:
    @documented(CREATE_JOB)
    async def create_job(request: web.Request) -> web.Response:
        client, owner = client_and_owner(request)
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object (the job's initial_data)")
        check_size(request.app[limits_key].limits, "initial_data", data)
        engine = request.app[engine_key]
        traceparent = request.headers.get("traceparent", "").strip().lower()
        if not TRACEPARENT.fullmatch(traceparent):
            traceparent = ""
        with job_attempt(engine.access, client):
            job = await engine.create_job(
                blueprint.name,
                data,
                client=owner,
                tracing_context={"traceparent": traceparent} if traceparent else None,
            )
        return json_response({"status": "accepted", "job_id": job.id}, 202)  # an Accepted (built on every create)

    create_job.blueprint = blueprint  # type: ignore[attr-defined]
    return create_job


@routes.get(
    "/jobs/{job_id}",
    Operation(
        "A job; with wait_s, once it ends (or changes, until=change), at most wait_s seconds later",
        {200: JobView},
        errors=NOT_FOUND,
        query=(
            Query(
                "wait_s",
                {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                "Wait up to this long for what `until` says before answering (instead of polling)",
            ),
            Query(
                "until",
                {"type": "string", "enum": [str(u) for u in Until], "default": str(Until.TERMINAL)},
                "terminal: the job is finished, failed, cancelled or quarantined; change: its status or "
                "state differs from what it was when the request came",
            ),
        ),
    ),
)
async def get_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    wait_s = _int_query(request, "wait_s", 0, 0, MAX_WAIT_S)
    until = _choice(request, "until", Until, Until.TERMINAL)
    job_id = request.match_info["job_id"]
    job = await engine.require_job(job_id, owner_of(request))
    wait_s = min(wait_s, engine.config.MAX_JOB_WAIT_SECONDS)
    if wait_s > 0:
        job = await engine.watcher.wait(job, wait_s, until, engine.get_job) or await engine.require_job(job_id)
    return json_response(await _job_view(engine, job))  # a JobView


async def _job_view(engine: OrchestratorEngine, job: Job) -> dict[str, Any]:
    """The job's view, with the first ``VIEW_TASKS`` of the tasks it waits on (or holds, quarantined)."""
    tasks = await engine.current_tasks(job, limit=VIEW_TASKS)
    return job_view(job, tasks, len(engine.reads.current_task_ids(job)))


@routes.get("/jobs/{job_id}/history", Operation("A job's timeline from history", {200: JobTimeline}, errors=NOT_FOUND))
async def job_history(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    job_id = request.match_info["job_id"]
    pending = await engine.reads.history_lag()
    timeline = await engine.job_history(job_id, owner_of(request), wait=False)
    return model_response(JobTimeline(history=timeline, history_pending=pending))


E = TypeVar("E", bound=StrEnum)
B = TypeVar("B", bound=BaseModel)


def _choice(request: web.Request, name: str, choices: type[E], default: E) -> E:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return choices(raw)
    except ValueError:
        allowed = ", ".join(str(choice) for choice in choices)
        raise ApiError(400, f"{name} must be one of: {allowed}", field=name) from None


def _int_query(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", field=name) from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"{name} must be between {minimum} and {maximum}", field=name)
    return value


LIST_JOBS = Operation(
    "Jobs, newest first (from history: every job, also those no longer live)",
    {200: JobList},
    query=(
        Query("status", {"type": "string", "enum": [str(s) for s in JobStatus]}, "Only jobs with this status"),
        Query("blueprint", {"type": "string"}, "Only jobs of this blueprint"),
        Query("state", {"type": "string"}, "Only jobs in this state"),
        Query("id", {"type": "string"}, "Only jobs whose id starts with this"),
        Query("created_after", {"type": "string"}, "Created at or after (ISO 8601 or UNIX seconds)"),
        Query("created_before", {"type": "string"}, "Created before (ISO 8601 or UNIX seconds)"),
        Query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}),
        Query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}, "Prefer cursor"),
    ),
)


def _time_query(request: web.Request, name: str) -> float | None:
    try:
        return parse_time(request.query.get(name))
    except ValueError:
        raise ApiError(400, f"{name} must be ISO 8601 or UNIX seconds", field=name) from None


@routes.get("/jobs", LIST_JOBS)
async def list_jobs(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    status = request.query.get("status")
    if status is not None and status not in set(JobStatus):
        raise ApiError(400, f"unknown status {status!r}", field="status")
    query = JobQuery(
        blueprint=request.query.get("blueprint") or None,
        status=status or None,
        state=request.query.get("state") or None,
        created_after=_time_query(request, "created_after"),
        created_before=_time_query(request, "created_before"),
        id_prefix=request.query.get("id") or None,
        client=owner_of(request),
    )
    limit = _int_query(request, "limit", 50, 1, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 0, MAX_OFFSET)
    pending = await engine.reads.history_lag()
    try:
        page = await _page(engine, query, limit, offset, request.query.get("cursor") or None)
    except InvalidCursor:
        raise ApiError(400, "cursor is not one this engine handed out", field="cursor") from None
    jobs = [job_summary(r) for r in page.rows]
    following = page.next_cursor.encode() if page.next_cursor is not None else None
    return model_response(JobList.model_validate({"jobs": jobs, "next_cursor": following, "history_pending": pending}))


async def _page(engine: OrchestratorEngine, query: JobQuery, limit: int, offset: int, cursor: str | None) -> JobPage:
    """``limit`` rows, ``offset`` rows past ``cursor``; the rows skipped are read in keyset pages of up
    to SKIP_PAGE (history's largest)."""
    after: Cursor | None = Cursor.decode(cursor) if cursor else None
    while offset > 0:
        skipped = await engine.reads.jobs_page(query, min(offset, SKIP_PAGE), after, wait=False)
        if skipped.next_cursor is None:
            return JobPage([])
        after = skipped.next_cursor
        offset -= len(skipped.rows)
    return await engine.reads.jobs_page(query, limit, after, wait=False)


@routes.post("/jobs/{job_id}/cancel", Operation("Cancel a job", {200: Cancelled}, errors={**NOT_FOUND, **NOT_NOW}))
async def cancel_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], owner_of(request))
    job = await engine.cancel_job(job.id, actor=client_actor(request))
    return model_response(Cancelled(job_id=job.id))


def _operation(summary: str, body: type[BaseModel]) -> Operation:
    """An operator's operation on one job: an optional body, the job after it."""
    return Operation(summary, {200: OperationDone}, {**NOT_FOUND, **NOT_NOW}, body=body, body_required=False)


@routes.post(
    "/jobs/{job_id}/retry",
    _operation("Run a failed, cancelled or quarantined job again (from_state: where)", RetryRequest),
)
async def retry_job(request: web.Request) -> web.Response:
    engine, job_id, body = await _operated(request, RetryRequest)
    return _done(await engine.retry_job(job_id, actor=client_actor(request), from_state=body.from_state))


@routes.post(
    "/jobs/{job_id}/release",
    _operation("Release a quarantined job, its held task's params merged with params", ReleaseRequest),
)
async def release_job(request: web.Request) -> web.Response:
    engine, job_id, body = await _operated(request, ReleaseRequest)
    if body.params is not None:
        check_size(request.app[limits_key].limits, "params", body.params)
    return _done(await engine.release_job(job_id, actor=client_actor(request), params=body.params))


@routes.post("/jobs/{job_id}/fail", _operation("Fail a job that is not terminal (or is quarantined)", FailRequest))
async def fail_job(request: web.Request) -> web.Response:
    engine, job_id, body = await _operated(request, FailRequest)
    job = await engine.fail_job(job_id, actor=client_actor(request), reason=body.reason)
    return model_response(OperationDone(status=job.status, job_id=job.id), exclude={"current_state"})


async def _operated(request: web.Request, body_type: type[B]) -> tuple[OrchestratorEngine, str, B]:
    """The engine, the id of the client's job an operation names (404 for another's), and its body."""
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], owner_of(request))
    return engine, job.id, await optional_body(request, body_type)


def _done(job: Job) -> web.Response:
    return model_response(OperationDone(status=job.status, job_id=job.id, current_state=job.state))


@routes.get("/quarantine", Operation("Quarantined jobs", {200: JobViewList}))
async def quarantine(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    jobs = await engine.list_jobs(status=JobStatus.QUARANTINED, client=owner_of(request), limit=MAX_PAGE)
    views = [await _job_view(engine, j) for j in jobs]
    return json_response({"jobs": views})  # a JobViewList of job_view()s


@routes.get("/blueprints", Operation("Blueprints served", {200: BlueprintList}))
async def list_blueprints(request: web.Request) -> web.Response:
    client_of(request)
    engine = request.app[engine_key]
    return model_response(
        BlueprintList(
            blueprints=[
                BlueprintInfo(
                    name=b.name,
                    version=b.version,
                    endpoint=endpoint_of(prefix_of(b), b),
                    states=list(b.states),
                    start_state=b.start_state,
                    end_states=b.end_states,
                    description=b.description,
                )
                for b in engine.blueprints.values()
            ]
        )
    )


GRAPH = Operation(
    "A blueprint's graph: DOT text, or SVG",
    {200: {"text/vnd.graphviz": "DOT text (format=dot)", "image/svg+xml": "SVG (format=svg)"}},
    errors={404: "Unknown blueprint", 503: "Graphviz (dot) is not installed"},
    query=(Query("format", {"type": "string", "enum": ["dot", "svg"], "default": "dot"}),),
)


@routes.get("/blueprints/{name}/graph", GRAPH)
async def blueprint_graph(request: web.Request) -> web.Response:
    client_of(request)
    engine = request.app[engine_key]
    name = request.match_info["name"]
    blueprint = engine.blueprints.get(name)
    if blueprint is None:
        raise ApiError(404, f"unknown blueprint '{name}'")
    output = request.query.get("format", "dot")
    if output == "dot":
        return web.Response(text=blueprint.render_graph() or "", content_type="text/vnd.graphviz")
    if output == "svg":
        from ..graph import GraphvizNotFound, blueprint_svg

        try:  # dot runs for tens of milliseconds: not on the event loop (blueprint_svg is thread-safe)
            svg = await asyncio.to_thread(blueprint_svg, blueprint)
        except GraphvizNotFound as exc:
            raise ApiError(503, str(exc)) from None
        return web.Response(text=svg, content_type="image/svg+xml")
    raise ApiError(400, "format must be 'dot' or 'svg'", field="format")


@routes.get(
    "/workers",
    Operation(
        "Registered workers: every detail (secrets left out) on an open API; to a client with a token, "
        "only what each worker is and whether it is alive",
        {200: WorkerList},
    ),
)
async def list_workers(request: web.Request) -> web.Response:
    owner = owner_of(request)
    engine = request.app[engine_key]
    at = now()
    workers = await engine.list_workers()
    if owner is not None:  # one client among others: their tasks and loads are not its business
        return json_response({"workers": [worker_summary(w, at) for w in workers]})  # a WorkerList
    load = await engine.reads.worker_load()
    return json_response({"workers": [worker_view(w, load.get(w.worker_id, 0), at) for w in workers]})


@routes.get(
    "/dashboard",
    Operation(
        "Counts of jobs by status (a client's own, with a token), workers, and queued tasks (open API only)",
        {200: Dashboard},
    ),
)
async def dashboard(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    return model_response(Dashboard.model_validate(await engine.reads.dashboard(owner_of(request))))


def prefix_of(blueprint: StateMachineBlueprint) -> str:
    return f"/api/{blueprint.api_version}" if blueprint.api_version else "/api"


def endpoint_of(prefix: str, blueprint: StateMachineBlueprint) -> str:
    return prefix + "/" + blueprint.api_endpoint.lstrip("/")


def setup_client_routes(app: web.Application, blueprints: list[StateMachineBlueprint]) -> None:
    """Each blueprint's create route, then the routes of every job."""
    for blueprint in blueprints:
        app.router.add_post(endpoint_of(prefix_of(blueprint), blueprint), create_job_handler(blueprint))
    routes.add_to_client_api(app)
