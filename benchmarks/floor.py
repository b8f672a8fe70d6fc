"""The floor under the figures: the harness's requests answered by aiohttp alone, no engine behind them.

``python -m benchmarks --storage floor`` runs the workloads against this server instead of the engine:
the same process layout, load generator, workers, URLs and JSON, served by a bare aiohttp
application on the same event loop as the engine (uvloop where installed), with no access log,
middleware, authentication, validation, blueprint, storage layer or history. A job is a dict entry;
a ``bench_chain`` job is finished as soon as it is created; the other blueprints' tasks wait in a
deque for the workers' long polls. Whatever the engine adds to a request, this server does not do,
so its jobs/s is the most any engine served by aiohttp in one process can reach on this machine
with this harness, and its CPU per job the part of the engine's that is aiohttp's::

    python -m benchmarks.floor --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from avtomatika.server import loops

#: Longest a worker's ``tasks/next`` waits for a task before it is answered 204.
POLL_TIMEOUT_S = 20.0
#: The task type the benchmark's workers serve; W4's jobs ask for another, so they wait for good.
SERVED_TASK_TYPE = "echo"


@dataclass(slots=True)
class FloorJob:
    """A job: its status, and how many of its tasks are not answered yet."""

    status: str
    open_tasks: int = 0


class Floor:
    """Jobs in a dict, tasks in a deque, and the long polls waiting for them."""

    def __init__(self) -> None:
        self.jobs: dict[str, FloorJob] = {}
        self.tasks: deque[dict[str, Any]] = deque()
        self.polls: deque[asyncio.Future[dict[str, Any]]] = deque()
        self.workers: list[str] = []

    def create(self, blueprint: str, body: dict[str, Any]) -> str:
        job_id = str(uuid.uuid4())
        if blueprint == "bench_chain":
            self.jobs[job_id] = FloorJob("finished")
        elif body.get("task_type", SERVED_TASK_TYPE) != SERVED_TASK_TYPE:
            self.jobs[job_id] = FloorJob("waiting_for_worker")
        else:
            count = int(body.get("count", 1)) if blueprint == "bench_fanout" else 1
            self.jobs[job_id] = FloorJob("waiting_for_worker", count)
            for _ in range(count):
                self.give({"job_id": job_id, "task_id": str(uuid.uuid4()), "type": SERVED_TASK_TYPE, "params": body})
        return job_id

    def give(self, task: dict[str, Any]) -> None:
        while self.polls:
            poll = self.polls.popleft()
            if not poll.done():
                poll.set_result(task)
                return
        self.tasks.append(task)

    async def take(self) -> dict[str, Any] | None:
        if self.tasks:
            return self.tasks.popleft()
        poll: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.polls.append(poll)
        try:
            return await asyncio.wait_for(poll, POLL_TIMEOUT_S)
        except TimeoutError:
            return None

    def result(self, job_id: str) -> None:
        job = self.jobs[job_id]
        job.open_tasks -= 1
        if job.open_tasks <= 0:
            job.status = "finished"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def application() -> web.Application:
    floor = Floor()

    async def create_job(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        return _json({"job_id": floor.create(request.match_info["blueprint"], body), "status": "accepted"}, 202)

    async def job_status(request: web.Request) -> web.Response:
        job = floor.jobs.get(request.match_info["job_id"])
        if job is None:
            return _json({"error": "not found"}, 404)
        return _json({"id": request.match_info["job_id"], "status": job.status})

    async def dashboard(request: web.Request) -> web.Response:
        return _json({"jobs": {"by_status": dict(Counter(job.status for job in floor.jobs.values()))}})

    async def register(request: web.Request) -> web.Response:
        floor.workers.append(orjson.loads(await request.read())["worker_id"])
        return _json({"status": "registered"})

    async def workers(request: web.Request) -> web.Response:
        return _json({"workers": [{"worker_id": worker_id} for worker_id in floor.workers]})

    async def heartbeat(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def next_task(request: web.Request) -> web.Response:
        task = await floor.take()
        return web.Response(status=204) if task is None else _json(task)

    async def task_result(request: web.Request) -> web.Response:
        floor.result(orjson.loads(await request.read())["job_id"])
        return _json({"status": "accepted"})

    app = web.Application()
    app.router.add_get("/_public/status", heartbeat)
    app.router.add_post("/api/v1/jobs/{blueprint}", create_job)
    app.router.add_get("/api/v1/jobs/{job_id}", job_status)
    app.router.add_get("/api/v1/dashboard", dashboard)
    app.router.add_get("/api/v1/workers", workers)
    app.router.add_post("/_worker/workers/register", register)
    app.router.add_patch("/_worker/workers/{worker_id}", heartbeat)
    app.router.add_get("/_worker/workers/{worker_id}/tasks/next", next_task)
    app.router.add_post("/_worker/tasks/result", task_result)
    return app


async def serve(host: str, port: int) -> None:
    """Serve until cancelled (Ctrl-C, or SIGINT from the harness)."""
    runner = web.AppRunner(application(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        loops.run(serve(args.host, args.port), "auto")


if __name__ == "__main__":
    main()
