"""Instructions per job: the engine's work counted by valgrind, steady where CPU time is not.

The CPU figures of ``python -m benchmarks`` move by up to 2x with the machine (see "CPU speed" in
benchmarks/README.md), which hides a change of a few per cent. valgrind counts the instructions a
process executes (user space, all its threads), and the same code gives the same count to ~0.1 %.
Each workload runs in process (the engine's own calls, no HTTP, no other process) twice under
``valgrind --tool=lackey --basic-counts=yes``, with ``--jobs`` and four times as many jobs; the
difference over the extra jobs is the instructions per job, start-up excluded. Kernel work (sockets,
SQLite's file writes) is not counted, nor is aiohttp's (no HTTP): this measures the engine's logic.

    python -m benchmarks.instructions                          # W1, W2, W3, with history
    python -m benchmarks.instructions --workloads W1 --no-history
    python -m benchmarks.instructions --workloads W1,W2 --http  # through the HTTP API, over loopback
    python -m benchmarks.instructions --workloads W1,W2 --floor # the same requests, served by the floor

Workloads (the blueprints of benchmarks/app.py):

- W1: ``bench_chain`` jobs, created one after the other; each runs start -> s1 -> s2 -> s3 -> end.
- W2: ``bench_echo`` jobs; a worker takes each task (``engine.next_task``) and answers it
  (``engine.submit_result``) before the next job is created.
- W3: ``bench_fanout`` jobs of 200 tasks, their tasks taken and answered one by one.
- W4: ``bench_echo`` jobs whose task no worker serves, created one after the other, each run until it
  waits for a worker (its task dispatched): the create path of ``python -m benchmarks``'s W4.

``--http`` serves the API on a loopback port in the same process (the harness's settings: tokens,
rate limits off, no studio) and drives W1, W2 and W4 through it with the harness's lean client
(:mod:`.http_client`): W1 ``POST`` the job, wait for its end, ``GET`` it once (2 requests); W2 the
same with a worker's long poll opened before the job and its result posted (4 requests); W4 ``POST``
the job and wait until it waits for a worker (1 request). The count then includes aiohttp's work and
the API's (middlewares, validation, responses) besides the engine's, and the client's, which is the
same for every version of the engine.

``--floor`` drives the same requests (W1, W2, W4), with the same client, against :mod:`benchmarks.floor`
(aiohttp alone) served in the process instead of the engine: the engine's ``--http`` count over the
floor's is its CPU per job as a multiple of the floor's, counted rather than timed.

With SQLite history (the default) in a process of its own (:mod:`avtomatika.history.sqlite_process`),
the counted process is the engine's only: history's reading of the feed, its projection and SQLite's
work happen in the child, which ``--history-process`` counts too (``valgrind
--trace-children=yes``, one log per pid) and prints beside the engine's figure. Counts taken before
(history on a thread of the engine) included all of it in the engine's.

Needs valgrind (``apt-get install -y valgrind``); a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .loop import run
from .procs import CLIENT_TOKEN, ROOT, WORKER_TOKEN

#: Jobs of the shorter run of each workload (the longer runs four times as many).
DEFAULT_JOBS = {"W1": 100, "W2": 100, "W3": 2, "W4": 100}
WORKER_ID = "instructions-worker"
SUCCESS = {"status": "success", "data": {}}
#: W4's initial data: a task type no worker serves (benchmarks/app.py's bench_echo dispatches it).
NEVER = {"task_type": "never"}
_COUNT = re.compile(r"guest instrs:\s+([\d,]+)")
#: The served engine's settings in the harness (benchmarks/procs.py), read by benchmarks.app's Config().
HTTP_ENV = {
    "CLIENT_TOKEN": CLIENT_TOKEN,
    "GLOBAL_WORKER_TOKEN": WORKER_TOKEN,
    "STUDIO_ENABLED": "false",
    "RATE_LIMIT_CLIENT_READ_PER_SECOND": "0",
    "RATE_LIMIT_CLIENT_WRITE_PER_SECOND": "0",
    "RATE_LIMIT_WORKER_PER_SECOND": "0",
}
#: Every run's: the worker sends no heartbeat, and under valgrind, with other runs beside it, 400 W2
#: jobs outlasted the 120 s it stays registered (twice this interval): it was then unknown.
RUN_ENV = {"LOG_LEVEL": "ERROR", "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "3600"}


# -- inside valgrind: one run of one workload ------------------------------------------------------
async def _run_workload(workload: str, jobs: int, history: bool, http: bool) -> None:
    from benchmarks.app import engine

    await engine.start(host="127.0.0.1", port=0, http=http)
    if not history:
        await engine.history_writer.stop()
    finished: asyncio.Queue[str] = asyncio.Queue()
    engine.events.subscribe(lambda event: _on_end(event, finished), remote=False)
    await engine.register_worker({"worker_id": WORKER_ID, "supported_tasks": ["echo"]})
    if http:
        client = HttpDriver(f"http://127.0.0.1:{engine.port}")
        run = {"W1": client.chain, "W2": client.echo, "W4": client.waiting}[workload]
    else:
        run = {"W1": _chain, "W2": _echo, "W3": _fanout, "W4": _waiting}[workload]
    for _ in range(jobs):
        await run(engine, finished)
    if history:
        await engine.history_writer.flush()
    await engine.stop()


async def _run_floor(workload: str, jobs: int) -> None:
    """``workload``'s requests through HTTP, answered by the floor (its jobs end as they are answered)."""
    from aiohttp import web

    from .floor import application

    runner = web.AppRunner(application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = HttpDriver(f"http://127.0.0.1:{port}")
    run = {"W1": client.chain, "W2": client.echo, "W4": client.waiting}[workload]
    ended: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(jobs):
        ended.put_nowait("waiting" if workload == "W4" else "finished")
        await run(None, ended)
    await runner.cleanup()


def _on_end(event: Any, finished: asyncio.Queue[str]) -> None:
    if str(event.kind) in ("job_finished", "job_failed", "job_cancelled", "job_quarantined"):
        finished.put_nowait(str(event.status))
    elif str(event.kind) == "task_dispatched" and event.data.get("task_type") == NEVER["task_type"]:
        finished.put_nowait("waiting")  # a W4 job: it waits for a worker from now on


async def _await_waiting(finished: asyncio.Queue[str]) -> None:
    status = await asyncio.wait_for(finished.get(), 60)
    if status != "waiting":
        raise RuntimeError(f"a job ended {status}")


async def _await_end(finished: asyncio.Queue[str]) -> None:
    status = await asyncio.wait_for(finished.get(), 60)
    if status != "finished":
        raise RuntimeError(f"a job ended {status}")


async def _chain(engine: Any, finished: asyncio.Queue[str]) -> None:
    await engine.create_job("bench_chain", {})
    await _await_end(finished)


async def _echo(engine: Any, finished: asyncio.Queue[str]) -> None:
    await engine.create_job("bench_echo", {})
    await _answer(engine, 1)
    await _await_end(finished)


async def _waiting(engine: Any, finished: asyncio.Queue[str]) -> None:
    await engine.create_job("bench_echo", dict(NEVER))
    await _await_waiting(finished)


async def _fanout(engine: Any, finished: asyncio.Queue[str]) -> None:
    await engine.create_job("bench_fanout", {"count": 200})
    await _answer(engine, 200)
    await _await_end(finished)


async def _answer(engine: Any, tasks: int) -> None:
    for _ in range(tasks):
        task = await engine.next_task(WORKER_ID, timeout_s=60)
        if task is None:
            raise RuntimeError("no task came")
        await engine.submit_result(task.job_id, task.id, WORKER_ID, SUCCESS)


class HttpDriver:
    """W1, W2 and W4 through the HTTP API, one request at a time (the harness's client and worker)."""

    def __init__(self, url: str) -> None:
        from .http_client import Connection

        self.client = Connection(url, {"X-Avtomatika-Token": CLIENT_TOKEN})
        self.worker = Connection(url, {"X-Worker-Token": WORKER_TOKEN})

    async def _create(self, blueprint: str, body: bytes = b"{}") -> str:
        response = await self.client.request("POST", f"/api/v1/jobs/{blueprint}", body)
        if response.status != 202:
            raise RuntimeError(f"create answered {response.status}: {response.body[:200]!r}")
        return str(response.json()["job_id"])

    async def _read(self, job_id: str) -> None:
        response = await self.client.request("GET", f"/api/v1/jobs/{job_id}")
        if response.status != 200 or response.json()["status"] != "finished":
            raise RuntimeError(f"GET job answered {response.status}: {response.body[:200]!r}")

    async def chain(self, engine: Any, finished: asyncio.Queue[str]) -> None:
        job_id = await self._create("bench_chain")
        await _await_end(finished)
        await self._read(job_id)

    async def waiting(self, engine: Any, finished: asyncio.Queue[str]) -> None:
        await self._create("bench_echo", orjson.dumps(NEVER))
        await _await_waiting(finished)

    async def echo(self, engine: Any, finished: asyncio.Queue[str]) -> None:
        poll = asyncio.ensure_future(self.worker.request("GET", f"/_worker/workers/{WORKER_ID}/tasks/next"))
        job_id = await self._create("bench_echo")
        polled = await poll
        if polled.status != 200:
            raise RuntimeError(f"the worker's poll answered {polled.status}: {polled.body[:200]!r}")
        task = polled.json()
        answer = {"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": WORKER_ID, "result": SUCCESS}
        response = await self.worker.request("POST", "/_worker/tasks/result", orjson.dumps(answer))
        if response.status != 200:
            raise RuntimeError(f"result answered {response.status}: {response.body[:200]!r}")
        await _await_end(finished)
        await self._read(job_id)


# -- outside: run valgrind twice per workload ------------------------------------------------------
def count_instructions(
    workload: str,
    jobs: int,
    history: bool,
    valgrind: str,
    http: bool = False,
    floor: bool = False,
    children: bool = False,
) -> tuple[int, int]:
    """Instructions of one in-process run of ``workload`` with ``jobs`` jobs, start-up included: the
    engine's process, and (with ``children``) those of the processes it started (SQLite history's)."""
    with tempfile.TemporaryDirectory(prefix="avtomatika-instructions-") as logs:
        command = [valgrind, "--tool=lackey", "--basic-counts=yes"]
        command += ["--trace-children=yes", f"--log-file={logs}/%p.log"] if children else []
        command += [sys.executable, "-m", "benchmarks.instructions", "--inner", workload, "--jobs", str(jobs)]
        command += [] if history else ["--no-history"]
        command += ["--http"] if http else []
        command += ["--floor"] if floor else []
        env = {**os.environ, **RUN_ENV, **(HTTP_ENV if http else {})}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        _, stderr = process.communicate(timeout=1800)
        counts = {int(log.stem): log.read_text() for log in Path(logs).glob("*.log")}
    if not children:
        counts = {process.pid: stderr.decode()}
    found = _COUNT.search(counts.pop(process.pid, ""))
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"{workload}: the run under valgrind failed:\n{stderr.decode()[-2000:]}")
    started = [_COUNT.search(text) for text in counts.values()]
    return int(found.group(1).replace(",", "")), sum(int(m.group(1).replace(",", "")) for m in started if m)


def per_job(count: Callable[[int], tuple[int, int]], jobs: int) -> tuple[float, float]:
    """Instructions per job, of the engine's process and of its children's, from ``count`` (a run's
    counts, :func:`count_instructions` given all but the jobs): (count with 4 x ``jobs``) - (count
    with ``jobs``), over 3 x ``jobs``."""
    short, long = count(jobs), count(4 * jobs)
    return (long[0] - short[0]) / (3 * jobs), (long[1] - short[1]) / (3 * jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated, of W1 W2 W3 W4")
    parser.add_argument("--jobs", type=int, help="jobs of the shorter run (default: W1 100, W2 100, W3 2, W4 100)")
    parser.add_argument("--no-history", action="store_true", help="stop the history writer (its share, by difference)")
    parser.add_argument("--http", action="store_true", help="W1, W2 and W4 through the HTTP API over loopback")
    parser.add_argument("--floor", action="store_true", help="W1, W2 and W4's HTTP requests served by the floor")
    parser.add_argument(
        "--history-process",
        action="store_true",
        help="also count the processes the engine starts (SQLite history's), one valgrind log per pid",
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)  # the run inside valgrind
    args = parser.parse_args(argv)
    if args.inner:  # the loop a served engine has
        if args.floor:
            run(_run_floor(args.inner, args.jobs))
        else:
            run(_run_workload(args.inner, args.jobs, not args.no_history, args.http))
        return 0
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for name in workloads:
        if name not in DEFAULT_JOBS or ((args.http or args.floor) and name == "W3"):
            parser.error(f"unknown workload {name!r} (choose from {', '.join(DEFAULT_JOBS)})")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        parser.error("needs valgrind: apt-get install -y valgrind")
    how = ("history off" if args.no_history else "history on") + (", through HTTP" if args.http else "")
    how = "the floor, through HTTP" if args.floor else how
    for name in workloads:
        jobs = args.jobs or DEFAULT_JOBS[name]
        children = args.history_process
        count = functools.partial(
            count_instructions,
            name,
            history=not args.no_history,
            valgrind=valgrind,
            http=args.http,
            floor=args.floor,
            children=children,
        )
        figure, started = per_job(count, jobs)
        also = f"; its history process: {started:,.0f}" if args.history_process else ""
        print(f"{name}: {figure:,.0f} instructions per job ({how}; {jobs} and {4 * jobs} jobs){also}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
