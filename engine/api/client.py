"""Client routes: create jobs on blueprint endpoints, read, list, cancel and operate on them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..blueprint import StateMachineBlueprint
from ..clients import ANONYMOUS
from ..models import JobStatus, now
from .auth import client_of
from .errors import ApiError
from .keys import engine_key
from .payloads import FailRequest, ReleaseRequest, RetryRequest, job_summary, job_view, worker_view
from .requests import parse, read_json

PREFIXES = ("/api/v1", "/api")
MAX_PAGE = 500


def _owner(request: web.Request) -> str | None:
    """The client whose jobs this request may see; None means every job (an open API)."""
    client = client_of(request)
    return None if client.name == ANONYMOUS else client.name


def _max_depth(request: web.Request) -> int:
    return int(request.app[engine_key].config.MAX_JSON_DEPTH)


def create_job_handler(blueprint: StateMachineBlueprint) -> Any:
    async def create_job(request: web.Request) -> web.Response:
        owner = _owner(request)
        data = await read_json(request, max_depth=_max_depth(request))
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object (the job's initial_data)")
        engine = request.app[engine_key]
        traceparent = request.headers.get("traceparent")
        job = await engine.create_job(
            blueprint.name, data, client=owner, tracing_context={"traceparent": traceparent} if traceparent else None
        )
        return web.json_response({"status": "accepted", "job_id": job.id}, status=202)

    return create_job


async def get_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], _owner(request))
    return web.json_response(job_view(job, await engine.current_tasks(job)))


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", field=name) from None
    if not 0 <= value <= maximum:
        raise ApiError(400, f"{name} must be between 0 and {maximum}", field=name)
    return value


async def list_jobs(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    status = request.query.get("status")
    if status is not None and status not in set(JobStatus):
        raise ApiError(400, f"unknown status {status!r}", field="status")
    jobs = await engine.list_jobs(
        status=status,
        blueprint=request.query.get("blueprint"),
        state=request.query.get("state"),
        client=_owner(request),
        limit=_int_query(request, "limit", 50, MAX_PAGE),
        offset=_int_query(request, "offset", 0, 10_000_000),
    )
    return web.json_response({"jobs": [job_summary(j) for j in jobs]})


async def cancel_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    owner = _owner(request)
    job = await engine.require_job(request.match_info["job_id"], owner)
    job = await engine.cancel_job(job.id, actor=f"client:{owner or ANONYMOUS}")
    return web.json_response({"status": "cancelled", "job_id": job.id})


async def retry_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    owner = _owner(request)
    job = await engine.require_job(request.match_info["job_id"], owner)
    body = parse(RetryRequest, await read_json(request, max_depth=_max_depth(request), allow_empty=True) or {})
    job = await engine.retry_job(job.id, actor=f"client:{owner or ANONYMOUS}", from_state=body.from_state)
    return web.json_response({"status": job.status, "job_id": job.id, "current_state": job.state})


async def release_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    owner = _owner(request)
    job = await engine.require_job(request.match_info["job_id"], owner)
    body = parse(ReleaseRequest, await read_json(request, max_depth=_max_depth(request), allow_empty=True) or {})
    job = await engine.release_job(job.id, actor=f"client:{owner or ANONYMOUS}", params=body.params)
    return web.json_response({"status": job.status, "job_id": job.id, "current_state": job.state})


async def fail_job(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    owner = _owner(request)
    job = await engine.require_job(request.match_info["job_id"], owner)
    body = parse(FailRequest, await read_json(request, max_depth=_max_depth(request), allow_empty=True) or {})
    job = await engine.fail_job(job.id, actor=f"client:{owner or ANONYMOUS}", reason=body.reason)
    return web.json_response({"status": job.status, "job_id": job.id})


async def quarantine(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    jobs = await engine.list_jobs(status=JobStatus.QUARANTINED, client=_owner(request), limit=MAX_PAGE)
    return web.json_response({"jobs": [job_view(j, await engine.current_tasks(j)) for j in jobs]})


async def list_blueprints(request: web.Request) -> web.Response:
    client_of(request)
    engine = request.app[engine_key]
    return web.json_response(
        {
            "blueprints": [
                {
                    "name": b.name,
                    "version": b.version,
                    "endpoint": endpoint_of(prefix_of(b), b),
                    "states": list(b.states),
                    "start_state": b.start_state,
                    "end_states": b.end_states,
                    "description": b.description,
                }
                for b in engine.blueprints.values()
            ]
        }
    )


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
        from ..graph import blueprint_svg

        return web.Response(text=blueprint_svg(blueprint), content_type="image/svg+xml")
    raise ApiError(400, "format must be 'dot' or 'svg'", field="format")


async def list_workers(request: web.Request) -> web.Response:
    client_of(request)
    engine = request.app[engine_key]
    load = await engine.storage.worker_load()
    at = now()
    return web.json_response(
        {"workers": [worker_view(w, load.get(w.worker_id, 0), at) for w in await engine.list_workers()]}
    )


async def dashboard(request: web.Request) -> web.Response:
    client_of(request)
    return web.json_response(await request.app[engine_key].dashboard())


def prefix_of(blueprint: StateMachineBlueprint) -> str:
    return f"/api/{blueprint.api_version}" if blueprint.api_version else "/api"


def endpoint_of(prefix: str, blueprint: StateMachineBlueprint) -> str:
    return prefix + "/" + blueprint.api_endpoint.lstrip("/")


def setup_client_routes(app: web.Application, blueprints: list[StateMachineBlueprint]) -> None:
    for blueprint in blueprints:
        app.router.add_post(endpoint_of(prefix_of(blueprint), blueprint), create_job_handler(blueprint))
    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/jobs", list_jobs)
        app.router.add_get(f"{prefix}/jobs/{{job_id}}", get_job)
        app.router.add_post(f"{prefix}/jobs/{{job_id}}/cancel", cancel_job)
        app.router.add_post(f"{prefix}/jobs/{{job_id}}/retry", retry_job)
        app.router.add_post(f"{prefix}/jobs/{{job_id}}/release", release_job)
        app.router.add_post(f"{prefix}/jobs/{{job_id}}/fail", fail_job)
        app.router.add_get(f"{prefix}/quarantine", quarantine)
        app.router.add_get(f"{prefix}/blueprints", list_blueprints)
        app.router.add_get(f"{prefix}/blueprints/{{name}}/graph", blueprint_graph)
        app.router.add_get(f"{prefix}/workers", list_workers)
        app.router.add_get(f"{prefix}/dashboard", dashboard)
