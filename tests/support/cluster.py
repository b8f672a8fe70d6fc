"""Several engine processes on one redis-server, with echo workers and a shared PostgreSQL history.

Used by ``tests/test_multi_engine.py``. A :class:`Cluster` starts ``python -m avtomatika serve
tests/support/apps/cluster.py:engine`` processes on free ports, all on one Redis (a Unix socket) and one
history database, and echo workers each pointed at one engine. It creates jobs over the engines'
APIs in turn, polls them on whichever engines are alive, and reads back what happened: job documents
and handler runs from Redis, timelines from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis

from avtomatika.models import Job
from avtomatika.storage.redis.encoding import split_job
from support.postgres_server import PostgresServer
from support.processes import (
    ECHO_WORKER_SCRIPT,
    app_spec,
    free_port,
    kill_process,
    log_tail,
    python_command,
    start_process,
    stop_process,
    wait_http,
)
from support.redis_server import RedisServer, running_redis

APP_SPEC = app_spec("cluster")
WORKER_TOKEN = "multi-engine-worker-token"
TASK_TYPE = "multi_echo"
RUNS_PREFIX = "multi:runs:"
TERMINAL = frozenset({"finished", "failed", "quarantined", "cancelled"})
#: Lease of runnable entries and step leases in these tests: a killed engine's jobs move on within it.
LEASE_S = 3.0
CHAIN_STATES = ("start", "dispatch", "second", "done")

#: The engines' environment; the studio is on, open to loopback (no client or studio token).
ENGINE_ENV = {
    "GLOBAL_WORKER_TOKEN": WORKER_TOKEN,
    "MULTI_LEASE_S": str(LEASE_S),
    "JOB_MAX_RETRIES": "3",
    "RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "RETRY_BACKOFF_MAX_SECONDS": "0.5",
    "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "2",
    "WORKER_POLL_TIMEOUT_SECONDS": "2",
    "WATCHER_INTERVAL_SECONDS": "1",
    "EXECUTOR_CONCURRENCY": "16",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "WARNING",
    "STUDIO_ENABLED": "true",
    "RATE_LIMIT_PUBLIC_PER_SECOND": "0",
}
#: Variables of the caller that would change the engines' behaviour.
ENGINE_ENV_DROP = (
    "API_HOST",
    "API_PORT",
    "CLIENT_TOKEN",
    "CLIENTS_CONFIG_PATH",
    "WORKERS_CONFIG_PATH",
    "STUDIO_TOKEN",
    "STUDIO_VIEWER_TOKEN",
    "REDIS_HOST",
    "WORKER_TIMEOUT_SECONDS",
)
_ids = itertools.count(1)


@dataclass
class Engine:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Worker:
    worker_id: str
    engine: Engine
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Cluster:
    """Engines, workers, one Redis and one history database; see the module docstring."""

    tmp_path: Path
    redis_server: RedisServer
    history_dsn: str
    session: aiohttp.ClientSession
    redis_options: tuple[str, ...] = ()
    engines: list[Engine] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    _redis_stack: ExitStack = field(default_factory=ExitStack)

    # -- processes -------------------------------------------------------------------------------
    def start_engine(self, app_spec: str = APP_SPEC, extra_env: dict[str, str] | None = None) -> Engine:
        name = f"engine{len(self.engines) + 1}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ENGINE_ENV_DROP}
        env.update(ENGINE_ENV)
        env["REDIS_URL"] = self.redis_server.url
        env["HISTORY_DATABASE_URI"] = self.history_dsn
        env.update(extra_env or {})
        command = [sys.executable, "-m", "avtomatika", "serve", app_spec, "--host", "127.0.0.1", "--port", str(port)]
        log_path = self.tmp_path / f"{name}.log"
        proc = start_process(command, env, log_path, inherit_env=False)
        engine = Engine(name, f"http://127.0.0.1:{port}", proc, log_path)
        self.engines.append(engine)
        return engine

    def wait_engines(self) -> None:
        for engine in self.engines:
            wait_http(f"{engine.url}/_public/status", 30, engine.proc)

    def start_worker(self, engine: Engine, worker_id: str | None = None, task_types: str = TASK_TYPE) -> Worker:
        worker_id = worker_id or f"multi-worker-{next(_ids)}"
        env = {
            "ORCHESTRATOR_URL": engine.url,
            "WORKER_ID": worker_id,
            "WORKER_TOKEN": WORKER_TOKEN,
            "TASK_TYPES": task_types,
            "HEARTBEAT_INTERVAL": "0.5",
            "POLL_TIMEOUT": "10",
            "MAX_CONCURRENT": "8",
        }
        log_path = self.tmp_path / f"{worker_id}-{len(self.workers)}.log"
        proc = start_process(python_command(ECHO_WORKER_SCRIPT), env, log_path)
        worker = Worker(worker_id, engine, proc, log_path)
        self.workers.append(worker)
        return worker

    async def wait_workers(self, timeout_s: float = 20.0) -> None:
        """Until every running worker is listed alive (by any engine: they share the registry)."""
        wanted = {w.worker_id for w in self.workers if w.proc.poll() is None}
        deadline = time.monotonic() + timeout_s
        while True:
            records = (await self.get("/api/v1/workers"))["workers"]
            if wanted <= {w["worker_id"] for w in records if w.get("alive")}:
                return
            assert time.monotonic() < deadline, f"workers not registered\n{self.diagnostics()}"
            await asyncio.sleep(0.1)

    def kill_engine(self, engine: Engine) -> None:
        kill_process(engine.proc)

    @staticmethod
    def pause(engine: Engine) -> None:
        """Freeze ``engine`` (SIGSTOP): it holds what it holds and does nothing until :meth:`resume`."""
        engine.proc.send_signal(signal.SIGSTOP)

    @staticmethod
    def resume(engine: Engine) -> None:
        engine.proc.send_signal(signal.SIGCONT)

    def replace_worker(self, worker: Worker, engine: Engine) -> Worker:
        """Stop ``worker`` and start it again (same id) pointed at ``engine``: its engine is gone."""
        stop_process(worker.proc)
        return self.start_worker(engine, worker.worker_id)

    def redis_stop(self, *, kill: bool) -> None:
        """Stop redis-server (SIGKILL or SIGTERM); :meth:`redis_start` brings it back on the same socket and dir."""
        process = self.redis_server.process
        if kill:
            process.kill()
        else:
            process.terminate()
        process.wait(10)
        self._redis_stack.close()

    def redis_start(self) -> None:
        self._redis_stack = ExitStack()
        self.redis_server = self._redis_stack.enter_context(
            running_redis(self.redis_server.directory, *self.redis_options)
        )

    def stop(self) -> None:
        for process in [*(w.proc for w in self.workers), *(e.proc for e in self.engines)]:
            stop_process(process, 10)
        self._redis_stack.close()

    # -- HTTP ------------------------------------------------------------------------------------
    def live_engines(self) -> list[Engine]:
        return [e for e in self.engines if e.alive]

    async def get(self, path: str, engine: Engine | None = None) -> Any:
        engine = engine or self.live_engines()[0]
        async with self.session.get(engine.url + path) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 200, f"GET {engine.name}{path} -> {resp.status} {body}"
            return body

    async def create_jobs(self, count: int, blueprint: str = "multi_chain", **data: Any) -> list[str]:
        """Create ``count`` jobs, over the engines' APIs in turn (10 at a time)."""
        engines = self.live_engines()
        limit = asyncio.Semaphore(10)

        async def create(index: int) -> str:
            engine = engines[index % len(engines)]
            async with limit, self.session.post(f"{engine.url}/api/v1/jobs/{blueprint}", json=data) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 202, f"create on {engine.name} -> {resp.status} {body}"
                return str(body["job_id"])

        return list(await asyncio.gather(*(create(i) for i in range(count))))

    async def job_status(self, job_id: str, engine: Engine) -> str | None:
        """The job's status on ``engine``; None when it cannot answer now (dead, or Redis restarting)."""
        try:
            async with self.session.get(f"{engine.url}/api/v1/jobs/{job_id}", timeout=aiohttp.ClientTimeout(5)) as resp:
                if resp.status != 200:
                    return None
                return str((await resp.json(content_type=None))["status"])
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_status(self, engine: Engine, job_id: str, status: str, timeout_s: float = 20) -> dict[str, Any]:
        """Poll the job on ``engine`` until it has ``status``; the job."""
        deadline = time.monotonic() + timeout_s
        while (job := await self.get(f"/api/v1/jobs/{job_id}", engine))["status"] != status:
            assert time.monotonic() < deadline, f"job {job_id} is {job['status']}, not {status}"
            await asyncio.sleep(0.05)
        return job

    async def wait_terminal(self, job_ids: list[str], timeout_s: float) -> dict[str, str]:
        """Poll every job on the live engines in turn until all are terminal; their statuses."""
        statuses: dict[str, str] = {}
        limit = asyncio.Semaphore(20)
        deadline = time.monotonic() + timeout_s
        rounds = itertools.count()

        async def poll(job_id: str, engine: Engine) -> None:
            async with limit:
                status = await self.job_status(job_id, engine)
            if status in TERMINAL:
                statuses[job_id] = status

        while True:
            engines = self.live_engines()
            pending = [job_id for job_id in job_ids if job_id not in statuses]
            if not pending:
                return statuses
            if time.monotonic() > deadline:
                shown = Counter(await self.redis_statuses(pending)).most_common()
                raise AssertionError(
                    f"{len(pending)} of {len(job_ids)} jobs not ended in {timeout_s} s: {shown}\n{self.diagnostics()}"
                )
            turn = next(rounds)
            await asyncio.gather(*(poll(j, engines[(i + turn) % len(engines)]) for i, j in enumerate(pending)))
            await asyncio.sleep(0.2)

    # -- what happened ---------------------------------------------------------------------------
    def redis_client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.redis_server.socket_path))

    async def redis_statuses(self, job_ids: list[str]) -> list[str]:
        return [job.get("status", "missing") for job in await self.redis_jobs(job_ids)]

    async def redis_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """The job documents as stored in Redis (visits included, which the API does not show)."""

        def read() -> list[dict[str, Any]]:
            with self.redis_client() as client, client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.get(f"avtomatika:job:{job_id}")
                # Job.from_dict: a document leaves out the fields at their defaults.
                records = pipe.execute()
                found = [split_job(r, job_id)[1] if r else None for r, job_id in zip(records, job_ids, strict=True)]
                return [Job.from_dict(orjson.loads(doc)).to_dict() if doc else {} for doc in found]

        return await asyncio.to_thread(read)

    async def last_job_sequence(self) -> float:
        """The creation sequence of the newest job (0 for none): see :meth:`jobs_since`."""

        def read() -> float:
            with self.redis_client() as client:
                newest = _every_job(client)[-1:]
            return float(newest[0][1]) if newest else 0.0

        return await asyncio.to_thread(read)

    async def jobs_since(self, sequence: float) -> list[str]:
        """The ids of the jobs created after the one of creation ``sequence``, oldest first."""

        def read() -> list[str]:
            with self.redis_client() as client:
                return [job_id.decode() for job_id, created in _every_job(client) if created > sequence]

        return await asyncio.to_thread(read)

    async def handler_runs(self, job_ids: list[str], states: tuple[str, ...]) -> dict[tuple[str, str], int]:
        """How many times each (job, state) handler ran, from the marks support/apps/cluster.py leaves."""

        def read() -> dict[tuple[str, str], int]:
            pairs = [(job_id, state) for job_id in job_ids for state in states]
            with self.redis_client() as client, client.pipeline(transaction=False) as pipe:
                for job_id, state in pairs:
                    pipe.scard(f"{RUNS_PREFIX}{job_id}:{state}")
                return dict(zip(pairs, pipe.execute(), strict=True))

        return await asyncio.to_thread(read)

    async def entries(self, job_ids: list[str]) -> dict[tuple[str, str], int]:
        """Lines entering each (job, state) in the shared history: ``state_entered``, and ``job_created``
        for the start state. Waits (up to 15 s) for history to record every job's end first: its end is
        its last line, written in order with the others."""
        connection = await asyncpg.connect(self.history_dsn)
        try:
            deadline = time.monotonic() + 15
            while True:
                ended = await connection.fetchval(
                    "SELECT count(DISTINCT job_id) FROM events WHERE job_id = ANY($1) AND kind = 'job_finished'",
                    job_ids,
                )
                if ended >= len(job_ids) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            found = await connection.fetch(
                "SELECT job_id, state, count(*) AS n FROM events WHERE job_id = ANY($1) "
                "AND kind IN ('state_entered', 'job_created') GROUP BY job_id, state",
                job_ids,
            )
        finally:
            await connection.close()
        return {(row["job_id"], row["state"]): int(row["n"]) for row in found}

    async def check_once_per_visit(self, job_ids: list[str], *, in_flight: Collection[str] = ()) -> dict[str, int]:
        """Every job ended ``finished`` having visited each state once, each handler ran once per visit,
        and history shows one entry per visit. Returns counts for the report.

        ``in_flight``: jobs a killed engine was stepping when it died. The handler it was running may
        have run without its step being committed, so it runs again where the job is taken over:
        once more at the most.
        """
        jobs = await self.redis_jobs(job_ids)
        runs = await self.handler_runs(job_ids, CHAIN_STATES)
        entries = await self.entries(job_ids)
        problems: list[str] = []
        extra_runs = 0
        for job_id, job in zip(job_ids, jobs, strict=True):
            if job.get("status") != "finished":
                problems.append(f"{job_id}: status {job.get('status')}")
                continue
            visits = job.get("visits") or {}
            if visits != dict.fromkeys(CHAIN_STATES, 1):
                problems.append(f"{job_id}: visits {visits}")
            for state in CHAIN_STATES:
                ran, entered = runs[(job_id, state)], entries.get((job_id, state), 0)
                extra_runs += max(0, ran - visits.get(state, 0))
                allowed = {visits.get(state), visits.get(state, 0) + 1} if job_id in in_flight else {visits.get(state)}
                if ran not in allowed:
                    problems.append(f"{job_id}: handler of {state} ran {ran} times for {visits.get(state)} visits")
                if entered != visits.get(state):
                    problems.append(f"{job_id}: {state} entered {entered} times in history for {visits.get(state)}")
        assert not problems, f"{len(problems)} problems, e.g. {problems[:10]}\n{self.diagnostics()}"
        return {"jobs": len(job_ids), "history_entries": sum(entries.values()), "extra_runs": extra_runs}

    # -- diagnostics -----------------------------------------------------------------------------
    def taken_over(self, engine: Engine) -> set[str]:
        """Jobs ``engine`` took over from a process whose step lease expired (from its log)."""
        return set(re.findall(r"took over job (\S+) from a process", engine.log_path.read_text(errors="replace")))

    def diagnostics(self) -> str:
        parts = []
        for engine in self.engines:
            parts.append(f"--- {engine.name} (exit {engine.proc.poll()}) ---\n{log_tail(engine.log_path, 40)}")
        for worker in self.workers:
            parts.append(f"--- {worker.worker_id} (exit {worker.proc.poll()}) ---\n{log_tail(worker.log_path, 15)}")
        parts.append(f"--- redis ---\n{log_tail(self.redis_server.log_path, 15)}")
        return "\n".join(parts)


@contextmanager
def running_cluster(
    tmp_path: Path,
    postgres: PostgresServer,
    session: aiohttp.ClientSession,
    *,
    engines: int = 2,
    redis_options: tuple[str, ...] = (),
) -> Iterator[Cluster]:
    """A fresh Redis (in a short temporary dir) and history database, and ``engines`` engines started."""
    with _short_dir() as redis_dir:
        stack = ExitStack()
        server = stack.enter_context(running_redis(Path(redis_dir), *redis_options))
        cluster = Cluster(tmp_path, server, postgres.create_database(), session, redis_options, _redis_stack=stack)
        try:
            for _ in range(engines):
                cluster.start_engine()
            cluster.wait_engines()
            yield cluster
        finally:
            cluster.stop()


@contextmanager
def _short_dir() -> Iterator[str]:
    """A short temporary directory (Unix socket paths are limited to about 100 bytes)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="me-redis-")
    try:
        yield path
    finally:
        with suppress(OSError):
            shutil.rmtree(path)


#: The lists of jobs by status and client (see keys.JOBS_BY) found and merged in one script: a list emptied
#: is deleted, so one found by a scan before could be missed by a read after.
_EVERY_JOB = """
local lists = redis.call('KEYS', ARGV[1])
if #lists == 0 then return {} end
local call = {'ZUNION', #lists, unpack(lists)}
call[#call + 1] = 'WITHSCORES'
return redis.call(unpack(call))
"""


def _every_job(client: redis.Redis) -> list[tuple[bytes, float]]:
    """Every job and its created_at, oldest first: the lists by status and client together (see
    keys.JOBS_BY)."""
    flat = client.eval(_EVERY_JOB, 0, "avtomatika:jobs:by:status:*")
    return [(job_id, float(created)) for job_id, created in zip(flat[::2], flat[1::2], strict=True)]
