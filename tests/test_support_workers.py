"""Self-tests of the test-side workers and process helpers, without the engine.

``support/workers/echo.py`` runs as a real process against a tiny fake orchestrator (aiohttp.web, in the test's
loop) that speaks PROTOCOL.md's worker API. The SDK worker is not exercised here (that is the engine's
interoperability suite); only the venv helper that provides the SDK is checked, as a slow test.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from support.processes import (
    ECHO_WORKER_SCRIPT,
    ProcessDied,
    free_port,
    python_command,
    start_process,
    stop_process,
    wait_http,
    wait_log,
)
from support.workers.sdk import SDK_VERSION, SdkUnavailable, sdk_venv

pytestmark = pytest.mark.timeout(30)

TOKEN = "worker-secret"


class FakeOrchestrator:
    """Just enough of the worker API to drive a worker: queue tasks, record everything it sends."""

    def __init__(self) -> None:
        self.tasks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.ws_messages: list[dict[str, Any]] = []
        self.ws_clients: dict[str, web.WebSocketResponse] = {}
        self.bad_tokens = 0
        self.forget_worker = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def _notify(self) -> None:
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked whenever a request arrives)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (value := predicate()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.1))
        return value

    async def result_for(self, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The result body posted for ``task_id``."""
        return await self.wait_for(lambda: self.results.get(task_id), timeout)

    def add_task(self, job_id: str, task_id: str, params: dict[str, Any], task_type: str = "echo") -> None:
        """Queue a task in the shape of PROTOCOL.md's tasks/next answer."""
        self.tasks.put_nowait(
            {
                "job_id": job_id,
                "task_id": task_id,
                "type": task_type,
                "params": params,
                "tracing_context": {"traceparent": "00-abc-def-01"},
                "priority": 0.0,
            }
        )

    # ---- routes

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("X-Worker-Token") != TOKEN:
            self.bad_tokens += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            return await handler(request)
        finally:
            self._notify()

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "worker_id" not in body:
            return web.json_response({"error": "worker_id is required"}, status=400)
        self.registrations.append(body)
        self.forget_worker = False
        return web.json_response({"status": "registered"})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        if self.forget_worker:
            return web.json_response({"error": "unknown worker"}, status=404)
        self.heartbeats.append(await request.json())
        return web.json_response({"status": "ttl_refreshed"})

    async def _next(self, request: web.Request) -> web.Response:
        try:
            task = await asyncio.wait_for(self.tasks.get(), 0.2)
        except TimeoutError:
            return web.Response(status=204)
        if request.transport is None or request.transport.is_closing():
            self.tasks.put_nowait(task)  # the poller went away (e.g. crashed) while we waited
            return web.Response(status=204)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return web.json_response(task)

    async def _result(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.in_flight -= 1
        self.results[body["task_id"]] = body
        return web.json_response({"status": "result_accepted_" + str(body["result"]["status"])})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_clients[request.match_info["worker_id"]] = ws
        self._notify()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.ws_messages.append(msg.json())
                self._notify()
        return ws

    async def _close_websockets(self, _app: web.Application) -> None:
        for ws in list(self.ws_clients.values()):
            await ws.close()

    async def start(self, port: int) -> str:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/_worker/workers/register", self._register)
        app.router.add_patch("/_worker/workers/{worker_id}", self._heartbeat)
        app.router.add_get("/_worker/workers/{worker_id}/tasks/next", self._next)
        app.router.add_post("/_worker/tasks/result", self._result)
        app.router.add_get("/_worker/ws/{worker_id}", self._ws)
        app.on_shutdown.append(self._close_websockets)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchestrator]:
    orchestrator = FakeOrchestrator()
    await orchestrator.start(free_port())
    yield orchestrator
    await orchestrator.stop()


WorkerFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
async def echo_worker(tmp_path: Path) -> AsyncIterator[WorkerFactory]:
    """Start echo_worker processes: ``echo_worker(url, worker_id="w1", **env)``; all stopped afterwards.

    Async so that the fake orchestrator (same loop) keeps answering while the workers shut down.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, worker_id: str = "echo-1", **env: str) -> subprocess.Popen[bytes]:
        full_env = {
            "ORCHESTRATOR_URL": url,
            "WORKER_ID": worker_id,
            "WORKER_TOKEN": TOKEN,
            "HEARTBEAT_INTERVAL": "0.2",
            **env,
        }
        proc = start_process(python_command(ECHO_WORKER_SCRIPT), full_env, tmp_path / f"{worker_id}.log")
        procs.append(proc)
        return proc

    yield start
    await asyncio.gather(*(asyncio.to_thread(stop_process, proc, 3) for proc in procs))


def _log(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


async def test_registers_heartbeats_and_maps_outcomes(fake: FakeOrchestrator, echo_worker: WorkerFactory) -> None:
    proc = echo_worker(fake.url, "echo-1", TASK_TYPES="echo, other", MAX_CONCURRENT="3")
    await fake.wait_for(lambda: fake.registrations)
    record = fake.registrations[0]
    assert record["worker_id"] == "echo-1"
    assert record["supported_tasks"] == ["echo", "other"]
    assert record["max_concurrent_tasks"] == 3
    assert record["resources"]["max_concurrent_tasks"] == 3
    assert record["capabilities"] == {"websockets": True}
    assert fake.bad_tokens == 0

    outcomes = {
        "t-ok": {},
        "t-transient": {"outcome": "transient"},
        "t-permanent": {"outcome": "permanent"},
        "t-invalid": {"outcome": "invalid"},
        "t-custom": {"outcome": "status:needs_review"},
        "t-nocode": {"outcome": "failure"},
        "t-raise": {"outcome": "raise"},
    }
    for task_id, params in outcomes.items():
        fake.add_task(f"job-{task_id}", task_id, params)
    results = {task_id: await fake.result_for(task_id) for task_id in outcomes}

    assert results["t-ok"] == {
        "job_id": "job-t-ok",
        "task_id": "t-ok",
        "worker_id": "echo-1",
        "result": {"status": "success", "data": {"echo": {}, "worker_id": "echo-1"}, "error": None},
    }
    for task_id, code in [
        ("t-transient", "TRANSIENT_ERROR"),
        ("t-permanent", "PERMANENT_ERROR"),
        ("t-invalid", "INVALID_INPUT_ERROR"),
        ("t-raise", "TRANSIENT_ERROR"),
    ]:
        result = results[task_id]["result"]
        assert result["status"] == "failure", task_id
        assert result["error"]["code"] == code, task_id
        assert result["error"]["message"], task_id
    assert results["t-custom"]["result"] == {
        "status": "needs_review",
        "data": {"echo": {"outcome": "status:needs_review"}, "worker_id": "echo-1"},
        "error": None,
    }
    assert results["t-nocode"]["result"]["status"] == "failure"
    assert "code" not in results["t-nocode"]["result"]["error"]

    await fake.wait_for(lambda: fake.heartbeats)
    assert set(fake.heartbeats[0]) == {"load", "status"}
    assert "task received job=job-t-ok task=t-ok" in _log(proc)


async def test_fail_times_counts_attempts_per_job(fake: FakeOrchestrator, echo_worker: WorkerFactory) -> None:
    echo_worker(fake.url)
    for attempt in range(3):
        fake.add_task("job-a", f"a{attempt}", {"fail_times": 2, "outcome": "status:done"})
    fake.add_task("job-b", "b0", {"fail_times": 1})
    codes = []
    for attempt in range(3):
        result = (await fake.result_for(f"a{attempt}"))["result"]
        codes.append(result["status"] if result["status"] != "failure" else result["error"]["code"])
    assert codes == ["TRANSIENT_ERROR", "TRANSIENT_ERROR", "done"]
    assert (await fake.result_for("b0"))["result"]["error"]["code"] == "TRANSIENT_ERROR"


async def test_concurrency_limit_and_sleep(fake: FakeOrchestrator, echo_worker: WorkerFactory) -> None:
    echo_worker(fake.url, MAX_CONCURRENT="2")
    started = time.monotonic()
    for i in range(4):
        fake.add_task(f"job-{i}", f"t{i}", {"sleep_s": 0.4})
    for i in range(4):
        assert (await fake.result_for(f"t{i}"))["result"]["status"] == "success"
    assert fake.max_in_flight == 2
    assert time.monotonic() - started >= 0.8


async def test_progress_and_cancel_over_websocket(fake: FakeOrchestrator, echo_worker: WorkerFactory) -> None:
    echo_worker(fake.url)
    await fake.wait_for(lambda: fake.ws_clients.get("echo-1"))
    fake.add_task("job-c", "t-c", {"sleep_s": 30})
    progress = await fake.wait_for(lambda: fake.ws_messages)
    assert progress[0] == {
        "event": "progress_update",
        "job_id": "job-c",
        "task_id": "t-c",
        "progress": 0.5,
        "message": "echo_worker working",
    }
    await fake.ws_clients["echo-1"].send_json(
        {"command": "cancel_task", "type": "cancel_task", "task_id": "t-c", "job_id": "job-c"}
    )
    result = await fake.result_for("t-c", timeout=3)
    assert result["result"]["status"] == "cancelled"


async def test_crash_exits_with_code_3(fake: FakeOrchestrator, echo_worker: WorkerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    first = echo_worker(fake.url, "echo-a")
    fake.add_task("job-x", "t-x", {"crash": "echo-b"})  # names another worker: answered normally
    assert (await fake.result_for("t-x"))["result"]["status"] == "success"
    fake.add_task("job-y", "t-y", {"crash_once_file": str(marker)})  # first taker dies
    assert await asyncio.to_thread(first.wait, 5) == 3
    assert marker.read_text() == "echo-a"
    assert "crashing on task=t-y" in _log(first)

    second = echo_worker(fake.url, "echo-b")
    fake.add_task("job-y", "t-y2", {"crash_once_file": str(marker)})  # re-dispatch: no crash this time
    assert (await fake.result_for("t-y2"))["result"]["status"] == "success"
    fake.add_task("job-z", "t-z", {"crash": ["echo-b"]})
    assert await asyncio.to_thread(second.wait, 5) == 3


async def test_survives_outage_and_reregisters_on_404(echo_worker: WorkerFactory) -> None:
    port = free_port()
    proc = echo_worker(f"http://127.0.0.1:{port}", "late")
    await asyncio.sleep(0.6)  # the worker retries against a closed port meanwhile
    orchestrator = FakeOrchestrator()
    await orchestrator.start(port)
    try:
        await orchestrator.wait_for(lambda: orchestrator.registrations)
        orchestrator.forget_worker = True  # heartbeats now answer 404
        await orchestrator.wait_for(lambda: len(orchestrator.registrations) == 2)
        orchestrator.add_task("job-l", "t-l", {})
        assert (await orchestrator.result_for("t-l"))["result"]["status"] == "success"
        assert proc.poll() is None
    finally:
        await orchestrator.stop()


async def test_bad_token_exits_2_and_sigterm_exits_0(fake: FakeOrchestrator, echo_worker: WorkerFactory) -> None:
    rejected = echo_worker(fake.url, "bad", WORKER_TOKEN="wrong")
    good = echo_worker(fake.url, "good")
    await fake.wait_for(lambda: fake.registrations)
    # Blocking waits go to a thread: the fake orchestrator shares this event loop.
    assert await asyncio.to_thread(rejected.wait, 5) == 2
    assert "registration rejected http=401" in _log(rejected)
    assert await asyncio.to_thread(stop_process, good, 3) == 0
    assert "stopped exit_code=0" in _log(good)


# --------------------------------------------------------------------------- process helpers


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_http_reports_a_dead_process(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    proc = start_process([sys.executable, "-c", "print('boom before serving'); raise SystemExit(7)"], {}, log)
    with pytest.raises(ProcessDied, match="boom before serving"):
        wait_http(f"http://127.0.0.1:{free_port()}/", timeout_s=5, proc=proc)
    assert proc.returncode == 7


def test_wait_http_and_stop_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    proc = start_process(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], {}, tmp_path / "h.log"
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/does-not-exist", timeout_s=10, proc=proc) == 404
    finally:
        code = stop_process(proc)
    assert code is not None
    assert proc.poll() is not None


def test_stop_process_escalates_to_sigkill(tmp_path: Path) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    proc = start_process([sys.executable, "-c", script], {}, log)
    wait_log(log, "ready", timeout_s=5, proc=proc)
    started = time.monotonic()
    assert stop_process(proc, timeout_s=0.5) == -9
    assert time.monotonic() - started < 3


# --------------------------------------------------------------------------- the real SDK's venv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sdk_venv_provides_the_sdk(request: pytest.FixtureRequest) -> None:
    cache = request.config.cache
    assert cache is not None
    try:
        python = sdk_venv(cache.mkdir("avtomatika-sdk"))
    except SdkUnavailable as exc:
        pytest.skip(f"PyPI unreachable, cannot install the worker SDK: {exc}")
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import avtomatika_worker as s; from avtomatika_worker import Worker; print(s.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == SDK_VERSION
    assert sdk_venv(cache.mkdir("avtomatika-sdk")) == python  # cached: instant the second time
