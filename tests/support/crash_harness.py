"""The crash-point harness: an engine killed (SIGKILL) right after one write, another that finishes.

Used by ``tests/test_crash_points.py``. One redis-server, one PostgreSQL history database, a survivor
engine with its workers, all kept for the module. Each case freezes the survivor (SIGSTOP), starts a
victim engine armed with ``AVTOMATIKA_CRASH_AT`` (see :mod:`avtomatika.server.crashpoints`), drives a
scenario against it until it kills itself at its boundary, then thaws the survivor, which must take
every job of the case to its end: each job terminal with the status expected, each state entered once
per visit, and its whole timeline in history, numbered without a gap, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson

from support.cluster import WORKER_TOKEN, Cluster, Engine
from support.processes import ProcessDied, app_spec, kill_process, log_tail, wait_http

CRASH_APP = app_spec("crash")
TASK_TYPE = "crash_echo"
#: Longest a victim may take to reach its boundary once the scenario started.
DEATH_TIMEOUT_S = 25.0
#: Longest the survivor may take to end the case's jobs.
END_TIMEOUT_S = 45.0
ENDING_KINDS = {"finished": "job_finished", "failed": "job_failed", "cancelled": "job_cancelled"}

Scenario = Callable[["Victim"], Awaitable[None]]
Then = Callable[["Victim"], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    """A boundary, the n-th time it is reached, the scenario that reaches it, and what must follow."""

    boundary: str
    scenario: Scenario
    after: int = 1
    expect: dict[str, str] = field(default_factory=dict)  # a job's role -> its status; "finished" else
    then: Then | None = None  # operator steps on the survivor once it is thawed
    why: str = ""
    #: Start once the workers of earlier cases have expired (the case is about one expiring).
    settle: bool = False
    #: The victim dies as it starts (its history writer taking the feed's lease, which the survivor's
    #: lapsed): the scenario then runs on the survivor, which must take the lease back.
    at_start: bool = False

    @property
    def id(self) -> str:
        return f"{self.boundary}#{self.after}"


class Victim:
    """What a scenario drives: the armed engine (the survivor once it died) and the victim's workers.

    A job's role (what the case expects of it) is in its ``initial_data`` (``role``); a sub-job's is
    "child".
    """

    def __init__(self, cluster: Cluster, engine: Engine, session: aiohttp.ClientSession, since: float) -> None:
        self.cluster = cluster
        self.engine = engine
        self.session = session
        self.since = since  # the creation sequence of the last job before the case
        self.workers: list[Any] = []

    def worker(self, task_types: str = TASK_TYPE, *, keep: bool = False) -> None:
        """An echo worker on the engine, killed with the victim unless ``keep``."""
        worker = self.cluster.start_worker(self.engine, task_types=task_types)
        if not keep:
            self.workers.append(worker)

    async def register(self, worker_id: str, task_type: str) -> None:
        body = {"worker_id": worker_id, "supported_tasks": [task_type]}
        headers = {"X-Worker-Token": WORKER_TOKEN}
        async with self.session.post(f"{self.engine.url}/_worker/workers/register", json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    async def only_job(self) -> str:
        """The one job the case has created so far."""
        (job_id,) = await self.cluster.jobs_since(self.since)
        return job_id

    async def create(self, blueprint: str, role: str = "job", **data: Any) -> str:
        async with self.session.post(f"{self.engine.url}/api/v1/jobs/{blueprint}", json={**data, "role": role}) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 202, f"create {blueprint} -> {resp.status} {body}"
        return str(body["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.engine.url}/api/v1/jobs/{job_id}") as resp:
            return dict(await resp.json(content_type=None))

    async def wait_status(self, job_id: str, *statuses: str, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (job := await self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"job {job_id} is {job['status']}, not {statuses}"
            await asyncio.sleep(0.05)
        return job

    async def wait_history(self, job_id: str, kind: str, timeout_s: float = 20.0) -> None:
        """Until the job's timeline in history ends with a line of ``kind``."""
        deadline = time.monotonic() + timeout_s
        while [line["kind"] for line in (await self.call("GET", f"/api/v1/jobs/{job_id}/history"))["history"]][-1:] != [
            kind
        ]:
            assert time.monotonic() < deadline, f"job {job_id}'s history does not end with {kind}"
            await asyncio.sleep(0.05)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        """POST to the engine; one that dies answering (at its boundary) is no error here."""
        try:
            async with self.session.post(f"{self.engine.url}{path}", json=body or {}) as resp:
                answer = await resp.text()
                assert resp.status < 300, f"POST {path} -> {resp.status} {answer}"
        except aiohttp.ClientConnectionError:
            with contextlib.suppress(subprocess.TimeoutExpired):  # its socket closes as it dies
                await asyncio.to_thread(self.engine.proc.wait, 5)
            if self.engine.proc.poll() is None:
                raise

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request to the engine that must succeed before the boundary (its answer's JSON)."""
        async with self.session.request(method, f"{self.engine.url}{path}", json=body) as resp:
            answer = await resp.json(content_type=None)
            assert resp.status < 300, f"{method} {path} -> {resp.status} {answer}"
        return dict(answer)

    async def delete(self, path: str) -> None:
        """DELETE on the engine; one that dies answering (at its boundary) is no error here."""
        try:
            async with self.session.delete(f"{self.engine.url}{path}") as resp:
                answer = await resp.text()
                assert resp.status < 300, f"DELETE {path} -> {resp.status} {answer}"
        except aiohttp.ClientConnectionError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.engine.proc.wait, 5)
            if self.engine.proc.poll() is None:
                raise

    def hang_up_poll(self, worker_id: str) -> None:
        """Open a long poll for ``worker_id`` and hang up before its answer: a task it takes is given back."""
        parts = urlsplit(self.engine.url)
        request = (
            f"GET /_worker/workers/{worker_id}/tasks/next HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"X-Worker-Token: {WORKER_TOKEN}\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection((parts.hostname, parts.port)) as connection:
            connection.sendall(request.encode())


class Harness:
    """Runs cases against one cluster: its first engine is the survivor."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.survivor = cluster.engines[0]

    async def run(self, case: Case, session: aiohttp.ClientSession) -> dict[str, int]:
        env = {"AVTOMATIKA_CRASH_AT": case.boundary, "AVTOMATIKA_CRASH_AFTER": str(case.after)}
        if case.settle:
            await self._settle()
        since = await self.cluster.last_job_sequence()
        await self._history_written()
        self.cluster.pause(self.survivor)
        victim: Victim | None = None
        try:
            if case.at_start:
                lapse_feed_leases(self.cluster)
            engine = self.cluster.start_engine(CRASH_APP, env)
            victim = Victim(self.cluster, engine, session, since)
            if case.at_start:
                with contextlib.suppress(ProcessDied):
                    wait_http(f"{engine.url}/_public/status", 30, engine.proc)
                scenario = asyncio.ensure_future(asyncio.sleep(0))
            else:
                wait_http(f"{engine.url}/_public/status", 30, engine.proc)
                scenario = asyncio.ensure_future(case.scenario(victim))
            await self._wait_death(engine, case, scenario)
        finally:
            self.cluster.resume(self.survivor)
            for worker in victim.workers if victim is not None else ():
                kill_process(worker.proc)
        victim.engine = self.survivor
        if case.at_start:
            await case.scenario(victim)
        if case.then is not None:
            await case.then(victim)
        statuses = await self._wait_case_jobs(since)
        jobs = dict(zip(statuses, await self.cluster.redis_jobs(list(statuses)), strict=True))
        expected = {job_id: case.expect.get(_role(job), "finished") for job_id, job in jobs.items()}
        assert statuses == expected, f"{case.id}: {statuses} != {expected}\n{self.cluster.diagnostics()}"
        return await self.check_histories(jobs, statuses)

    async def _history_written(self) -> None:
        """Until history holds the whole feed: an engine started next then writes only what its own case
        commits (with a backlog, one started to crash at a history write would reach it while starting)."""
        deadline = time.monotonic() + 20
        while (await self.cluster.get("/api/v1/jobs?limit=1", self.survivor))["history_pending"]:
            assert time.monotonic() < deadline, "history never caught up with the feed"
            await asyncio.sleep(0.1)

    async def _settle(self) -> None:
        """Until only the survivor's own workers are registered."""
        own = {worker.worker_id for worker in self.cluster.workers if worker.engine is self.survivor}
        deadline = time.monotonic() + 20
        while {w["worker_id"] for w in (await self.cluster.get("/api/v1/workers", self.survivor))["workers"]} - own:
            assert time.monotonic() < deadline, "the workers of earlier cases never expired"
            await asyncio.sleep(0.2)

    async def _wait_case_jobs(self, since: float) -> dict[str, str]:
        """Every job created since ``since`` (sub-jobs too, made as their parents go on) ended: statuses."""
        statuses: dict[str, str] = {}
        while len(job_ids := await self.cluster.jobs_since(since)) > len(statuses):
            statuses = await self.cluster.wait_terminal(job_ids, END_TIMEOUT_S)
        assert statuses, "the case created no job"
        return statuses

    async def _wait_death(self, engine: Engine, case: Case, scenario: asyncio.Future[None]) -> None:
        deadline = time.monotonic() + DEATH_TIMEOUT_S
        while engine.proc.poll() is None:
            if scenario.done() and scenario.exception() is not None:
                raise AssertionError(f"{case.id}: the scenario failed\n{log_tail(engine.log_path, 30)}") from (
                    scenario.exception()
                )
            assert time.monotonic() < deadline, f"{case.id} was never reached\n{log_tail(engine.log_path, 30)}"
            await asyncio.sleep(0.05)
        reached = f"crash point reached: {case.boundary}"
        assert engine.proc.returncode == -9, f"{case.id}: exit {engine.proc.returncode}\n{log_tail(engine.log_path)}"
        assert reached in engine.log_path.read_text(errors="replace"), log_tail(engine.log_path, 30)
        if not scenario.done():  # it may have been waiting on the dead engine: it has done its part
            scenario.cancel()
            await asyncio.gather(scenario, return_exceptions=True)

    async def check_histories(self, jobs: dict[str, dict[str, Any]], statuses: dict[str, str]) -> dict[str, int]:
        """Every job's timeline complete and once: no gap, its end last, one entry per visit."""
        job_ids = list(jobs)
        lines = await self._timelines(job_ids, statuses)
        problems = []
        for job_id in job_ids:
            problems += [f"{job_id}: {p}" for p in timeline_problems(jobs[job_id], lines[job_id], statuses[job_id])]
        assert not problems, f"{problems}\n{self.cluster.diagnostics()}"
        return {"jobs": len(job_ids), "lines": sum(len(found) for found in lines.values())}

    async def _timelines(self, job_ids: list[str], statuses: dict[str, str]) -> dict[str, list[asyncpg.Record]]:
        """The jobs' timelines, once history has their end (the survivor writes within a second)."""
        connection = await asyncpg.connect(self.cluster.history_dsn)
        try:
            deadline = time.monotonic() + 20
            while True:
                rows = await connection.fetch(
                    "SELECT job_id, seq, kind, state, data FROM events WHERE job_id = ANY($1) ORDER BY job_id, seq",
                    job_ids,
                )
                found: dict[str, list[asyncpg.Record]] = {job_id: [] for job_id in job_ids}
                for row in rows:
                    found[row["job_id"]].append(row)
                if all(_ended_in_history(found[j], statuses[j]) for j in job_ids) or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.2)
        finally:
            await connection.close()


def _role(job: dict[str, Any]) -> str:
    if job.get("parent_job_id"):
        return "child"
    return str((job.get("initial_data") or {}).get("role", "job"))


def lapse_feed_leases(cluster: Cluster) -> None:
    """The survivor (paused) lets its history feed lease lapse: gone, as after its length."""
    with cluster.redis_client() as client:
        for key in client.scan_iter(match="avtomatika:history:feed_lease:*"):
            client.delete(key)


def _ended_in_history(lines: list[asyncpg.Record], status: str) -> bool:
    if status == "quarantined":
        return any(line["kind"] == "job_quarantined" for line in lines)
    own = [line for line in lines if line["kind"] != "job_rerun"]  # a rerun's link comes after the end
    return bool(own) and own[-1]["kind"] == ENDING_KINDS[status]


def timeline_problems(job: dict[str, Any], lines: list[asyncpg.Record], status: str) -> list[str]:
    """What is wrong with a job's timeline in history, against the job as stored."""
    problems = []
    if [line["seq"] for line in lines] != list(range(1, len(lines) + 1)):
        problems.append(f"lines not numbered 1..{len(lines)}: {[line['seq'] for line in lines]}")
    kinds = [line["kind"] for line in lines]
    if not kinds or kinds[0] != "job_created":
        problems.append(f"does not start with job_created: {kinds[:3]}")
    if not _ended_in_history(lines, status):
        problems.append(f"does not end as {status}: {kinds[-3:]}")
    entered = Counter(line["state"] for line in lines if line["kind"] in ("job_created", "state_entered"))
    if dict(entered) != (job.get("visits") or {}):
        problems.append(f"states entered {dict(entered)} for visits {job.get('visits')}")
    for kind in ("task_dispatched", "task_result", "task_retry"):
        tasks = Counter(_task_of(line) for line in lines if line["kind"] == kind)
        twice = [task_id for task_id, n in tasks.items() if n > 1]
        if twice:
            problems.append(f"{kind} twice for tasks {twice}")
    ends = [kind for kind in kinds if kind in ENDING_KINDS.values()]
    if len(ends) > 1 and "job_retried" not in kinds:
        problems.append(f"ended {len(ends)} times: {ends}")
    return problems


def _task_of(line: asyncpg.Record) -> str:
    return str(orjson.loads(line["data"]).get("task_id"))
