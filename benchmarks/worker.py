"""A lean benchmark worker speaking the HTTP worker protocol (/work/shared/PROTOCOL.md).

Registers, then runs ``--concurrency`` loops that each long-poll ``GET tasks/next`` and answer every
task at once with ``{"status": "success", "data": {"echo": params}}``; heartbeats every 20 s. No
WebSocket, no logging per task: the worker should cost as little CPU as possible, since it shares
the machine with the engine. SIGTERM or SIGINT stops it; it also stops by itself after ``--max-s``.

    python -m benchmarks.worker --url http://127.0.0.1:8080 --token T --id w1 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import aiohttp
import orjson

HEARTBEAT_EVERY_S = 20.0
#: Above the engine's WORKER_POLL_TIMEOUT_SECONDS (30 by default): the server ends each long poll.
POLL_CLIENT_TIMEOUT_S = 40.0
ERROR_PAUSE_S = 0.2


async def serve(args: argparse.Namespace, stopping: asyncio.Event) -> int:
    base = args.url.rstrip("/") + "/_worker"
    headers = {"X-Worker-Token": args.token, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
    record = {
        "worker_id": args.id,
        "worker_type": "bench",
        "supported_tasks": args.task_types.split(","),
        "max_concurrent_tasks": args.concurrency,
        "resources": {"max_concurrent_tasks": args.concurrency},
        "capabilities": {"websockets": False},
    }
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async with session.post(f"{base}/workers/register", data=orjson.dumps(record)) as resp:
            if resp.status != 200:
                sys.stderr.write(f"worker {args.id}: register failed {resp.status} {await resp.text()}\n")
                return 2
        sys.stderr.write(f"worker {args.id}: registered\n")
        next_url = f"{base}/workers/{args.id}/tasks/next"
        result_url = f"{base}/tasks/result"
        poll_timeout = aiohttp.ClientTimeout(total=POLL_CLIENT_TIMEOUT_S)

        async def poll_loop() -> None:
            while not stopping.is_set():
                try:
                    async with session.get(next_url, timeout=poll_timeout) as resp:
                        if resp.status == 204:
                            continue
                        body = await resp.read()
                        if resp.status != 200:
                            await asyncio.sleep(ERROR_PAUSE_S)
                            continue
                    task = orjson.loads(body)
                    answer = {
                        "job_id": task["job_id"],
                        "task_id": task["task_id"],
                        "worker_id": args.id,
                        "result": {"status": "success", "data": {"echo": task.get("params") or {}}},
                    }
                    async with session.post(result_url, data=orjson.dumps(answer)) as resp:
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    await asyncio.sleep(ERROR_PAUSE_S)

        async def heartbeat_loop() -> None:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), HEARTBEAT_EVERY_S)
                    return
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.patch(f"{base}/workers/{args.id}", data=b"{}") as resp:
                        await resp.read()

        loops = [asyncio.create_task(poll_loop()) for _ in range(args.concurrency)]
        loops.append(asyncio.create_task(heartbeat_loop()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), args.max_s)
        stopping.set()
        for loop_task in loops:
            loop_task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
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
    sys.exit(asyncio.run(main()))
