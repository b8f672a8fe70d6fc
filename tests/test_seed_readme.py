"""Every Python block of the original README (docs/seed-readme.md) runs as written: our public contract.

* The Quick Start (``my_app.py``) runs as a real process, ``python my_app.py``, and is driven over HTTP.
* The cookbook fragments extend the Quick Start's ``my_blueprint``; the Quick Start block is executed
  (without its ``__main__`` part) in a namespace, each fragment in that namespace, unchanged, and then
  jobs are run in-process to prove the fragment does what the README says. The states a fragment
  names but does not define are added here as small handlers (``validate()`` is used to check that
  exactly those are missing), and a conditional handler of ``start`` routes test jobs into it.
* The DataStore fragment talks to a real ``redis-server`` started by the test.

The blocks are compiled with the Markdown file as their file name and its own line numbers, so a
traceback points at ``docs/seed-readme.md``; the handlers' source (which validation reads for their
transitions) is read from there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.doc_samples import CodeBlock, code_blocks
from support.processes import free_port, start_process, stop_process, wait_http

from avtomatika import Job, OrchestratorEngine, StateMachineBlueprint
from avtomatika.config import Config
from avtomatika.events import Event, EventKind
from avtomatika.models import TERMINAL_STATUSES, Task
from avtomatika.storage import MemoryStorage

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "docs" / "seed-readme.md"
#: The seed README is a copy of the original; an edit to it must be deliberate (update the hash then).
SEED_SHA256 = "2e09327b5683d6d89db63457ecde0a2711354d3ed0af3d03639fb03c59fb6183"

BLOCKS = code_blocks(SEED)
#: The first line of each Python block, in order: a block cannot disappear or move unnoticed.
EXPECTED_FIRST_LINES = [
    "# my_app.py",
    '# Will only run if initial_data had a field "type" with value "urgent"',
    '@my_blueprint.handler_for("transcode_video")',
    "# 1. Fan-out: Dispatch multiple tasks leading to one aggregation state",
    "import redis.asyncio as redis",
]
QUICK_START, WHEN, DISPATCH, FAN_OUT, DATA_STORE = BLOCKS if len(BLOCKS) == 5 else [None] * 5  # checked below


# -- the document ----------------------------------------------------------------------------------
def test_seed_readme_is_the_pinned_original() -> None:
    digest = hashlib.sha256(SEED.read_bytes()).hexdigest()
    assert digest == SEED_SHA256, f"{SEED} changed; if that is deliberate, update SEED_SHA256"


def test_every_python_block_of_the_seed_readme_is_tested() -> None:
    assert [block.code.splitlines()[0] for block in BLOCKS] == EXPECTED_FIRST_LINES, [b.name for b in BLOCKS]
    others = {block.language for block in code_blocks(SEED, None)} - {"python"}
    assert others == {"bash"}, "a block in another language may hide a sample that needs a test"


# -- Quick Start: a real process, driven over HTTP ---------------------------------------------------
# Python leaves SIGINT ignored if it was ignored when the process started (as for background jobs of
# a non-interactive shell); restore the default so the child behaves as in a terminal, then exec
# `python my_app.py` itself.
_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class QuickStartApp:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, stdout: Path, stderr: Path) -> None:
        self.proc, self.port, self.stdout_path, self.stderr_path = proc, port, stdout, stderr

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return f"--- stdout ---\n{self.stdout}\n--- stderr (tail) ---\n{stderr[-3000:]}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")

    def wait_stdout(self, needle: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.stdout:
            assert time.monotonic() < deadline, f"{needle!r} not printed within {timeout_s}s\n{self.output()}"
            time.sleep(0.05)


@pytest.fixture
def quick_start_app(tmp_path: Path) -> Iterator[QuickStartApp]:
    assert QUICK_START is not None
    (tmp_path / "my_app.py").write_text(QUICK_START.code, encoding="utf-8")
    port = free_port()
    # The sample's Config() reads the environment: keep the runner's own settings out of it.
    env = {k: v for k, v in os.environ.items() if k not in Config.documented_settings()}
    env |= {"API_HOST": "127.0.0.1", "API_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WITH_DEFAULT_SIGINT, "my_app.py"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    app = QuickStartApp(proc, port, stdout, stderr)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/_public/status", 20, proc, stderr)
        except Exception as exc:
            pytest.fail(f"{QUICK_START.name}: the Quick Start did not serve: {exc}\n{app.output()}")
        yield app
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_quick_start_serves_jobs_over_http(quick_start_app: QuickStartApp) -> None:
    app = quick_start_app
    assert app.request("GET", "/_public/status") == (200, {"status": "ok"})
    for initial_data in ({"order": 42}, {"user": "ada", "items": ["book", "pen"]}):
        status, answer = app.request("POST", "/api/v1/jobs/my_flow", initial_data)
        assert (status, answer["status"]) == (202, "accepted"), answer
        job_id = answer["job_id"]
        deadline = time.monotonic() + 10
        while (job := app.request("GET", f"/api/v1/jobs/{job_id}")[1])["status"] != "finished":
            assert job["status"] not in ("failed", "quarantined", "cancelled"), f"{job}\n{app.output()}"
            assert time.monotonic() < deadline, f"job not finished: {job}\n{app.output()}"
            time.sleep(0.05)
        assert job["initial_data"] == initial_data
        app.wait_stdout(f"Job {job_id} | Complete.")
        assert f"Job {job_id} | Start: {initial_data!r}\n" in app.stdout, app.output()
    assert app.stdout.startswith("Starting Orchestrator engine...\n"), app.output()


@pytest.mark.slow
def test_quick_start_stops_on_ctrl_c(quick_start_app: QuickStartApp) -> None:
    app = quick_start_app
    app.proc.send_signal(signal.SIGINT)  # Ctrl-C in a terminal: one SIGINT
    try:
        code = app.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 5s after one SIGINT\n{app.output()}")
    assert "Stopping server.\n" in app.stdout, app.output()
    assert code == 0, app.output()


# -- cookbook fragments, in-process --------------------------------------------------------------------
def run_block(block: CodeBlock | None, namespace: dict[str, Any]) -> None:
    assert block is not None
    exec(block.compile(), namespace)


@pytest.fixture
def quick_start() -> dict[str, Any]:
    """The Quick Start's module namespace, as `import my_app` would give it (the server is not run)."""
    namespace: dict[str, Any] = {"__name__": "my_app"}
    run_block(QUICK_START, namespace)
    assert isinstance(namespace["my_blueprint"], StateMachineBlueprint)
    return namespace


def missing_states(blueprint: StateMachineBlueprint) -> set[str]:
    """States the blueprint's handlers transition to but nobody handles (validation errors)."""
    prefix = "transitions to unknown state '"
    return {p.message[len(prefix) : -1] for p in blueprint.validate() if p.message.startswith(prefix)}


EngineFactory = Callable[..., Awaitable[OrchestratorEngine]]


@pytest.fixture
async def start_engine() -> AsyncIterator[EngineFactory]:
    engines: list[OrchestratorEngine] = []

    async def start(*blueprints: StateMachineBlueprint, **settings: Any) -> OrchestratorEngine:
        engine = OrchestratorEngine(MemoryStorage(), Config(**settings))
        for blueprint in blueprints:
            engine.register_blueprint(blueprint)
        await engine.start(http=False)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


async def wait_terminal(engine: OrchestratorEngine, job_id: str, timeout_s: float = 10.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while True:
        job = await engine.get_job(job_id)
        assert job is not None
        if job.status in TERMINAL_STATUSES:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} in {job.state}: {job}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def worker(
    engine: OrchestratorEngine, task_types: list[str], answer: Callable[[Task], dict[str, Any]]
) -> AsyncIterator[list[Task]]:
    """A worker registered through the engine's API, answering every task it takes with ``answer``."""
    worker_id = f"worker-{'-'.join(task_types)}"
    await engine.register_worker({"worker_id": worker_id, "supported_tasks": task_types, "max_concurrent_tasks": 16})
    taken: list[Task] = []

    async def serve() -> None:
        while True:
            task = await engine.next_task(worker_id, timeout_s=0.5)
            if task is not None:
                taken.append(task)
                await engine.submit_result(task.job_id, task.id, worker_id, answer(task))

    serving = asyncio.create_task(serve())
    try:
        yield taken
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving  # re-raises what made the worker stop, if anything did


def steps_of(engine: OrchestratorEngine) -> list[Event]:
    """Every handler run from now on (STEP_FINISHED events; the state that ran is `data["state"]`)."""
    steps: list[Event] = []
    engine.events.subscribe(lambda e: steps.append(e) if e.kind == EventKind.STEP_FINISHED else None)
    return steps


async def test_conditional_transitions_block(quick_start: dict[str, Any], start_engine: EngineFactory) -> None:
    run_block(WHEN, quick_start)
    bp: StateMachineBlueprint = quick_start["my_blueprint"]
    assert missing_states(bp) == {"urgent_processing", "normal_processing"}

    @bp.handler_for("start").when("context.initial_data.route == 'decision_step'")
    async def to_decision_step(context):
        context.actions.transition_to("decision_step")

    @bp.handler_for("urgent_processing")
    async def urgent_processing(context):
        context.state_history["processed_as"] = "urgent"
        context.actions.transition_to("end")

    @bp.handler_for("normal_processing")
    async def normal_processing(context):
        context.state_history["processed_as"] = "normal"
        context.actions.transition_to("end")

    engine = await start_engine(bp)
    cases = [
        ({"type": "urgent"}, "urgent"),
        ({"type": "normal"}, "normal"),
        ({"type": "URGENT"}, "normal"),
        ({}, "normal"),
    ]
    for data, expected in cases:
        job = await engine.create_job(bp.name, {"route": "decision_step", **data})
        job = await wait_terminal(engine, job.id)
        assert (job.status, job.state_history) == ("finished", {"processed_as": expected}), (data, job)
        assert job.visits.get("decision_step") == 1


async def test_dispatch_task_block(quick_start: dict[str, Any], start_engine: EngineFactory) -> None:
    run_block(DISPATCH, quick_start)
    bp: StateMachineBlueprint = quick_start["my_blueprint"]
    assert missing_states(bp) == {"publish_video", "transcoding_failed", "manual_review"}

    @bp.handler_for("start").when("context.initial_data.route == 'transcode_video'")
    async def to_transcode_video(context):
        context.actions.transition_to("transcode_video")

    def ending_in(state: str) -> None:
        async def record(context):
            context.state_history["ended_in"] = state
            context.actions.transition_to("end")

        record.__qualname__ = f"record_{state}"
        bp.handler_for(state)(record)

    for state in ("publish_video", "transcoding_failed", "manual_review"):
        ending_in(state)

    # The worker answers each job with the status its initial data asks for.
    def answer(task: Task) -> dict[str, Any]:
        status = task.params["input_path"].rsplit("/", 1)[-1]
        return {"status": status, "data": {"transcoded": task.params["input_path"]}}

    engine = await start_engine(bp, JOB_MAX_RETRIES=0)
    async with worker(engine, ["video_transcoding"], answer) as taken:
        jobs = {}
        for status in ("success", "failure", "needs_review", "something_else"):
            job = await engine.create_job(bp.name, {"route": "transcode_video", "path": f"/videos/{status}"})
            jobs[status] = await wait_terminal(engine, job.id)
    assert sorted((t.type, t.params["input_path"]) for t in taken) == [
        ("video_transcoding", "/videos/failure"),
        ("video_transcoding", "/videos/needs_review"),
        ("video_transcoding", "/videos/something_else"),
        ("video_transcoding", "/videos/success"),
    ]
    assert jobs["success"].status == "finished"
    assert jobs["success"].state_history == {"transcoded": "/videos/success", "ended_in": "publish_video"}
    # A "failure" takes its transition once retries are spent (none here: JOB_MAX_RETRIES=0).
    assert (jobs["failure"].status, jobs["failure"].state_history["ended_in"]) == ("finished", "transcoding_failed")
    assert jobs["needs_review"].state_history == {"transcoded": "/videos/needs_review", "ended_in": "manual_review"}
    # "If the worker returns a status not listed in transitions, the job will ... transition to a failed state."
    other = jobs["something_else"]
    assert other.status == "failed", other
    assert other.error == "Worker returned unhandled status: something_else"
    assert "ended_in" not in other.state_history


async def test_dispatch_task_failure_is_retried_before_its_transition(
    quick_start: dict[str, Any], start_engine: EngineFactory
) -> None:
    run_block(DISPATCH, quick_start)
    bp: StateMachineBlueprint = quick_start["my_blueprint"]

    @bp.handler_for("start").when("context.initial_data.route == 'transcode_video'")
    async def to_transcode_video(context):
        context.actions.transition_to("transcode_video")

    @bp.handler_for("transcoding_failed", is_end=True)
    async def transcoding_failed(context):
        pass

    @bp.handler_for("publish_video", is_end=True)
    async def publish_video(context):
        pass

    @bp.handler_for("manual_review", is_end=True)
    async def manual_review(context):
        pass

    def answer(task: Task) -> dict[str, Any]:
        return {"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": "network down"}}

    engine = await start_engine(bp, JOB_MAX_RETRIES=2, RETRY_BACKOFF_BASE_SECONDS=0.01)
    async with worker(engine, ["video_transcoding"], answer) as taken:
        job = await engine.create_job(bp.name, {"route": "transcode_video", "path": "/videos/a.mp4"})
        job = await wait_terminal(engine, job.id)
    assert (job.status, job.state) == ("finished", "transcoding_failed"), job
    assert [t.attempt for t in taken] == [1, 2, 3]


async def test_fan_out_fan_in_block(quick_start: dict[str, Any], start_engine: EngineFactory) -> None:
    run_block(FAN_OUT, quick_start)
    bp: StateMachineBlueprint = quick_start["my_blueprint"]
    assert missing_states(bp) == {"processing_complete"}

    @bp.handler_for("start").when("context.initial_data.route == 'process_files'")
    async def to_process_files(context):
        context.actions.transition_to("process_files")

    @bp.handler_for("processing_complete", is_end=True)
    async def processing_complete(context):
        pass

    def answer(task: Task) -> dict[str, Any]:
        name = task.params["file"]
        return {"status": "success", "data": {"file": name, "size": len(name)}}

    engine = await start_engine(bp)
    steps = steps_of(engine)
    files = ["a.txt", "bb.txt", "ccc.txt", "dddd.txt"]
    async with worker(engine, ["file_analysis"], answer) as taken:
        job = await engine.create_job(bp.name, {"route": "process_files", "files": files})
        job = await wait_terminal(engine, job.id)
    assert (job.status, job.state) == ("finished", "processing_complete"), job
    assert sorted(t.params["file"] for t in taken) == files
    assert len({t.id for t in taken}) == len(files)
    aggregations = [s for s in steps if s.job_id == job.id and s.data.get("state") == "aggregate_results"]
    assert len(aggregations) == 1, "the aggregator must run once, after all branches"
    summary = job.state_history["summary"]
    assert sorted(summary, key=lambda d: d["file"]) == [{"file": f, "size": len(f)} for f in files]


async def test_cookbook_blocks_compose_into_one_blueprint(
    quick_start: dict[str, Any], start_engine: EngineFactory
) -> None:
    """Pasted together below the Quick Start (as a reader would), the fragments still make one valid app."""
    for block in (WHEN, DISPATCH, FAN_OUT, DATA_STORE):
        run_block(block, quick_start)
    bp: StateMachineBlueprint = quick_start["my_blueprint"]
    expected = {
        "urgent_processing",
        "normal_processing",
        "publish_video",
        "transcoding_failed",
        "manual_review",
        "processing_complete",
    }
    assert missing_states(bp) == expected
    for state in sorted(expected):

        async def finish(context):
            pass

        finish.__qualname__ = f"finish_{state}"
        bp.handler_for(state, is_end=True)(finish)
    assert [p for p in bp.validate() if p.severity == "error"] == []
    engine = await start_engine(bp)
    job = await engine.create_job(bp.name, {"hello": "world"})
    assert (await wait_terminal(engine, job.id)).status == "finished"


# -- DataStore, with a real Redis --------------------------------------------------------------------
@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A throwaway ``redis-server`` on a free port, without persistence."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/bootstrap.sh installs it: apt-get install redis-server)")
    port = free_port()
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = start_process([*args, "--dir", str(data_dir)], log_path=tmp_path / "redis.log")
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}: {(tmp_path / 'redis.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        yield port
    finally:
        stop_process(proc)


async def test_data_store_block_with_real_redis(
    quick_start: dict[str, Any],
    start_engine: EngineFactory,
    redis_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_block(DATA_STORE, quick_start)  # `import redis.asyncio`: redis-py comes with the [redis] extra
    redis = quick_start["redis"]
    bp: StateMachineBlueprint = quick_start["bp"]
    assert bp.data_stores == {"cache": quick_start["redis_client"]}
    assert missing_states(bp) == set()

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("get_from_cache")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    # The block's client points at the default localhost:6379; use the test's server instead.
    client = redis.Redis(port=redis_port, decode_responses=True)
    bp.data_stores["cache"] = client
    try:
        value = json.dumps({"id": 123, "name": "Ada Lovelace"})
        await client.set("user:123", value)
        engine = await start_engine(bp)
        job = await engine.create_job(bp.name, {})
        job = await wait_terminal(engine, job.id)
    finally:
        await client.aclose()
    out = capsys.readouterr().out
    assert out.count(f"User from cache: {value}\n") == 1, out
    # The fragment's handler takes no action, which the engine reports at once (README: "no action at
    # all quarantines the job at once with a message naming the blueprint and the state").
    assert job.status == "quarantined", job
    assert "blueprint_with_datastore" in (job.error or "")
    assert "get_from_cache" in (job.error or "")
