"""The workloads: each runs against a fresh engine process and returns one :class:`Result`.

The load generator is this process (:mod:`.http_client` on uvloop, one keep-alive connection per
concurrent client). Every loop is bounded by a count and by the workload's deadline; a workload past
its deadline returns what it measured so far, marked ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from .http_client import Connection, HttpError
from .procs import (
    CLIENT_TOKEN,
    PROFILES,
    Engine,
    Profiler,
    Redis,
    cpu_seconds,
    cpu_times,
    machine_busy_seconds,
    redis_server,
    rss_kb,
)
from .profiles import Summary, write_profile_reports

#: Bounds one request; a job's polls are bounded by the workload's deadline.
REQUEST_TIMEOUT_S = 30.0
#: What a waiting client asks for (below REQUEST_TIMEOUT_S).
WAIT_S = 20
TERMINAL = frozenset({"finished", "failed", "quarantined", "cancelled"})
WAITING = "waiting_for_worker"


def count(default: int, meaning: str) -> Any:
    """An option that counts something (at least 1): ``--<name>`` on the command line, with ``meaning`` as its help."""
    return field(default=default, metadata={"count": meaning})


@dataclass
class Options:
    jobs: int = count(2000, "jobs of W1 and W2")
    clients: int = count(32, "concurrent clients")
    workers: int = count(2, "worker processes of W2/W3")
    worker_concurrency: int = count(16, "long polls per worker")
    fanout: int = count(200, "tasks of the W3 job")
    repeats: int = count(5, "W3 jobs measured")
    waiting_jobs: int = count(10_000, "W4 jobs")
    poll_s: float = 0.005
    timeout_s: float = 120.0
    warmup: int = 100
    profile: bool = False
    #: HISTORY_DATABASE_URI of the engine; None keeps the engine's default (SQLite in a temporary file).
    history: str | None = None
    #: The CPU the engine is pinned to (None: the scheduler decides); see ``--engine-cpu``.
    engine_cpu: int | None = None


#: The options that count something, and what: each is ``--<name>`` on the command line.
COUNTS = {f.name: f.metadata["count"] for f in fields(Options) if "count" in f.metadata}


@dataclass
class Result:
    workload: str
    storage: str
    status: str = "ok"
    jobs: int = 0  # jobs measured (created and seen terminal, or waiting for W4)
    errors: int = 0  # jobs that ended other than finished, or never ended in time
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    server_sys_s: float = 0.0  # the kernel's part of server_cpu_s (stime): sockets, mostly
    redis_cpu_s: float | None = None
    #: CPU of SQLite history's process (a child of the engine's, not in ``server_cpu_s``), if it has one.
    history_cpu_s: float | None = None
    workers_cpu_s: float | None = None
    loadgen_cpu_s: float = 0.0
    #: CPU seconds the rest of the machine (processes not of this benchmark) used meanwhile.
    others_cpu_s: float = 0.0
    #: Whether jobs/s means something (not for W3, whose figure is one job's time).
    throughput: bool = True
    requests: int = 0
    #: Commands redis-server ran during the measurement (scripts' commands included), with ``redis``.
    redis_commands: int | None = None
    #: W4 with ``redis``: redis-server's ``used_memory`` per waiting job.
    redis_memory_per_waiting_job_b: float | None = None
    #: W4 with SQLite history: the RSS its process grew by, per waiting job.
    history_rss_per_waiting_job_b: float | None = None
    #: W4: jobs created per second while the load generator created them as fast as answered.
    create_rate: float | None = None
    rss_per_waiting_job_b: float | None = None
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None
    #: W4: RSS per job of a second round of as many waiting jobs, created after the measured ones:
    #: what one more job costs once the engine's caches and allocator have grown (``rss_after_kb`` ->
    #: ``rss_next_kb``).
    rss_next_per_waiting_job_b: float | None = None
    rss_next_kb: int | None = None
    profile_top: str | None = None
    profile_svg: str | None = None
    hot_engine_frames: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def jobs_per_s(self) -> float | None:
        return self.jobs / self.elapsed_s if self.throughput and self.elapsed_s > 0 and self.jobs else None

    def latency(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def cpu_ms_per_job(self) -> float | None:
        return 1000 * self.server_cpu_s / self.jobs if self.jobs else None

    @property
    def redis_commands_per_job(self) -> float | None:
        return self.redis_commands / self.jobs if self.redis_commands is not None and self.jobs else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "latencies_ms"},
            "jobs_per_s": self.jobs_per_s,
            "p50_ms": self.latency(0.5),
            "p99_ms": self.latency(0.99),
            "cpu_ms_per_job": self.cpu_ms_per_job,
            "redis_commands_per_job": self.redis_commands_per_job,
        }


class Outcomes(dict[str, int]):
    """How many jobs ended how (``finished``, ``timeout``, ``error: ...``)."""

    def __missing__(self, key: str) -> int:
        return 0

    def bad(self, good: str) -> int:
        return sum(n for status, n in self.items() if status != good)


# -- the load generator ----------------------------------------------------------------------------
class Client:
    """The client API over keep-alive connections: ``connection(i)`` is concurrent client ``i``'s own.

    Counts requests. A response other than the one expected raises ``RuntimeError`` with its status
    and the start of its body (the engine's JSON error).
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.headers = {"X-Avtomatika-Token": CLIENT_TOKEN}
        self.connections: list[Connection] = []
        self.requests = 0

    def connection(self, index: int) -> Connection:
        while len(self.connections) <= index:
            self.connections.append(Connection(self.base_url, self.headers, REQUEST_TIMEOUT_S))
        return self.connections[index]

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    async def call(
        self, connection: Connection, method: str, path: str, expected: int, body: bytes | None = None
    ) -> Any:
        self.requests += 1
        response = await connection.request(method, path, body)
        if response.status != expected:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {response.body[:200]!r}")
        return response.json()

    async def create(self, connection: Connection, blueprint: str, body: dict[str, Any]) -> str:
        answer = await self.call(connection, "POST", f"/api/v1/jobs/{blueprint}", 202, orjson.dumps(body))
        return str(answer["job_id"])

    async def status(self, connection: Connection, job_id: str) -> str:
        return str((await self.call(connection, "GET", f"/api/v1/jobs/{job_id}", 200))["status"])

    async def wait_terminal(self, connection: Connection, job_id: str, poll_s: float, deadline: float) -> str:
        """Poll the job (at once, then every ``poll_s``) until terminal; ``timeout`` past ``deadline``.

        ``poll_s`` None: wait for it instead (``GET jobs/{id}?wait_s=``), asking again while it goes on.
        """
        if poll_s is None:
            return await self._wait_for(connection, job_id, deadline)
        for _ in range(int((deadline - time.monotonic()) / max(poll_s, 0.0005)) + 2):
            status = await self.status(connection, job_id)
            if status in TERMINAL:
                return status
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll_s)
        return "timeout"

    async def _wait_for(self, connection: Connection, job_id: str, deadline: float) -> str:
        while time.monotonic() < deadline:
            wait_s = max(1, min(WAIT_S, int(deadline - time.monotonic())))
            path = f"/api/v1/jobs/{job_id}?wait_s={wait_s}"
            status = str((await self.call(connection, "GET", path, 200))["status"])
            if status in TERMINAL:
                return status
        return "timeout"

    async def dashboard_counts(self) -> dict[str, int]:
        answer = await self.call(self.connection(0), "GET", "/api/v1/dashboard", 200)
        return dict(answer["jobs"]["by_status"])


async def run_jobs(
    client: Client,
    blueprint: str,
    body: Callable[[int], dict[str, Any]],
    count: int,
    concurrency: int,
    poll_s: float | None,
    deadline: float,
    *,
    wait: bool = True,
) -> tuple[list[float], Outcomes]:
    """``concurrency`` clients share ``count`` jobs: each creates one, polls it to its end, takes the next."""
    indices = iter(range(count))
    latencies: list[float] = []
    outcomes: Outcomes = Outcomes()

    async def one_client(connection: Connection) -> None:
        for index in indices:  # shared: each index is taken by exactly one client
            if time.monotonic() >= deadline:
                outcomes["timeout"] += 1
                continue
            started = time.perf_counter()
            try:
                job_id = await client.create(connection, blueprint, body(index))
                status = await client.wait_terminal(connection, job_id, poll_s, deadline) if wait else "created"
            except (HttpError, OSError, TimeoutError, RuntimeError) as exc:
                outcomes[f"error: {type(exc).__name__}"] += 1
                continue
            outcomes[status] += 1
            if status in ("finished", "created"):
                latencies.append(1000 * (time.perf_counter() - started))

    await asyncio.gather(*(one_client(client.connection(i)) for i in range(concurrency)))
    return latencies, outcomes


# -- one engine per workload -----------------------------------------------------------------------
@dataclass
class Run:
    """A fresh engine (and Redis, workers) for one workload, and the readings around its measurement."""

    workload: str
    storage: str
    options: Options
    engine: Engine
    redis: Redis | None
    client: Client
    result: Result
    _profiler: Profiler | None = None
    _marks: dict[str, float] = field(default_factory=dict)
    #: SQLite history's process while measured (None: the engine has none).
    history_pid: int | None = None

    @property
    def deadline(self) -> float:
        return self._marks["deadline"]

    def begin(self) -> None:
        """Start the clock (and py-spy); everything until :meth:`end` is measured."""
        if self.options.profile:
            self._profiler = Profiler(self.engine.pid, PROFILES / f"{self.workload}-{self.storage}.collapsed")
            self._profiler.start()
        self.history_pid = self.engine.history_pid
        self._marks.update(
            cpu=cpu_seconds(self.engine.pid),
            history_cpu=cpu_seconds(self.history_pid) if self.history_pid else 0.0,
            sys=cpu_times(self.engine.pid)[1],
            redis_cpu=cpu_seconds(self.redis.pid) if self.redis else 0.0,
            workers_cpu=sum(cpu_seconds(w.pid) for w in self.engine.workers),
            loadgen_cpu=time.process_time(),
            machine=machine_busy_seconds(),
            requests=self.client.requests,
            redis_commands=self.redis.commands() if self.redis else 0,
            wall=time.perf_counter(),
        )

    def end(self) -> None:
        marks, result = self._marks, self.result
        result.elapsed_s = time.perf_counter() - marks["wall"]
        result.server_cpu_s = cpu_seconds(self.engine.pid) - marks["cpu"]
        result.server_sys_s = cpu_times(self.engine.pid)[1] - marks["sys"]
        if self.redis:
            result.redis_cpu_s = cpu_seconds(self.redis.pid) - marks["redis_cpu"]
            result.redis_commands = self.redis.commands() - int(marks["redis_commands"])
        if self.engine.workers:
            result.workers_cpu_s = sum(cpu_seconds(w.pid) for w in self.engine.workers) - marks["workers_cpu"]
        if self.history_pid:
            with contextlib.suppress(FileNotFoundError):  # it died (and history started another): unknown
                result.history_cpu_s = cpu_seconds(self.history_pid) - marks["history_cpu"]
        result.loadgen_cpu_s = time.process_time() - marks["loadgen_cpu"]
        result.requests = self.client.requests - int(marks["requests"])
        ours = result.server_cpu_s + (result.redis_cpu_s or 0) + (result.workers_cpu_s or 0) + result.loadgen_cpu_s
        ours += result.history_cpu_s or 0
        result.others_cpu_s = max(machine_busy_seconds() - marks["machine"] - ours, 0.0)
        self._stop_profiler()

    def _stop_profiler(self) -> None:
        if self._profiler is None:
            return
        collapsed = self._profiler.stop()
        self._profiler = None
        if collapsed is None:
            self.result.note += " (py-spy wrote no profile)"
            return
        top, svg, summary = write_profile_reports(collapsed, f"{self.workload} {self.storage}")
        self.result.profile_top, self.result.profile_svg = _relative(top), _relative(svg)
        self.result.hot_engine_frames = _hot(summary)


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _hot(summary: Summary, count: int = 8) -> list[tuple[str, float]]:
    total = max(summary.samples, 1)
    return [(name, 100 * n / total) for name, n in summary.innermost_engine.most_common(count)]


@contextlib.asynccontextmanager
async def fresh_run(workload: str, storage: str, options: Options, workers: int = 0) -> AsyncIterator[Run]:
    async with contextlib.AsyncExitStack() as stack:
        redis = stack.enter_context(redis_server()) if storage == "redis" else None
        extra_env = {"HISTORY_DATABASE_URI": options.history} if options.history is not None else {}
        engine = Engine(
            f"{workload}-{storage}",
            redis_url=redis.url if redis else None,
            serves=Engine.FLOOR if storage == "floor" else Engine.serves,
            cpu=options.engine_cpu,
            extra_env=extra_env,
        )
        stack.callback(engine.stop)
        await engine.start()
        if workers:
            await engine.start_workers(workers, options.worker_concurrency)
        client = Client(engine.url)
        stack.callback(client.close)
        run = Run(workload, storage, options, engine, redis, client, Result(workload, storage))
        run._marks["deadline"] = time.monotonic() + options.timeout_s
        try:
            yield run
        finally:
            run._stop_profiler()


# -- W1 .. W4 --------------------------------------------------------------------------------------
async def w1_chain(storage: str, options: Options) -> Result:
    """2000 jobs start -> s1 -> s2 -> s3 -> end, no worker, by 32 clients polling their job."""
    async with fresh_run("W1", storage, options) as run:
        return await _measured_jobs(run, "bench_chain", options, options.poll_s)


async def w1_waiting_clients(storage: str, options: Options) -> Result:
    """W1 with clients that wait (``GET jobs/{id}?wait_s=``) instead of polling: 2 requests a job."""
    async with fresh_run("W1W", storage, options) as run:
        return await _measured_jobs(run, "bench_chain", options, poll_s=None)


async def _measured_jobs(run: Run, blueprint: str, options: Options, poll_s: float | None) -> Result:
    """``options.warmup`` jobs, then ``options.jobs`` measured, each created by one of ``options.clients``
    that polls it every ``poll_s`` (None: waits for it with ``?wait_s=``) until it ends."""
    await run_jobs(run.client, blueprint, lambda i: {}, options.warmup, options.clients, poll_s, run.deadline)
    run.begin()
    latencies, outcomes = await run_jobs(
        run.client, blueprint, lambda i: {"n": i}, options.jobs, options.clients, poll_s, run.deadline
    )
    run.end()
    return _finish(run.result, latencies, outcomes, "finished")


async def w2_dispatch(storage: str, options: Options) -> Result:
    """2000 jobs start -> dispatch_task("echo") -> end, 2 worker processes long-polling."""
    async with fresh_run("W2", storage, options, workers=options.workers) as run:
        result = await _measured_jobs(run, "bench_echo", options, options.poll_s)
        result.note = f"{options.workers} workers x {options.worker_concurrency} long polls" + result.note
        return result


async def w3_fanout(storage: str, options: Options) -> Result:
    """One job dispatching 200 tasks to 2 workers, then aggregating; repeated, the median reported."""
    async with fresh_run("W3", storage, options, workers=options.workers) as run:
        body = {"count": options.fanout}
        poll_s = options.poll_s
        await run_jobs(run.client, "bench_fanout", lambda i: body, 1, 1, poll_s, run.deadline)
        run.begin()
        latencies, outcomes = await run_jobs(
            run.client, "bench_fanout", lambda i: body, options.repeats, 1, poll_s, run.deadline
        )
        run.end()
        result = _finish(run.result, latencies, outcomes, "finished")
        result.throughput = False  # the figure is the time of one job
        median = statistics.median(latencies) if latencies else None
        tasks_per_s = f", {options.fanout / (median / 1000):.0f} tasks/s" if median else ""
        result.note = (
            f"median of {options.repeats} jobs of {options.fanout} tasks (p99 column: slowest){tasks_per_s}; "
            f"polled every {poll_s * 1000:.0f} ms" + result.note
        )
        return result


async def w4_memory(storage: str, options: Options) -> Result:
    """10,000 jobs waiting for a worker that never comes: server RSS per waiting job."""
    async with fresh_run("W4", storage, options) as run:
        client, never = run.client, {"task_type": "never"}
        await run_jobs(
            client, "bench_echo", lambda i: never, options.warmup, options.clients, 0, run.deadline, wait=False
        )
        await _wait_for_waiting(client, options.warmup, run.deadline)
        before_kb = rss_kb(run.engine.pid)
        redis_before = run.redis.used_memory() if run.redis else 0
        history_pid = run.engine.history_pid
        history_before_kb = rss_kb(history_pid) if history_pid else 0
        run.begin()
        created_from = time.perf_counter()
        _, outcomes = await run_jobs(
            client, "bench_echo", lambda i: never, options.waiting_jobs, options.clients, 0, run.deadline, wait=False
        )
        create_s = time.perf_counter() - created_from
        waiting = await _wait_for_waiting(client, options.warmup + options.waiting_jobs, run.deadline)
        run.end()
        after_kb = rss_kb(run.engine.pid)
        redis_after = await _drained_memory(run.redis, run.deadline) if run.redis else 0
        history_after_kb = _history_rss_kb(history_pid)
        result = _finish(run.result, [], outcomes, "created")
        result.rss_before_kb, result.rss_after_kb = before_kb, after_kb
        result.jobs = max(waiting - options.warmup, 0)
        result.errors = max(result.errors, options.waiting_jobs - result.jobs)  # created but never waiting
        if result.errors and result.status == "ok":
            result.status = "errors"
        if result.jobs:
            result.rss_per_waiting_job_b = (after_kb - before_kb) * 1024 / result.jobs
            result.create_rate = outcomes.get("created", 0) / create_s if create_s > 0 else None
            if run.redis:
                result.redis_memory_per_waiting_job_b = (redis_after - redis_before) / result.jobs
            if history_pid and history_after_kb is not None:
                result.history_rss_per_waiting_job_b = (history_after_kb - history_before_kb) * 1024 / result.jobs
        result.note = (
            f"RSS {before_kb / 1024:.1f} -> {after_kb / 1024:.1f} MiB; jobs/s: created and waiting" + result.note
        )
        if result.status == "ok":
            await _next_round(run, result, waiting)
        return result


def _history_rss_kb(pid: int | None) -> int | None:
    """The RSS of SQLite history's process ``pid`` (None: none, or it died)."""
    if not pid:
        return None
    with contextlib.suppress(FileNotFoundError):
        return rss_kb(pid)
    return None


async def _next_round(run: Run, result: Result, waiting: int) -> None:
    """W4's second round: as many jobs again, unmeasured but for the RSS they add."""
    options, never = run.options, {"task_type": "never"}
    await run_jobs(
        run.client, "bench_echo", lambda i: never, options.waiting_jobs, options.clients, 0, run.deadline, wait=False
    )
    now_waiting = await _wait_for_waiting(run.client, waiting + options.waiting_jobs, run.deadline)
    if now_waiting < waiting + options.waiting_jobs or result.rss_after_kb is None:
        result.note += f"; second round: only {now_waiting - waiting} of {options.waiting_jobs} jobs waiting"
        return
    result.rss_next_kb = rss_kb(run.engine.pid)
    result.rss_next_per_waiting_job_b = (result.rss_next_kb - result.rss_after_kb) * 1024 / options.waiting_jobs
    result.note += (
        f"\n    a second round of {options.waiting_jobs:,} jobs: RSS -> {result.rss_next_kb / 1024:.1f} MiB,"
        f" {result.rss_next_per_waiting_job_b:,.0f} B per job"
    )


async def _drained_memory(redis: Redis, deadline: float) -> int:
    """redis-server's ``used_memory`` once history's feed is written (the jobs' own cost, not the burst's)."""
    feed = "avtomatika:history:feed"  # avtomatika.storage.redis.keys.FEED under the default namespace
    for _ in range(10_000):
        if redis.stream_length(feed) <= 1 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    return redis.used_memory()


async def _wait_for_waiting(client: Client, expected: int, deadline: float) -> int:
    """Poll the dashboard until ``expected`` jobs wait for a worker (or the deadline); how many do."""
    waiting = 0
    for _ in range(100_000):
        waiting = (await client.dashboard_counts()).get(WAITING, 0)
        if waiting >= expected or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    return waiting


def _finish(result: Result, latencies: list[float], outcomes: Outcomes, good: str) -> Result:
    result.latencies_ms = latencies
    result.jobs = outcomes.get(good, 0)
    result.errors = outcomes.bad(good)
    if outcomes.get("timeout"):
        result.status = "timeout"
    elif result.errors:
        result.status = "errors"
    if result.errors:
        details = ", ".join(f"{status}: {n}" for status, n in sorted(outcomes.items()) if status != good)
        result.note += f" [{details}]"
    return result


WORKLOADS = {"W1": w1_chain, "W1W": w1_waiting_clients, "W2": w2_dispatch, "W3": w3_fanout, "W4": w4_memory}
