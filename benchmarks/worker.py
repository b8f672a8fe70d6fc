"""A lean benchmark worker speaking the HTTP worker protocol (/work/shared/PROTOCOL.md).

Registers, then runs ``--concurrency`` loops that each long-poll ``GET tasks/next`` and answer every
task at once with ``{"status": "success", "data": {"echo": params}}``; heartbeats every 20 s. No
WebSocket, no logging per task: the worker should cost as little CPU as possible, since it shares
the machine with the engine (hence :mod:`.http_client` and uvloop, see :mod:`.loop`). Each long poll
has its own keep-alive connection, also used for the results it gets. SIGTERM or SIGINT stops it; it
also stops by itself after ``--max-s``.

    python -m benchmarks.worker --url http://127.0.0.1:8080 --token T --id w1 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import orjson

from .http_client import Connection, HttpError
from .loop import run

HEARTBEAT_EVERY_S = 20.0
#: Above the engine's WORKER_POLL_TIMEOUT_SECONDS (30 by default): the server ends each long poll.
POLL_CLIENT_TIMEOUT_S = 40.0
REQUEST_TIMEOUT_S = 10.0
ERROR_PAUSE_S = 0.2
#: What a failed request may raise: refused or reset connections, unreadable answers, timeouts.
REQUEST_ERRORS = (HttpError, OSError, TimeoutError, ValueError)


class Worker:
    """One worker: its record, its paths, and a keep-alive connection per long poll."""

    def __init__(self, args: argparse.Namespace, stopping: asyncio.Event) -> None:
        self.args, self.stopping = args, stopping
        self.base = args.url.rstrip("/")
        self.headers = {"X-Worker-Token": args.token}
        self.next_path = f"/_worker/workers/{args.id}/tasks/next"
        self.connections: list[Connection] = []

    def connect(self) -> Connection:
        connection = Connection(self.base, self.headers, REQUEST_TIMEOUT_S)
        self.connections.append(connection)
        return connection

    def record(self) -> dict[str, Any]:
        concurrency = self.args.concurrency
        return {
            "worker_id": self.args.id,
            "worker_type": "bench",
            "supported_tasks": self.args.task_types.split(","),
            "max_concurrent_tasks": concurrency,
            "resources": {"max_concurrent_tasks": concurrency},
            "capabilities": {"websockets": False},
        }

    def answer(self, task: dict[str, Any]) -> bytes:
        return orjson.dumps(
            {
                "job_id": task["job_id"],
                "task_id": task["task_id"],
                "worker_id": self.args.id,
                "result": {"status": "success", "data": {"echo": task.get("params") or {}}},
            }
        )

    async def poll_loop(self) -> None:
        """Long-poll ``tasks/next`` and answer each task at once, over one connection, until stopped."""
        connection = self.connect()
        while not self.stopping.is_set():
            try:
                response = await connection.request("GET", self.next_path, timeout_s=POLL_CLIENT_TIMEOUT_S)
                if response.status == 204:
                    continue
                if response.status != 200:
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                await connection.request("POST", "/_worker/tasks/result", self.answer(response.json()))
            except REQUEST_ERRORS:
                await asyncio.sleep(ERROR_PAUSE_S)

    async def heartbeat_loop(self, connection: Connection) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), HEARTBEAT_EVERY_S)
                return
            with contextlib.suppress(*REQUEST_ERRORS):
                await connection.request("PATCH", f"/_worker/workers/{self.args.id}", b"{}")

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


async def serve(args: argparse.Namespace, stopping: asyncio.Event) -> int:
    worker = Worker(args, stopping)
    try:
        control = worker.connect()
        response = await control.request("POST", "/_worker/workers/register", orjson.dumps(worker.record()))
        if response.status != 200:
            sys.stderr.write(f"worker {args.id}: register failed {response.status} {response.body[:200]!r}\n")
            return 2
        sys.stderr.write(f"worker {args.id}: registered\n")
        loops = [asyncio.create_task(worker.poll_loop()) for _ in range(args.concurrency)]
        loops.append(asyncio.create_task(worker.heartbeat_loop(control)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), args.max_s)
        stopping.set()
        for loop_task in loops:
            loop_task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        worker.close()
    return 0


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--id", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--task-types", default="echo")
    parser.add_argument("--max-s", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args(argv)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    return await serve(args, stopping)


if __name__ == "__main__":
    sys.exit(run(main()))
