"""Shared pieces of the HTTP API tests: small blueprints, an ``Api`` driver and the ``make_api`` fixture.

Every test talks to a real aiohttp server in the test's loop (pytest-aiohttp's ``aiohttp_client``)
serving ``create_app(engine)`` for an engine started with ``start(http=False)``. The ``make_api``
fixture is a plugin of ``tests/conftest.py``: every test module may ask for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.api.app import create_app
from avtomatika.storage import MemoryStorage, Storage
from support.blueprints import API_BLUEPRINTS

CLIENT_HEADER = "X-Avtomatika-Token"
WORKER_HEADER = "X-Worker-Token"

#: The fields of a job's view PROTOCOL.md lists, and the extra ones the view may carry.
JOB_VIEW_FIELDS = frozenset(
    {
        "id",
        "blueprint_name",
        "status",
        "current_state",
        "initial_data",
        "state_history",
        "created_at",
        "updated_at",
        "error_message",
        "retry_count",
        "task",
    }
)
JOB_VIEW_EXTRAS = frozenset({"parent_job_id", "waiting_for", "tasks", "task_count", "approval"})
TASK_WIRE_FIELDS = frozenset({"job_id", "task_id", "type", "params", "tracing_context", "priority"})


class UnreachableStorage(MemoryStorage):
    """Memory storage whose health check fails, as an unreachable Redis would."""

    async def ping(self) -> None:
        raise ConnectionError("storage host is down")


# -- the driver ------------------------------------------------------------------------------------
@dataclass
class Api:
    """A test client of one engine's API, with the tokens it sends by default."""

    http: TestClient
    engine: OrchestratorEngine
    client_token: str | None = None
    worker_token: str | None = None
    responses: list[str] = field(default_factory=list)  # every body read through ``call``

    def client_headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.client_token
        return {CLIENT_HEADER: token} if token else {}

    def worker_headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.worker_token
        return {WORKER_HEADER: token} if token else {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send a request; returns (status, body): JSON, None for 204, text for a graph. Errors must be JSON.

        ``data`` is sent as ``application/json`` unless ``headers`` name another Content-Type.
        """
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if json is not None:
            kwargs["json"] = json
        elif data is not None:
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs["headers"]}
        async with self.http.request(method, path, **kwargs) as response:
            text = await response.text()
            self.responses.append(text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items()))
            if response.status == 204:
                assert text == ""
                return 204, None
            if response.status < 400 and response.content_type != "application/json":
                return response.status, text  # a graph
            assert response.content_type == "application/json", (response.status, response.content_type, text)
            body = await response.json()
            if response.status >= 400:
                assert isinstance(body, dict), body
                assert isinstance(body.get("error"), str), body
                assert body["error"], body
            return response.status, body

    # client side
    async def client(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.client_headers(token), **kwargs.pop("headers", {})}
        return await self.call(method, path, headers=headers, **kwargs)

    async def create(self, path: str = "/api/v1/jobs/work", data: Any = None, *, token: str | None = None) -> str:
        status, body = await self.client("POST", path, json=data if data is not None else {}, token=token)
        assert status == 202, body
        assert body["status"] == "accepted"
        return str(body["job_id"])

    async def job(self, job_id: str, *, token: str | None = None, prefix: str = "/api/v1") -> dict[str, Any]:
        status, body = await self.client("GET", f"{prefix}/jobs/{job_id}", token=token)
        assert status == 200, body
        return body

    async def wait_job(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool] | str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """Poll the job over HTTP until ``until(view)`` holds (or its status equals ``until``)."""
        check = (lambda view: view["status"] == until) if isinstance(until, str) else until
        deadline = time.monotonic() + timeout_s
        while True:
            view = await self.job(job_id, token=token)
            if check(view):
                return view
            assert time.monotonic() < deadline, f"job never reached {until!r}: {view}"
            await asyncio.sleep(0.01)

    async def engine_job(self, job_id: str) -> dict[str, Any]:
        """The stored job, read from the engine itself (to check nothing changed)."""
        job = await self.engine.get_job(job_id)
        assert job is not None
        return job.to_dict()

    # worker side
    async def worker(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.worker_headers(token), **kwargs.pop("headers", {})}
        return await self.call(method, path, headers=headers, **kwargs)

    async def register(
        self, worker_id: str, tasks: list[str] | None = None, *, token: str | None = None, **extra: Any
    ) -> None:
        record = {"worker_id": worker_id, "supported_tasks": ["echo"] if tasks is None else tasks, **extra}
        status, body = await self.worker("POST", "/_worker/workers/register", json=record, token=token)
        assert status == 200, body
        assert body["status"] == "registered"

    async def next_task(self, worker_id: str, *, token: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
        """The worker's next task, long-polling again on 204 until ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = await self.worker("GET", f"/_worker/workers/{worker_id}/tasks/next", token=token)
            if status != 204 or time.monotonic() > deadline:
                break
        assert status == 200, (status, body)
        return body

    async def attached(self, worker_id: str, timeout_s: float = 5.0) -> None:
        """Wait until the worker's WebSocket is attached: the server does it just after the handshake."""
        deadline = time.monotonic() + timeout_s
        while not self.engine.channels.connected(worker_id):
            assert time.monotonic() < deadline, f"worker {worker_id}'s WebSocket never attached"
            await asyncio.sleep(0.005)

    async def result(
        self,
        task: dict[str, Any],
        worker_id: str,
        status: str = "success",
        *,
        data: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        result: dict[str, Any] = {"status": status}
        if data is not None:
            result["data"] = data
        if error is not None:
            result["error"] = error
        body = {"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": worker_id, "result": result}
        return await self.worker("POST", "/_worker/tasks/result", json=body, token=token)

    async def take(self, job_path: str = "/api/v1/jobs/work", data: Any = None, worker_id: str = "w1") -> tuple:
        """Register ``worker_id``, create a job and let the worker take its task: (job_id, task)."""
        await self.register(worker_id)
        job_id = await self.create(job_path, data)
        task = await self.next_task(worker_id)
        assert task["job_id"] == job_id
        return job_id, task

    async def quarantined(self, worker_id: str = "w1", data: Any = None) -> tuple[str, dict[str, Any]]:
        """A work job quarantined by its worker's PERMANENT_ERROR, posted over HTTP: (job_id, task)."""
        job_id, task = await self.take(data=data, worker_id=worker_id)
        status, body = await self.result(
            task, worker_id, "failure", error={"code": "PERMANENT_ERROR", "message": "model file is corrupt"}
        )
        assert status == 200, body
        await self.wait_job(job_id, "quarantined")
        return job_id, task


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(aiohttp_client: Any) -> AsyncIterator[MakeApi]:
    """``await make_api(*blueprints, storage=..., studio=False, **config)``: an engine serving its API
    (and the studio, with ``studio=True``) to a test client.

    Blueprints default to all of this module's; config defaults keep tests fast and ignore tokens
    from the environment. Engines are stopped at teardown.
    """
    engines: list[OrchestratorEngine] = []

    async def make(
        *blueprints: StateMachineBlueprint,
        storage: Storage | None = None,
        client_token: str | None = None,
        worker_token: str | None = None,
        studio: bool = False,
        **settings: Any,
    ) -> Api:
        defaults: dict[str, Any] = {
            "EXECUTOR_CONCURRENCY": 4,
            "WORKER_POLL_TIMEOUT_SECONDS": 3,
            "RETRY_BACKOFF_BASE_SECONDS": 0.01,
            "CLIENT_TOKEN": None,
            "GLOBAL_WORKER_TOKEN": None,
            "CLIENTS_CONFIG_PATH": None,
            "WORKERS_CONFIG_PATH": None,
            "LOG_FORMAT": "text",
        }
        engine = OrchestratorEngine(storage or MemoryStorage(), Config(**{**defaults, **settings}))
        for blueprint in blueprints or API_BLUEPRINTS:
            engine.register_blueprint(blueprint)
        await engine.start(http=False)
        engines.append(engine)
        app = create_app(engine)
        if studio:
            from avtomatika.studio import setup_studio

            setup_studio(app, engine)
        http = await aiohttp_client(app)
        return Api(http, engine, client_token, worker_token)

    yield make
    for engine in engines:
        await engine.stop()
