"""Every route of the application x every wrong caller: the right 401/403/404, and nothing changes.

The routes are enumerated from the application's router (the API and the studio mounted on it), so
a new route cannot escape the matrix: it must be a client route (``/api``, the approval webhook), a
worker route (``/_worker``), a studio route (its own sign-in), or one of the read-only public routes
listed in :data:`EXEMPT`. Engine storage (jobs, tasks, queues, workers) is snapshotted before and
compared after every refused request, and no answer ever contains a token.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from aiohttp import web
from support.api import CLIENT_HEADER, WORKER_HEADER, Api
from support.blueprints import API_BLUEPRINTS

from avtomatika import Config, OrchestratorEngine
from avtomatika.api.app import create_app
from avtomatika.api.openapi import operation_of
from avtomatika.storage import MemoryStorage
from avtomatika.studio import setup_studio

ALICE, BOB = "alice-token-matrix", "bob-token-matrix"
W1, W2 = "w1-token-matrix", "w2-token-matrix"
GLOBAL = "global-worker-token-matrix"
STUDIO = "studio-token-matrix"
SECRETS = (ALICE, BOB, W1, W2, GLOBAL, STUDIO)

#: Public routes that read only: anyone may call them, and they change nothing.
EXEMPT = {
    ("GET", "/_public/status"),
    ("GET", "/_public/health"),
    ("GET", "/_public/metrics"),
    ("GET", "/_public/openapi.json"),
    ("GET", "/_public/docs"),
}
#: Studio paths served without a session (sign-in, static files) and the redirects to the studio.
STUDIO_OPEN = ("/studio/login", "/studio/logout", "/studio/static")
STUDIO_REDIRECTS = ("/studio/", "/studio", "/")

CASES = (
    "no token",
    "wrong token",
    "other client's token",
    "worker token on a client route",
    "client token on a worker route",
)


def _settings(tmp: Any) -> dict[str, Any]:
    clients, workers = tmp / "clients.toml", tmp / "workers.toml"
    clients.write_text(f'[alice]\ntoken = "{ALICE}"\n\n[bob]\ntoken = "{BOB}"\n')
    workers.write_text(f'[w1]\ntoken = "{W1}"\n\n[w2]\ntoken = "{W2}"\n')
    return {
        "CLIENTS_CONFIG_PATH": clients,
        "WORKERS_CONFIG_PATH": workers,
        "GLOBAL_WORKER_TOKEN": GLOBAL,
        "CLIENT_TOKEN": None,
        "STUDIO_TOKEN": STUDIO,
        "STUDIO_VIEWER_TOKEN": None,
        "EXECUTOR_CONCURRENCY": 2,
        "WORKER_POLL_TIMEOUT_SECONDS": 0.05,
        "RETRY_BACKOFF_BASE_SECONDS": 0.01,
        "LOG_FORMAT": "text",
    }


def _app(engine: OrchestratorEngine) -> web.Application:
    app = create_app(engine)
    setup_studio(app, engine)
    return app


def all_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route, the studio's sub-application included."""
    found = set()
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            for inner in resource._app.router.resources():
                for route in inner:
                    if route.method not in ("HEAD", "*"):
                        found.add((route.method, inner.canonical))  # already with the sub-application's prefix
            continue
        for route in resource:
            if route.method not in ("HEAD", "*"):
                found.add((route.method, resource.canonical))
    return sorted(found)


def _collect() -> list[tuple[str, str]]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        engine = OrchestratorEngine(MemoryStorage(), Config(**_settings(Path(tmp))))
        for blueprint in API_BLUEPRINTS:
            engine.register_blueprint(blueprint)
        return all_routes(_app(engine))


ROUTES = _collect()


def kind_of(method: str, path: str) -> str:
    if path.startswith("/api/") or path.startswith("/_public/webhooks/"):
        return "client"
    if path.startswith("/_worker/"):
        return "worker"
    if path == "/" or path.startswith("/studio"):
        return "studio"
    assert (method, path) in EXEMPT, f"{method} {path}: a new route must be a client, worker or studio route"
    return "exempt"


def test_every_route_is_classified_and_unauthenticated_ones_only_read():
    assert len(ROUTES) > 40
    kinds = {route: kind_of(*route) for route in ROUTES}
    assert {route for route, kind in kinds.items() if kind == "exempt"} == EXEMPT
    engine = OrchestratorEngine(MemoryStorage(), Config(LOG_FORMAT="text"))
    for blueprint in API_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    app = create_app(engine)
    for resource in app.router.resources():
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            operation = operation_of(route.handler)
            assert operation is not None
            if operation.security is None:
                assert route.method == "GET", resource.canonical
                assert ("GET", resource.canonical) in EXEMPT


@pytest.fixture
async def serve(aiohttp_client):
    """``await serve(tmp_path)``: an engine serving the API and the studio, as ``engine.start()`` does."""
    engines: list[OrchestratorEngine] = []

    async def make(tmp: Any) -> Api:
        engine = OrchestratorEngine(MemoryStorage(), Config(**_settings(tmp)))
        for blueprint in API_BLUEPRINTS:
            engine.register_blueprint(blueprint)
        await engine.start(http=False)
        engines.append(engine)
        return Api(await aiohttp_client(_app(engine)), engine)

    yield make
    for engine in engines:
        await engine.stop()


# -- the world each route is attacked in -------------------------------------------------------------
class World:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.jobs: dict[str, str] = {}
        self.task: dict[str, Any] = {}
        self.breakpoint = ""
        self.bulk = ""

    async def build(self) -> None:
        api = self.api
        await api.register("w1", token=W1)
        self.jobs["quarantined"] = await api.create("/api/v1/jobs/work", {"n": 1}, token=ALICE)
        task = await api.next_task("w1", token=W1)
        status, _ = await api.result(task, "w1", "failure", error={"code": "PERMANENT_ERROR"}, token=W1)
        assert status == 200
        await api.wait_job(self.jobs["quarantined"], "quarantined", token=ALICE)
        self.jobs["running"] = await api.create("/api/v1/jobs/work", {"n": 2}, token=ALICE)
        self.task = await api.next_task("w1", token=W1)
        self.jobs["waiting"] = await api.create("/api/v1/jobs/approval", token=ALICE)
        await api.wait_job(self.jobs["waiting"], "waiting_for_human", token=ALICE)
        self.breakpoint = (await api.engine.set_breakpoint(None, "done", job_id=self.jobs["running"])).id
        # A bulk action of Alice's that changes nothing (the job is not held): skipped, then finished.
        bulk = await api.engine.bulk.start("continue", [self.jobs["running"]], rate_per_s=100, actor="client:alice")
        self.bulk = bulk.id
        while (await api.engine.bulk.get(bulk.id)).status == "running":
            await asyncio.sleep(0.01)

    def path(self, template: str) -> str:
        if any(word in template for word in ("release", "retry", "/fail", "quarantine")):
            job = self.jobs["quarantined"]
        elif "approval" in template or "decide" in template:
            job = self.jobs["waiting"]
        else:
            job = self.jobs["running"]
        return (
            template.replace("{job_id}", job)
            .replace("{worker_id}", "w1")
            .replace("{name}", "work")
            .replace("{blueprint}", "work")
            .replace("{action}", "cancel")
            .replace("{breakpoint_id}", self.breakpoint)
            .replace("{bulk_id}", self.bulk)
        )

    def body(self, method: str, template: str) -> Any:
        if method not in ("POST", "PATCH", "PUT"):
            return None
        if template.endswith("/jobs/typed"):
            return {"item": "x", "quantity": 1}
        if template.endswith("/release"):
            return {"params": {"n": 5}}
        if template.endswith("/retry"):
            return {"from_state": "start"}
        if template.endswith("/fail"):
            return {"reason": "matrix"}
        if "approval" in template:
            return {"decision": "approve"}
        if template.endswith("/breakpoints"):
            return {"job_id": self.jobs["running"], "state": "start"}
        if template.endswith("/bulk"):
            return {"action": "cancel", "job_ids": [self.jobs["running"]]}
        if template.endswith("/workers/register"):
            return {"worker_id": "w1", "supported_tasks": ["echo", "more"]}
        if template.startswith("/_worker/workers/"):
            return {"load": 0.5, "status": "busy"}
        if template.endswith("/tasks/result"):
            fields = {k: self.task[k] for k in ("job_id", "task_id")}
            return {**fields, "worker_id": "w1", "result": {"status": "success", "data": {"forged": True}}}
        return {"n": 1}

    async def snapshot(self) -> dict[str, Any]:
        storage = self.api.engine.storage
        assert isinstance(storage, MemoryStorage)
        return copy.deepcopy(
            {
                "jobs": dict(storage._jobs),
                "tasks": dict(storage._tasks),
                "workers": dict(storage._workers),
                "queues": storage._queues,
                "inboxes": storage._inboxes,
                "load": storage._load,
                "breakpoints": storage._breakpoints,
                "bulks": storage._bulks,
            }
        )


def _headers(case: str, kind: str, template: str) -> list[dict[str, str]] | None:
    """The wrong callers of one case for a route of ``kind``; None where the case is the right caller."""
    if case == "no token":
        return [{}]
    if case == "wrong token":
        return [{CLIENT_HEADER: "wrong"}, {WORKER_HEADER: "wrong"}, {CLIENT_HEADER: "", WORKER_HEADER: ""}]
    if case == "other client's token":
        if kind == "client" and template.startswith("/api/") and "{job_id}" not in template and "/jobs/" in template:
            return None  # creating a job: any client is a right caller (its job is its own)
        if kind == "client":
            return [{CLIENT_HEADER: BOB}]
        if kind == "worker":
            return [{WORKER_HEADER: W2}] if template != "/_worker/ws" else None
        return [{CLIENT_HEADER: BOB, WORKER_HEADER: W2}]
    if case == "worker token on a client route":
        if kind == "worker":
            return None
        return [{WORKER_HEADER: W1}, {WORKER_HEADER: GLOBAL}, {CLIENT_HEADER: W1}, {CLIENT_HEADER: GLOBAL}]
    if case == "client token on a worker route":
        if kind == "client":
            return None
        return [{CLIENT_HEADER: ALICE}, {WORKER_HEADER: ALICE}, {WORKER_HEADER: STUDIO}]
    raise AssertionError(case)


def _expected(case: str, kind: str, method: str, template: str) -> set[int]:
    if kind == "exempt":
        return {200, 503}
    if kind == "studio":
        if method == "GET" and (template.startswith(STUDIO_OPEN) or template in STUDIO_REDIRECTS):
            return {200, 302, 303, 404}
        return {302, 303, 401, 403}
    if case == "other client's token":
        if kind == "worker":
            return {403}
        return {404} if "{job_id}" in template or _names_a_job_in_its_body(method, template) else {200}
    return {401}


def _names_a_job_in_its_body(method: str, template: str) -> bool:
    """Routes that act on a job (a breakpoint of one, a bulk action on some) named other than by ``{job_id}``."""
    if "/breakpoints" in template:
        return method != "GET"
    return "/bulk" in template and (method != "GET" or "{bulk_id}" in template)


async def _call(api: Api, kind: str, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    if kind != "studio":
        return await api.call(method, path, json=body, headers=headers)  # errors must be JSON
    async with api.http.request(method, path, json=body, headers=headers, allow_redirects=False) as response:
        return response.status, await response.text()


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_wrong_callers_are_refused_and_change_nothing(serve, tmp_path, method, template):
    kind = kind_of(method, template)
    api = await serve(tmp_path)
    world = World(api)
    await world.build()
    path, body = world.path(template), world.body(method, template)
    checked = 0
    for case in CASES:
        for headers in _headers(case, kind, template) or []:
            before = await world.snapshot()
            status, answer = await _call(api, kind, method, path, body, headers)
            assert status in _expected(case, kind, method, template), (case, headers, status, answer)
            if kind == "client" and case == "other client's token" and status == 200:
                assert not any(job_id in str(answer) for job_id in world.jobs.values()), answer
            assert await world.snapshot() == before, (case, headers)
            assert not any(secret in str(answer) for secret in SECRETS)
            checked += 1
    assert checked >= 5
    # the right caller is not refused: the matrix refuses callers, not the route
    if kind == "client":
        status, _ = await api.call(method, path, json=body, headers={CLIENT_HEADER: ALICE})
        assert status not in (401, 403, 404), status
    elif kind == "worker":
        status, _ = await api.call(method, path, json=body, headers={WORKER_HEADER: W1})
        assert status not in (401, 403, 404), status
