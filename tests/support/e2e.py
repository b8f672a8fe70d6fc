"""Fixtures of the end-to-end worker tests: the engine as a process, real worker processes, a client.

The engine (``support/apps/e2e.py``) is served once per test module by ``python -m avtomatika serve``;
every test starts workers of its own (``echo``: ``support/workers/echo.py``; ``sdk``: the real
``avtomatika-worker`` SDK, ``support/workers/sdk.py``) serving a task type no other test uses, so
tests sharing the engine cannot take each other's tasks. Logs go to files under ``tmp_path``; their
tails are what :meth:`E2E.diagnostics` puts into assertion messages.

The fixtures (``e2e_engine``, ``e2e``, ``sdk_python``, ``worker_kind``) are a plugin of
``tests/conftest.py``: a test module asks for them by name.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.processes import (
    ECHO_WORKER_SCRIPT,
    app_spec,
    free_port,
    log_tail,
    python_command,
    start_process,
    stop_process,
    wait_http,
)
from support.workers.sdk import SdkUnavailable, sdk_venv, sdk_worker_command, sdk_worker_env

WORKER_TOKEN = "e2e-global-worker-token"
CLIENT_TOKEN = "e2e-client-token"
CLIENT_HEADER = "X-Avtomatika-Token"
APP_SPEC = app_spec("e2e")

#: The engine's environment, as the brief of these tests asks (the studio is left out: not under test).
ENGINE_ENV = {
    "GLOBAL_WORKER_TOKEN": WORKER_TOKEN,
    "CLIENT_TOKEN": CLIENT_TOKEN,
    "JOB_MAX_RETRIES": "3",
    "RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "1",
    "WORKER_POLL_TIMEOUT_SECONDS": "2",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "INFO",
    "STUDIO_ENABLED": "false",
}
#: Environment variables of the caller that would change the engine's behaviour (or storage).
ENGINE_ENV_DROP = (
    "API_HOST",
    "API_PORT",
    "CLIENTS_CONFIG_PATH",
    "WORKERS_CONFIG_PATH",
    "REDIS_URL",
    "REDIS_HOST",
    "HISTORY_DATABASE_URI",
    "WORKER_TIMEOUT_SECONDS",
    "WATCHER_INTERVAL_SECONDS",
)

TERMINAL = frozenset({"finished", "failed", "quarantined", "cancelled"})
WORKER_KINDS = ("echo", "sdk")
_counter = itertools.count(1)


@dataclass
class EngineProcess:
    """The engine process: its base URL, the process and its log."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 80) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class WorkerProcess:
    worker_id: str
    kind: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class E2E:
    """One test's view of the engine: a client session and the test's own workers."""

    engine: EngineProcess
    kind: str
    session: aiohttp.ClientSession
    tmp_path: Path
    sdk_python: Path | None = None
    task_type: str = field(default_factory=lambda: f"e2e_{next(_counter)}_{uuid.uuid4().hex[:8]}")
    workers: list[WorkerProcess] = field(default_factory=list)

    # -- workers ---------------------------------------------------------------------------------
    def start_worker(self) -> WorkerProcess:
        """Start one worker of this test's kind serving this test's task type."""
        worker_id = f"{self.kind}-{self.task_type}-{len(self.workers) + 1}"
        log_path = self.tmp_path / f"{worker_id}.log"
        if self.kind == "echo":
            env = {
                "ORCHESTRATOR_URL": self.engine.url,
                "WORKER_ID": worker_id,
                "WORKER_TOKEN": WORKER_TOKEN,
                "TASK_TYPES": self.task_type,
                "HEARTBEAT_INTERVAL": "0.5",
                "POLL_TIMEOUT": "10",
                "MAX_CONCURRENT": "4",
            }
            command = python_command(ECHO_WORKER_SCRIPT)
        else:
            assert self.sdk_python is not None
            # TASK_POLL_TIMEOUT stays well above the engine's WORKER_POLL_TIMEOUT_SECONDS (2 s).
            env = sdk_worker_env(self.engine.url, worker_id, WORKER_TOKEN, task_types=self.task_type)
            command = sdk_worker_command(self.sdk_python)
        proc = start_process(command, env, log_path)
        worker = WorkerProcess(worker_id, self.kind, proc, log_path)
        self.workers.append(worker)
        return worker

    async def start_workers(self, count: int, timeout_s: float = 20.0) -> list[WorkerProcess]:
        """Start ``count`` workers and wait until the engine lists every one of them as alive."""
        started = [self.start_worker() for _ in range(count)]
        wanted = {w.worker_id for w in started}
        deadline = time.monotonic() + timeout_s
        while True:
            for worker in started:
                if worker.proc.poll() is not None:
                    raise AssertionError(
                        f"worker {worker.worker_id} exited with {worker.proc.returncode}\n{self.diagnostics()}"
                    )
            records = (await self.get("/api/v1/workers"))["workers"]
            alive = {w["worker_id"] for w in records if w.get("alive")}
            if wanted <= alive:
                return started
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {sorted(wanted - alive)} not registered\n{self.diagnostics()}")
            await asyncio.sleep(0.1)

    async def wait_worker_log(self, worker: WorkerProcess, needle: str, timeout_s: float = 10.0) -> str:
        """Wait until ``needle`` appears in the worker's log; return the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker.worker_id} never logged {needle!r}\n{self.diagnostics()}")
            await asyncio.sleep(0.05)

    def stop_workers(self) -> None:
        for worker in self.workers:
            stop_process(worker.proc)

    # -- client API ------------------------------------------------------------------------------
    async def get(self, path: str) -> Any:
        async with self.session.get(self.engine.url + path) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 200, f"GET {path} -> {resp.status} {body}\n{self.diagnostics()}"
            return body

    async def post(self, path: str, body: dict[str, Any] | None = None, expect: int = 200) -> Any:
        async with self.session.post(self.engine.url + path, json=body or {}) as resp:
            answer = await resp.json(content_type=None)
            assert resp.status == expect, f"POST {path} -> {resp.status} {answer}\n{self.diagnostics()}"
            return answer

    async def create_job(self, blueprint: str, params: dict[str, Any] | None = None, **extra: Any) -> str:
        """Create a job of ``blueprint`` for this test's task type; returns its id."""
        initial_data = {"task_type": self.task_type, "params": params or {}, **extra}
        answer = await self.post(f"/api/v1/jobs/{blueprint}", initial_data, expect=202)
        assert answer.get("status") == "accepted", answer
        return str(answer["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.get(f"/api/v1/jobs/{job_id}")
        return body

    async def wait_terminal(self, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """Poll the job until it is finished, failed, quarantined or cancelled."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s}s\n{self.diagnostics(job)}")
            await asyncio.sleep(0.05)

    async def wait_until(
        self, job_id: str, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Poll the job until ``predicate(job)`` holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.job(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: {what} not seen within {timeout_s}s\n{self.diagnostics(job)}")
            await asyncio.sleep(0.05)

    async def wait_status(self, job_id: str, status: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait for the job to end, and assert it ended ``status``."""
        job = await self.wait_terminal(job_id, timeout_s)
        assert job["status"] == status, (
            f"job {job_id} ended {job['status']}, expected {status}\n{self.diagnostics(job)}"
        )
        return job

    # -- diagnostics -----------------------------------------------------------------------------
    def diagnostics(self, job: dict[str, Any] | None = None) -> str:
        """The job (if given) and the tails of the engine's and this test's workers' logs."""
        parts = []
        if job is not None:
            shown = {k: v for k, v in job.items() if k != "initial_data"}
            parts.append(f"--- job ---\n{shown}")
        engine_code = self.engine.proc.poll()
        parts.append(f"--- engine log ({self.engine.log_path}, exit code {engine_code}) ---\n{self.engine.tail()}")
        for worker in self.workers:
            code = worker.proc.poll()
            parts.append(f"--- worker {worker.worker_id} (exit code {code}) ---\n{worker.tail()}")
        return "\n".join(parts)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """``python -m avtomatika serve support/apps/e2e.py:engine`` on a free port, for one test module."""
    log_path = tmp_path_factory.mktemp("e2e-engine") / "engine.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_ENV_DROP}
    env.update(ENGINE_ENV)
    command = [sys.executable, "-m", "avtomatika", "serve", APP_SPEC, "--host", "127.0.0.1", "--port", str(port)]
    proc = start_process(command, env, log_path, inherit_env=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_public/status", 30, proc)
        yield EngineProcess(url, proc, log_path)
    finally:
        stop_process(proc, 10)


@pytest.fixture(scope="session")
def sdk_python(request: pytest.FixtureRequest) -> Path:
    """The python of a venv holding the real worker SDK (built once, cached by pytest)."""
    try:
        return sdk_venv(request.config.cache.mkdir("avtomatika-sdk"))
    except SdkUnavailable as exc:
        pytest.skip(f"the worker SDK cannot be installed, PyPI is unreachable: {exc}")


@pytest.fixture(params=WORKER_KINDS)
def worker_kind(request: pytest.FixtureRequest) -> str:
    """Each test runs once with our echo worker and once with the real SDK's worker."""
    return str(request.param)


@pytest.fixture(name="e2e")
async def e2e_fixture(
    e2e_engine: EngineProcess, worker_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[E2E]:
    """A client session on the engine; workers started through it are stopped afterwards."""
    python = request.getfixturevalue("sdk_python") if worker_kind == "sdk" else None
    if e2e_engine.proc.poll() is not None:
        pytest.fail(f"the engine process has exited ({e2e_engine.proc.returncode})\n{e2e_engine.tail()}")
    log_offset = e2e_engine.log_path.stat().st_size
    async with aiohttp.ClientSession(headers={CLIENT_HEADER: CLIENT_TOKEN}) as session:
        context = E2E(e2e_engine, worker_kind, session, tmp_path, python)
        try:
            yield context
        finally:
            context.stop_workers()
    # An exception the engine only logged (a failed timer, a broken WebSocket handler...) fails the test.
    with e2e_engine.log_path.open("rb") as log:
        log.seek(log_offset)
        logged = log.read().decode("utf-8", errors="replace")
    if "Traceback" in logged:
        pytest.fail(f"the engine logged an exception during this test:\n{logged[-6000:]}")
