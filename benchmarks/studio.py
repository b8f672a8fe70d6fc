"""Benchmark (not a test): the studio's jobs page on a large history, SSE latency, cached graph SVG.

Three figures, each printed as median / p99 / max of its repeats:

1. **Jobs page with 100k jobs / ~1M timeline lines in history.** An SQLite history file is filled
   through the write path the engine's writer uses (``HistoryStorage.write``, the same synthetic jobs
   as ``benchmarks/history_list.py``); an engine (memory storage, that history) serves the studio on
   127.0.0.1, and this process times ``GET /studio/jobs`` (first page), filtered pages, an id search
   and a page 90k jobs deep (keyset cursor). Target: < 100 ms each.
2. **State change -> SSE event at a client.** A client holds the SSE stream of a job's page open;
   the job is cancelled and retried in turn (``--changes`` state changes) and the time from the
   engine call to the arrival of the ``job-header`` event showing the new status is measured. It
   includes the studio's coalescing window (``live.COALESCE_S``). Target: p99 < 100 ms.
3. **Graph SVG of a 30-state blueprint.** The first render (graphviz ``dot``) against the cached one,
   and ``GET /studio/blueprints/<name>`` (page with the cached SVG inlined) per request.

The client runs in the server's process and event loop (aiohttp over loopback), so figures include
both ends' Python time.

    .venv/bin/python -m benchmarks.studio
    .venv/bin/python -m benchmarks.studio --jobs 20000 --changes 100    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.config import Config
from avtomatika.graph import blueprint_svg
from avtomatika.graph.render import _svg_cache
from avtomatika.history import Cursor, SQLiteHistory
from avtomatika.storage import MemoryStorage
from avtomatika.studio import setup_studio
from avtomatika.studio.live import COALESCE_S
from benchmarks.history_list import BLUEPRINTS, fill

SETTINGS = {"LOG_LEVEL": "WARNING", "STUDIO_ENABLED": False, "EXECUTOR_CONCURRENCY": 4}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, ms: list[float]) -> None:
    print(
        f"  {label:<52} median {statistics.median(ms):7.2f} ms   p99 {percentile(ms, 0.99):7.2f} ms"
        f"   max {max(ms):7.2f} ms   (n={len(ms)})"
    )


async def timed(label: str, repeat: int, call: Callable[[], Awaitable[Any]]) -> None:
    await call()  # warm: templates compiled, caches filled
    ms = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        ms.append((time.perf_counter() - started) * 1000)
    report(label, ms)


def chain_blueprint(name: str, states: int, endpoint: str) -> StateMachineBlueprint:
    """``s0 -> s1 -> ... -> done``, every third state also branching to a shared ``fix`` state.

    The handlers are generated as source, so each ``transition_to`` names its target literally (the
    graph is drawn from the handlers' code).
    """
    names = [f"s{i}" for i in range(states - 2)]
    source = ["async def fix(context):", "    context.actions.transition_to('done')"]
    source += ["async def done(context):", "    pass"]
    for i, state in enumerate(names):
        following = names[i + 1] if i + 1 < len(names) else "done"
        source.append(f"async def {state}(context):")
        if i % 3 == 1:
            source.append("    if context.initial_data.get('fix'):")
            source.append("        context.actions.transition_to('fix')")
            source.append("        return")
        source.append(f"    context.actions.transition_to({following!r})")
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix=f"{name}_", delete=False) as module:
        module.write("\n".join(source) + "\n")  # a file, so inspect.getsource can read each handler
    spec = importlib.util.spec_from_file_location(Path(module.name).stem, module.name)
    assert spec is not None
    assert spec.loader is not None
    handlers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handlers)
    blueprint = StateMachineBlueprint(name, api_version="v1", api_endpoint=endpoint)
    for i, state in enumerate(names):
        blueprint.handler_for(state, is_start=i == 0)(getattr(handlers, state))
    blueprint.handler_for("fix")(handlers.fix)
    blueprint.handler_for("done", is_end=True)(handlers.done)
    return blueprint


def waiting_blueprint() -> StateMachineBlueprint:
    """start -> work (a task no worker takes: the job waits, to be cancelled and retried)."""
    blueprint = StateMachineBlueprint("bench_wait", api_version="v1", api_endpoint="/jobs/bench_wait")

    @blueprint.handler_for("start", is_start=True)
    async def start(context: Any) -> None:
        context.actions.transition_to("work")

    @blueprint.handler_for("work")
    async def work(context: Any) -> None:
        context.actions.dispatch_task(task_type="nobody", params={}, transitions={"success": "done"})

    @blueprint.handler_for("done", is_end=True)
    async def done(context: Any) -> None:
        pass

    return blueprint


@contextlib.asynccontextmanager
async def served(engine: OrchestratorEngine) -> AsyncIterator[str]:
    """The engine started (no API) and its studio served on 127.0.0.1; yields the base URL."""
    await engine.start(http=False)
    app = web.Application()
    setup_studio(app, engine)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await engine.stop()


async def get_ok(http: aiohttp.ClientSession, url: str) -> None:
    async with http.get(url) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status}")


# -- 1. the jobs page ---------------------------------------------------------------------------
async def jobs_page(jobs: int, repeat: int, sqlite_path: Path | None) -> None:
    print(f"\n== jobs page: {jobs:,} jobs in an SQLite history file")
    with tempfile.TemporaryDirectory() as tmp:
        path = sqlite_path or Path(tmp) / "history.db"
        path.unlink(missing_ok=True)
        history = SQLiteHistory(str(path))
        async with history:
            lines, fill_s = await fill(history, jobs, 5000)
        print(f"  filled {lines:,} timeline lines in {fill_s:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        engine = OrchestratorEngine(MemoryStorage(), Config(**SETTINGS), history=SQLiteHistory(str(path)))
        for name in BLUEPRINTS:
            engine.register_blueprint(chain_blueprint(name, 5, f"/jobs/{name}"))
        async with served(engine) as base, aiohttp.ClientSession() as http:
            first = await engine.history.list_jobs(limit=50)
            cursor: Cursor | None = None
            for _ in range(max(1, jobs * 9 // 10 // 1000)):  # 90% of the way down
                cursor = (await engine.history.list_jobs(limit=1000, cursor=cursor)).next_cursor
            deep = quote(cursor.encode()) if cursor else ""
            pages = {
                "GET /studio/jobs (first page, 50 rows)": "/studio/jobs",
                "GET /studio/jobs?blueprint=video&status=failed": "/studio/jobs?blueprint=video&status=failed",
                "GET /studio/jobs?status=quarantined&blueprint=ocr": "/studio/jobs?status=quarantined&blueprint=ocr",
                "GET /studio/jobs?last=24h": "/studio/jobs?last=24h",
                "GET /studio/jobs?q=<5-char id prefix>": f"/studio/jobs?q={first.jobs[7].id[:5]}",
                f"GET /studio/jobs?cursor=<{jobs * 9 // 10 // 1000}k jobs deep>": f"/studio/jobs?cursor={deep}",
                "GET /studio/jobs?format=json (first page)": "/studio/jobs?format=json",
                "GET /studio/jobs/<id> (a job from history)": f"/studio/jobs/{first.jobs[3].id}",
            }
            for label, url in pages.items():
                await timed(label, repeat, lambda url=url: get_ok(http, base + url))


# -- 2. state change -> SSE event ------------------------------------------------------------------
async def next_header(response: aiohttp.ClientResponse, wanted: Callable[[str], bool]) -> None:
    """Read the stream until a ``job-header`` event whose data passes ``wanted``."""
    event, data = None, []
    while True:
        line = (await response.content.readline()).decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line[5:])
        elif not line:
            if event == "job-header" and wanted("\n".join(data)):
                return
            event, data = None, []


async def sse_latency(changes: int) -> None:
    window_ms = COALESCE_S * 1000
    print(f"\n== state change -> SSE event at a client ({changes} changes; coalescing window {window_ms:.0f} ms)")
    engine = OrchestratorEngine(MemoryStorage(), Config(**SETTINGS))
    engine.register_blueprint(waiting_blueprint())
    async with served(engine) as base, aiohttp.ClientSession() as http:
        job = await engine.create_job("bench_wait", {})
        ms: list[float] = []
        async with http.get(f"{base}/studio/live/jobs/{job.id}") as response:
            for _ in range(changes):
                # Unmeasured: the job is back at its task and the page has seen it.
                await asyncio.wait_for(next_header(response, lambda d: 'data-status="waiting_for_worker"' in d), 10)
                await asyncio.sleep(COALESCE_S * 2)  # no round of the previous change is still open
                started = time.perf_counter()
                await engine.cancel_job(job.id, actor="operator:bench")
                await asyncio.wait_for(next_header(response, lambda d: 'data-status="cancelled"' in d), 10)
                ms.append((time.perf_counter() - started) * 1000)
                await engine.retry_job(job.id, actor="operator:bench", from_state="work")
        report("cancel_job() -> job-header event read by the client", ms)


# -- 3. the graph SVG ---------------------------------------------------------------------------------
async def graph_svg(repeat: int) -> None:
    print("\n== graph SVG of a 30-state blueprint")
    blueprint = chain_blueprint("bench_thirty", 30, "/jobs/bench_thirty")
    engine = OrchestratorEngine(MemoryStorage(), Config(**SETTINGS))
    engine.register_blueprint(blueprint)
    firsts = []
    for _ in range(5):
        _svg_cache.clear()
        started = time.perf_counter()
        svg = blueprint_svg(blueprint)
        firsts.append((time.perf_counter() - started) * 1000)
    nodes = svg.count('class="node')
    print(f"  SVG: {len(svg) / 1000:.0f} KB, {nodes} nodes")
    report("first render (graphviz dot)", firsts)
    cached = []
    for _ in range(repeat * 10):
        started = time.perf_counter()
        blueprint_svg(blueprint)
        cached.append((time.perf_counter() - started) * 1000)
    report("cached blueprint_svg()", cached)
    async with served(engine) as base, aiohttp.ClientSession() as http:
        await timed(
            "GET /studio/blueprints/bench_thirty (cached SVG)",
            repeat,
            lambda: get_ok(http, f"{base}/studio/blueprints/bench_thirty"),
        )
        await timed("GET /studio/blueprints (cached SVG)", repeat, lambda: get_ok(http, f"{base}/studio/blueprints"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in history (10 timeline lines each)")
    parser.add_argument("--repeat", type=int, default=50, help="requests per page measured")
    parser.add_argument("--changes", type=int, default=200, help="state changes measured over SSE")
    parser.add_argument("--sqlite-path", type=Path, help="keep the history file here (default: a temp dir)")
    parser.add_argument("--only", choices=("jobs", "sse", "graph"), help="run one part")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; the client shares the server's process and loop")
    if args.only in (None, "graph"):
        await graph_svg(args.repeat)
    if args.only in (None, "sse"):
        await sse_latency(args.changes)
    if args.only in (None, "jobs"):
        await jobs_page(args.jobs, args.repeat, args.sqlite_path)


if __name__ == "__main__":
    asyncio.run(main())
