#!/usr/bin/env python3
"""A test worker built on the real SDK, ``avtomatika-worker==1.0b1``: how to run it, and the worker.

The SDK pins ``aiohttp~=3.13.2`` and pulls ``aioboto3``, so it lives in a venv of its own, created once
and cached under a directory the caller chooses. This module has two halves:

- Imported by the tests (it needs only the standard library and aiohttp then): ``sdk_venv`` makes the
  venv, ``sdk_worker_command`` and ``sdk_worker_env`` start the worker with it::

    @pytest.fixture(scope="session")
    def sdk_python(request) -> Path:
        try:
            return sdk_venv(request.config.cache.mkdir("avtomatika-sdk"))
        except SdkUnavailable as exc:
            pytest.skip(str(exc))

    proc = start_process(sdk_worker_command(sdk_python),
                         sdk_worker_env(url, "sdk-1", token), tmp_path / "sdk-1.log")

- Run as a script by the SDK venv's python (``main``, the only place that imports the SDK)::

    <sdk-venv>/bin/python tests/support/workers/sdk.py

Configured by the SDK's own environment variables (``ORCHESTRATOR_URL``, ``WORKER_ID``, ``WORKER_TOKEN``,
``HEARTBEAT_INTERVAL``, ``TASK_POLL_TIMEOUT``, ``TASK_POLL_ERROR_DELAY``, ``IDLE_POLL_DELAY``,
``RESULT_RETRY_INITIAL_DELAY``, ``RESULT_MAX_RETRIES``, ``MAX_CONCURRENT_TASKS``,
``WORKER_ENABLE_WEBSOCKETS``, ``COST_PER_SKILL``, ``INSTALLED_MODELS``, ``CPU_CORES``, ``GPU_MODEL``,
``GPU_VRAM_GB``, ...) plus two of this script: ``TASK_TYPES`` (comma separated, default ``echo``; a type
named ``typed_echo`` gets the dataclass-typed handler below) and ``WORKER_TYPE`` (passed to
``Worker(worker_type=...)``, because the SDK's constructor argument always overrides its own
``WORKER_TYPE`` variable). ``SDK_WIRE_LOG=0`` turns off the HTTP trace log.

The same params-driven behaviours as ``echo.py``:

- ``outcome``: ``success`` (default) -> ``{"status": "success", "data": {"echo": params, "worker_id": ...}}``
  (no ``error`` key: what SDK users write); ``transient`` / ``permanent`` / ``invalid`` ->
  ``{"status": "failure", "error": {"code": ..., "message": ...}}`` (no ``data`` key); ``failure`` -> an
  error without ``code``; ``raise`` -> the handler raises and the SDK itself reports
  ``{"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": str(exc)}}``;
  ``status:<name>`` -> that status with the success data.
- ``fail_times`` N: TRANSIENT_ERROR (returned, not raised) for the first N attempts of that job_id.
- ``sleep_s``: sleep before answering. A server ``cancel_task`` over the WebSocket cancels it and the SDK
  posts ``{"status": "cancelled"}`` - only if ``WORKER_ENABLE_WEBSOCKETS=true`` and only if the message
  has ``"type": "cancel_task"`` (the SDK ignores the ``command`` key).
- ``crash``: true / this worker's id / a list of ids -> ``os._exit(3)`` when the handler starts;
  ``crash_once_file``: crash only if that file did not exist yet.
- One ``send_progress(task_id, job_id, 0.5, ...)`` per task: the SDK sends
  ``{"type": "progress_update", ...}`` when its WebSocket is open, otherwise nothing.
- ``typed_echo`` tasks: params are validated by the SDK against a dataclass with a required ``text``; a
  missing ``text`` becomes the SDK's own ``INVALID_INPUT_ERROR`` result.

What the SDK cannot express (so neither can this script):
- There is no SIGTERM handling: SIGTERM kills the process at once, running tasks get no result
  (exit status -15). SIGINT (KeyboardInterrupt) instead cancels running tasks, which post
  ``{"status": "cancelled"}`` on the way out; the process then exits 0 after ~5 s (the SDK's WebSocket
  manager sleeps its reconnect delay inside a ``finally``).
- Registration is attempted once at start-up: if the engine is not up yet (or answers 4xx), the worker
  is never registered but still polls and heartbeats. Start the engine first.
- A heartbeat answered 404 (engine forgot the worker) is only logged; the SDK never re-registers.
- ``tracing_context`` and ``priority`` of a task: tracing_context is dropped; priority is passed to the
  handler (it is logged here) but nothing else.
- Progress and cancel need the WebSocket, which the SDK opens at ``/_worker/ws`` (never
  ``/_worker/ws/{worker_id}``), identified only by the ``X-Worker-Token`` header.
- ``Worker(max_concurrent_tasks=...)`` is ignored by 1.0b1 (it sets a lower-case attribute nobody
  reads): concurrency is ``MAX_CONCURRENT_TASKS`` only.

Do not add ``from __future__ import annotations`` here: the SDK inspects the ``params`` annotation
object to decide on dataclass validation, and string annotations would silently disable it.
"""

import asyncio
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

# --- Run by the tests: the SDK's venv and the worker's command line and environment ---------------------

SDK_REQUIREMENT = "avtomatika-worker==1.0b1"
SDK_VERSION = "1.0b1"

_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


class SdkUnavailable(RuntimeError):
    """The SDK could not be installed because the package index is unreachable (tests should skip)."""


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (several pytest processes may build the venv at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def sdk_venv(
    cache_dir: str | os.PathLike[str],
    *,
    requirement: str = SDK_REQUIREMENT,
    timeout_s: float = 600.0,
) -> Path:
    """Return the python of a venv holding ``requirement``, creating it under ``cache_dir`` if needed.

    The venv is ``<cache_dir>/sdk-venv-<requirement>``; a ``.ready`` marker is written only after the
    install and an import check succeed, so an interrupted build is redone next time. Raises
    ``SdkUnavailable`` when pip fails for lack of network/index, ``RuntimeError`` on other failures.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", requirement)
    venv_dir = Path(cache_dir) / f"sdk-venv-{slug}"
    python = venv_dir / "bin" / "python"
    marker = venv_dir / ".ready"
    if marker.exists() and python.exists():
        return python
    with _file_lock(Path(cache_dir) / f"sdk-venv-{slug}.lock"):
        if marker.exists() and python.exists():
            return python
        if venv_dir.exists():
            shutil.rmtree(venv_dir)
        made = _run([sys.executable, "-m", "venv", str(venv_dir)], timeout_s)
        if made.returncode != 0:
            raise RuntimeError(f"python -m venv failed:\n{_tail(made.stdout + made.stderr)}")
        pip = _run([str(python), "-m", "pip", "install", "--quiet", requirement], timeout_s)
        if pip.returncode != 0:
            output = pip.stdout + pip.stderr
            if any(needle in output for needle in _NETWORK_ERRORS):
                raise SdkUnavailable(f"cannot install {requirement} (package index unreachable?):\n{_tail(output)}")
            raise RuntimeError(f"pip install {requirement} failed:\n{_tail(output)}")
        check = _run(
            [
                str(python),
                "-c",
                "import avtomatika_worker, sys; sys.stdout.write(avtomatika_worker.__version__)",
            ],
            120,
        )
        if check.returncode != 0:
            raise RuntimeError(f"the SDK venv cannot import avtomatika_worker:\n{_tail(check.stderr)}")
        marker.write_text(check.stdout.strip() + "\n", encoding="utf-8")
    return python


def sdk_worker_command(python: str | os.PathLike[str]) -> list[str]:
    """The command line that runs this module as the worker, with the SDK venv's python."""
    return [os.fspath(python), os.fspath(Path(__file__).resolve())]


def sdk_worker_env(
    orchestrator_url: str,
    worker_id: str,
    token: str,
    *,
    task_types: str = "echo",
    websockets: bool = True,
    **overrides: str,
) -> dict[str, str]:
    """Environment for the SDK worker with test-friendly timings (override any key via ``overrides``).

    Only SDK variables plus our script's ``TASK_TYPES``/``WORKER_TYPE``. Note the SDK defaults we change:
    HEARTBEAT_INTERVAL 15 -> 1, TASK_POLL_ERROR_DELAY 5 -> 0.5, RESULT_RETRY_INITIAL_DELAY 1 -> 0.2,
    WORKER_ENABLE_WEBSOCKETS false -> true (unless ``websockets=False``), MAX_CONCURRENT_TASKS 10 -> 4.
    """
    env = {
        "ORCHESTRATOR_URL": orchestrator_url,
        "WORKER_ID": worker_id,
        "WORKER_TOKEN": token,
        "TASK_TYPES": task_types,
        "HEARTBEAT_INTERVAL": "1",
        "TASK_POLL_TIMEOUT": "30",
        "TASK_POLL_ERROR_DELAY": "0.5",
        "IDLE_POLL_DELAY": "0.01",
        "RESULT_RETRY_INITIAL_DELAY": "0.2",
        "MAX_CONCURRENT_TASKS": "4",
        "WORKER_ENABLE_WEBSOCKETS": "true" if websockets else "false",
    }
    env.update(overrides)
    return env


# --- Run by the SDK venv's python: the worker ----------------------------------------------------------

# The SDK's error codes (``avtomatika_worker.types``), by value so that importing this module needs no SDK;
# ``main`` checks them against the SDK's own.
TRANSIENT_ERROR = "TRANSIENT_ERROR"
PERMANENT_ERROR = "PERMANENT_ERROR"
INVALID_INPUT_ERROR = "INVALID_INPUT_ERROR"
ERROR_CODES = {"transient": TRANSIENT_ERROR, "permanent": PERMANENT_ERROR, "invalid": INVALID_INPUT_ERROR}
CRASH_EXIT_CODE = 3

log = logging.getLogger("sdk_worker")
_attempts: dict[str, int] = {}


@dataclass
class TypedParams:
    """Params of ``typed_echo`` tasks, validated by the SDK."""

    text: str


async def _log_request_end(_session: Any, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
    status = params.response.status
    log.info("http %s %s -> %s", params.method, params.url.path, status)
    if params.url.path.endswith("/workers/register"):
        if status == 200:
            log.info("registered")
        else:
            log.warning("registration rejected http=%s", status)


async def _log_request_exception(_session: Any, _ctx: Any, params: aiohttp.TraceRequestExceptionParams) -> None:
    log.info("http %s %s failed: %r", params.method, params.url.path, params.exception)


def _worker_id() -> str:
    return worker._config.WORKER_ID


def wants_crash(params: dict[str, Any]) -> bool:
    """Whether ``params`` ask this worker to die on receipt."""
    crash = params.get("crash")
    me = _worker_id()
    if crash is True or crash == me or (isinstance(crash, list) and me in crash):
        return True
    marker = params.get("crash_once_file")
    if marker:
        try:
            fd = os.open(str(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, me.encode())
        os.close(fd)
        return True
    return False


def outcome_result(params: dict[str, Any]) -> dict[str, Any]:
    """The handler's return value for ``params["outcome"]``."""
    outcome = str(params.get("outcome", "success"))
    data = {"echo": params, "worker_id": _worker_id()}
    if outcome == "success":
        return {"status": "success", "data": data}
    if outcome.startswith("status:"):
        return {"status": outcome.removeprefix("status:"), "data": data}
    if outcome in ERROR_CODES:
        return {
            "status": "failure",
            "error": {"code": ERROR_CODES[outcome], "message": f"requested {outcome}"},
        }
    if outcome == "failure":
        return {"status": "failure", "error": {"message": "requested failure without code"}}
    if outcome == "raise":
        raise RuntimeError("sdk_worker: requested exception")
    return {
        "status": "failure",
        "error": {"code": PERMANENT_ERROR, "message": f"unknown outcome {outcome!r}"},
    }


async def handle(params: dict, **kwargs: Any) -> dict[str, Any]:
    """The generic handler. The SDK requires the first parameter to be named ``params``."""
    task_id, job_id = kwargs["task_id"], kwargs["job_id"]
    attempt = _attempts[job_id] = _attempts.get(job_id, 0) + 1
    log.info(
        "task received job=%s task=%s attempt=%s priority=%s params=%s",
        job_id,
        task_id,
        attempt,
        kwargs.get("priority"),
        json.dumps(params),
    )
    if wants_crash(params):
        log.info("crashing on task=%s (exit %s)", task_id, CRASH_EXIT_CODE)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
    await kwargs["send_progress"](task_id, job_id, 0.5, "sdk_worker working")
    sleep_s = float(params.get("sleep_s") or 0)
    if sleep_s > 0:
        await asyncio.sleep(sleep_s)
    fail_times = int(params.get("fail_times") or 0)
    if attempt <= fail_times:
        result: dict[str, Any] = {
            "status": "failure",
            "error": {"code": TRANSIENT_ERROR, "message": f"planned failure {attempt} of {fail_times}"},
        }
    else:
        result = outcome_result(params)
    log.info("task done job=%s task=%s status=%s", job_id, task_id, result["status"])
    return result


async def handle_typed(params: TypedParams, **kwargs: Any) -> dict[str, Any]:
    """A handler whose params the SDK validates (missing ``text`` -> INVALID_INPUT_ERROR by the SDK)."""
    log.info("typed task received job=%s task=%s", kwargs["job_id"], kwargs["task_id"])
    return {"status": "success", "data": {"echo": asdict(params), "worker_id": _worker_id()}}


worker: Any = None
"""The running worker (``main`` sets it; the handlers read its id)."""


def traced_worker(worker_type: str) -> Any:
    """The SDK's ``Worker``, unchanged except that its HTTP session logs every request and answer."""
    from avtomatika_worker import Worker

    class TracedWorker(Worker):
        async def main(self) -> None:  # type: ignore[override]
            """Give the SDK a session with a trace config, then run the SDK's own main loop."""
            if os.environ.get("SDK_WIRE_LOG", "1") != "0" and self._http_session is None:
                trace = aiohttp.TraceConfig()
                trace.on_request_end.append(_log_request_end)
                trace.on_request_exception.append(_log_request_exception)
                self._http_session = aiohttp.ClientSession(trace_configs=[trace])
            await super().main()

    return TracedWorker(worker_type=worker_type)


def main() -> None:
    """Run the worker (with the SDK venv's python), configured by the environment."""
    global worker
    from avtomatika_worker import types

    assert (types.TRANSIENT_ERROR, types.PERMANENT_ERROR, types.INVALID_INPUT_ERROR) == (
        TRANSIENT_ERROR,
        PERMANENT_ERROR,
        INVALID_INPUT_ERROR,
    ), "the SDK's error codes changed"
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s sdk_worker[{os.environ.get('WORKER_ID', '?')}] %(name)s %(levelname)s %(message)s",
    )
    worker = traced_worker(os.environ.get("WORKER_TYPE", "sdk-worker"))
    for task_type in [t.strip() for t in os.environ.get("TASK_TYPES", "echo").split(",") if t.strip()]:
        worker.task(task_type)(handle_typed if task_type == "typed_echo" else handle)
    log.info("starting worker_id=%s url=%s", _worker_id(), worker._config.ORCHESTRATORS[0]["url"])
    worker.run()


if __name__ == "__main__":
    main()
