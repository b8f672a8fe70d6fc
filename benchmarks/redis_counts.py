"""Redis commands per job and redis-server memory per waiting job, in process, by command and by key.

Figures that do not move with the machine's load (``INFO commandstats``, ``INFO memory``,
``MEMORY USAGE``), with a breakdown the served benchmark does not print. The engine of
``benchmarks/app.py`` runs in this process on ``RedisStorage`` against a throwaway redis-server (no
HTTP, so no client polls: the served W1 adds ~1 command per poll)::

    python -m benchmarks.redis_counts                  # W1 and W2: 50 jobs each, after 5 warm-up ones
    python -m benchmarks.redis_counts --workloads W3 --jobs 5   # W3: 200 tasks a job
    python -m benchmarks.redis_counts --waiting 5000   # and redis-server memory per waiting job

- W1 / W2: ``CONFIG RESETSTAT``, the jobs one after the other (as ``benchmarks.instructions`` runs
  them), a second for background work, then ``INFO commandstats`` over the jobs (a script's own
  commands counted, as in the served figure).
- ``--waiting N``: ``used_memory`` before and after N ``bench_echo`` jobs of a task type no worker
  serves, all waiting, over N; then ``MEMORY USAGE`` of every key, by kind of key (ids replaced by
  ``<id>``), with its encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from typing import Any

from . import instructions
from .loop import run
from .procs import redis_server

#: What one job of each workload runs (as ``benchmarks.instructions`` runs it).
WORKLOADS = {"W1": instructions._chain, "W2": instructions._echo, "W3": instructions._fanout}
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WARMUP = 5


def _client(url: str) -> Any:
    import redis

    return redis.Redis(unix_socket_path=url.removeprefix("unix://"))


async def _commands(engine: Any, client: Any, workload: str, jobs: int) -> None:
    finished: asyncio.Queue[str] = asyncio.Queue()
    engine.events.subscribe(lambda event: instructions._on_end(event, finished), remote=False)
    one = WORKLOADS[workload]
    for _ in range(WARMUP):
        await one(engine, finished)
    await asyncio.sleep(0.5)
    client.config_resetstat()
    for _ in range(jobs):
        await one(engine, finished)
    await asyncio.sleep(1.0)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
    calls.pop("config|resetstat", None)
    print(f"{workload}: {sum(calls.values()) / jobs:.1f} Redis commands per job ({jobs} jobs)")
    for name, n in sorted(calls.items(), key=lambda item: -item[1]):
        print(f"    {name:<16} {n / jobs:6.2f}")


async def _memory(engine: Any, client: Any, jobs: int) -> None:
    data = {"task_type": "nobody-serves-this"}
    for _ in range(WARMUP):
        await engine.create_job("bench_echo", data)
    await asyncio.sleep(1.0)
    before = int(client.info("memory")["used_memory"])
    for _ in range(jobs):
        await engine.create_job("bench_echo", data)
    for _ in range(600):  # every job stepped to waiting_for_worker (at most a minute)
        counts = await engine.storage.count_jobs()
        if sum(n for key, n in counts.items() if key[1] == "waiting_for_worker") >= jobs + WARMUP:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    after = int(client.info("memory")["used_memory"])
    print(f"redis-server used_memory per waiting job: {(after - before) / jobs:,.0f} B ({jobs} jobs)")
    kinds: dict[str, list[Any]] = {}
    for key in client.scan_iter(count=1000):
        kind = _ID.sub("<id>", key.decode())
        found = kinds.setdefault(kind, [0, 0, client.type(key).decode(), client.object("encoding", key).decode()])
        found[0] += 1
        found[1] += client.memory_usage(key, samples=0) or 0  # every field counted, none estimated
    for kind, (count, used, type_, encoding) in sorted(kinds.items(), key=lambda item: -item[1][1])[:12]:
        print(f"    {kind:<48} {count:>6} keys {used / jobs:8,.0f} B per job ({type_}, {encoding})")


async def _main(args: argparse.Namespace) -> None:
    with redis_server() as server:
        os.environ["REDIS_URL"] = server.url
        from benchmarks.app import engine

        client = _client(server.url)
        await engine.start(http=False)
        try:
            await engine.register_worker({"worker_id": instructions.WORKER_ID, "supported_tasks": ["echo"]})
            for workload in args.workloads:
                await _commands(engine, client, workload, args.jobs)
            if args.waiting:
                await _memory(engine, client, args.waiting)
        finally:
            await engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_counts", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated, of W1 W2 W3 (none: '')")
    parser.add_argument("--jobs", type=int, default=50, help="jobs per workload (default 50)")
    parser.add_argument("--waiting", type=int, default=0, help="waiting jobs to measure memory with (default: none)")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    if unknown := set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
