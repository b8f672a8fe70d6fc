#!/usr/bin/env python3
"""A protocol-exact test worker for Avtomatika (see /work/shared/PROTOCOL.md, "Worker API").

Run it as a standalone process: ``python tests/support/workers/echo.py``. It needs only aiohttp.

Configuration (environment):

==========================  ==================================================================
ORCHESTRATOR_URL            base URL of the engine (default ``http://127.0.0.1:8080``)
WORKER_ID                   worker id (default ``echo-<pid>``)
WORKER_TOKEN                sent as ``X-Worker-Token`` on every request (default empty)
WORKER_TYPE                 ``worker_type`` in the record (default ``echo-worker``)
TASK_TYPES                  comma-separated task types served (default ``echo``)
MAX_CONCURRENT              tasks run at once (default 4)
HEARTBEAT_INTERVAL          seconds between heartbeats (default 5)
POLL_TIMEOUT                client-side timeout of one long poll, seconds (default 40; keep it
                            above the engine's WORKER_POLL_TIMEOUT_SECONDS)
IDLE_POLL_DELAY             pause after a 204 before polling again, seconds (default 0.02)
WORKER_WEBSOCKET            ``0`` to never open the WebSocket (default ``1``)
WORKER_RECORD_EXTRA         JSON object merged into the registration record, e.g.
                            ``{"cost_per_second": 0.1, "hot_cache": ["echo"]}``
==========================  ==================================================================

Behaviour is driven by the task's ``params`` so tests control it:

- ``outcome``: ``"success"`` (default) -> ``{"status": "success", "data": {"echo": params,
  "worker_id": WORKER_ID}, "error": null}``; ``"transient"`` / ``"permanent"`` / ``"invalid"`` ->
  ``{"status": "failure", "data": {}, "error": {"code": "TRANSIENT_ERROR" | "PERMANENT_ERROR" |
  "INVALID_INPUT_ERROR", "message": ...}}``; ``"failure"`` -> a failure whose error has no code;
  ``"raise"`` -> the handler raises, reported as TRANSIENT_ERROR with the exception text (what the
  SDK does); ``"status:<name>"`` -> status ``<name>`` with the success data. Anything else ->
  PERMANENT_ERROR "unknown outcome".
- ``fail_times``: N -> TRANSIENT_ERROR for the first N attempts seen for that ``job_id`` (counted in
  this process), then the outcome above.
- ``fail_once_file``: a path -> TRANSIENT_ERROR for the job's first attempt across every worker (the
  file ``<path>-<job_id>`` is created first), then the outcome above.
- ``sleep_s``: seconds to sleep before answering (cancellable by ``cancel_task``);
  ``sleep_once_file``: a path -> sleep only if that file did not exist yet (it is created first),
  so only the first attempt across re-dispatches (and across workers) is slow.
- ``crash``: ``true`` -> ``os._exit(3)`` as soon as the task arrives; a worker id or a list of ids
  -> crash only on those workers. ``crash_once_file``: a path -> crash only if that file did not
  exist yet (it is created first), so exactly one worker crashes across re-dispatches.

Every task gets one ``progress_update`` over the WebSocket ``/_worker/ws/{worker_id}`` (if
connected); a server ``cancel_task`` (key ``command`` or ``type``) cancels the running task and posts
status ``cancelled``. The engine being unavailable is survived with small backoffs, and a 404 on a
heartbeat or poll triggers re-registration. SIGTERM/SIGINT stop it cleanly (exit code 0); tasks still
running at that moment get no result. Log lines (stderr) that tests may wait for:
``registered``, ``websocket connected``, ``task received``, ``result posted``, ``result rejected``,
``cancel_task received``, ``crashing``, ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("echo_worker")

ERROR_CODES = {
    "transient": "TRANSIENT_ERROR",
    "permanent": "PERMANENT_ERROR",
    "invalid": "INVALID_INPUT_ERROR",
}
CRASH_EXIT_CODE = 3
AUTH_FAILURE_EXIT_CODE = 2
RESULT_RETRY_WINDOW_S = 30.0
MAX_BACKOFF_S = 2.0


@dataclass
class Settings:
    """The worker's configuration, read from the environment."""

    orchestrator_url: str = "http://127.0.0.1:8080"
    worker_id: str = field(default_factory=lambda: f"echo-{os.getpid()}")
    token: str = ""
    worker_type: str = "echo-worker"
    task_types: list[str] = field(default_factory=lambda: ["echo"])
    max_concurrent: int = 4
    heartbeat_interval: float = 5.0
    poll_timeout: float = 40.0
    idle_poll_delay: float = 0.02
    websocket: bool = True
    record_extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Build the settings from environment variables (see the module docstring)."""
        defaults = cls()
        extra = json.loads(env.get("WORKER_RECORD_EXTRA") or "{}")
        if not isinstance(extra, dict):
            raise ValueError("WORKER_RECORD_EXTRA must be a JSON object")
        task_types = [t.strip() for t in env.get("TASK_TYPES", "echo").split(",") if t.strip()]
        return cls(
            orchestrator_url=env.get("ORCHESTRATOR_URL", defaults.orchestrator_url).rstrip("/"),
            worker_id=env.get("WORKER_ID") or defaults.worker_id,
            token=env.get("WORKER_TOKEN", ""),
            worker_type=env.get("WORKER_TYPE", defaults.worker_type),
            task_types=task_types or ["echo"],
            max_concurrent=max(1, int(env.get("MAX_CONCURRENT", "4"))),
            heartbeat_interval=float(env.get("HEARTBEAT_INTERVAL", "5")),
            poll_timeout=float(env.get("POLL_TIMEOUT", "40")),
            idle_poll_delay=float(env.get("IDLE_POLL_DELAY", "0.02")),
            websocket=env.get("WORKER_WEBSOCKET", "1").lower() not in ("0", "false", "no", ""),
            record_extra=extra,
        )


# --------------------------------------------------------------------------- task behaviour


def wants_crash(params: Mapping[str, Any], worker_id: str) -> bool:
    """Whether ``params`` ask this worker to die on receipt (see the module docstring)."""
    crash = params.get("crash")
    if crash is True or crash == worker_id or (isinstance(crash, list) and worker_id in crash):
        return True
    marker = params.get("crash_once_file")
    return bool(marker) and claims_once(marker, worker_id)  # the file says which worker crashed


def claims_once(marker: object, content: str = "") -> bool:
    """Create the file ``marker`` names, holding ``content``, atomically: True for the one caller
    that created it."""
    try:
        fd = os.open(str(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, content.encode())
    os.close(fd)
    return True


def failure(code: str | None, message: str) -> dict[str, Any]:
    """A failure result; ``code=None`` leaves the error without a code."""
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    return {"status": "failure", "data": {}, "error": error}


def outcome_result(params: Mapping[str, Any], worker_id: str) -> dict[str, Any]:
    """The result for ``params["outcome"]`` (fail_times is handled by the caller)."""
    outcome = str(params.get("outcome", "success"))
    data = {"echo": dict(params), "worker_id": worker_id}
    if outcome == "success":
        return {"status": "success", "data": data, "error": None}
    if outcome.startswith("status:"):
        return {"status": outcome.removeprefix("status:"), "data": data, "error": None}
    if outcome in ERROR_CODES:
        return failure(ERROR_CODES[outcome], f"echo_worker: requested {outcome} failure")
    if outcome == "failure":
        return failure(None, "echo_worker: requested failure without code")
    if outcome == "raise":
        raise RuntimeError("echo_worker: requested exception")
    return failure("PERMANENT_ERROR", f"echo_worker: unknown outcome {outcome!r}")


# --------------------------------------------------------------------------- the worker


class EchoWorker:
    """Registers, heartbeats, long-polls and runs tasks until ``stopping`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.registered = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self.running: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._cancel_requested: set[str] = set()
        self.attempts: dict[str, int] = {}

    # ---- helpers

    def url(self, path: str) -> str:
        """The absolute URL of a worker-API path (``path`` starts after ``/_worker``)."""
        return f"{self.settings.orchestrator_url}/_worker{path}"

    def record(self) -> dict[str, Any]:
        """The registration body."""
        s = self.settings
        record: dict[str, Any] = {
            "worker_id": s.worker_id,
            "worker_type": s.worker_type,
            "supported_tasks": list(s.task_types),
            "max_concurrent_tasks": s.max_concurrent,
            "resources": {"max_concurrent_tasks": s.max_concurrent, "cpu_cores": os.cpu_count() or 1},
            "capabilities": {"websockets": s.websocket},
            "status": "idle",
            "load": 0,
            "hot_cache": [],
        }
        record.update(s.record_extra)
        return record

    async def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True if the worker is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(seconds, 0.0))
        return self.stopping.is_set()

    def _session(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    # ---- registration and heartbeats

    async def ensure_registered(self) -> None:
        """Register (retrying with backoff) unless already registered."""
        async with self._register_lock:
            backoff = 0.1
            while not self.registered.is_set() and not self.stopping.is_set():
                if await self._register_once():
                    return
                if await self.pause(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _register_once(self) -> bool:
        try:
            async with self._session().post(self.url("/workers/register"), json=self.record()) as resp:
                body = await resp.text()
                if resp.status == 200:
                    log.info("registered worker_id=%s tasks=%s", self.settings.worker_id, self.settings.task_types)
                    self.registered.set()
                    return True
                if resp.status in (400, 401, 403):
                    log.error("registration rejected http=%s body=%s", resp.status, body)
                    self.exit_code = AUTH_FAILURE_EXIT_CODE
                    self.stopping.set()
                    return False
                log.warning("registration failed http=%s body=%s", resp.status, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("registration failed: %r", exc)
        return False

    async def _lost_registration(self) -> None:
        log.warning("orchestrator does not know this worker (404): registering again")
        self.registered.clear()
        await self.ensure_registered()

    async def heartbeat_loop(self) -> None:
        """PATCH the worker record every HEARTBEAT_INTERVAL seconds."""
        while not await self.pause(self.settings.heartbeat_interval):
            load = len(self.running)
            body = {"load": load, "status": "busy" if load >= self.settings.max_concurrent else "idle"}
            try:
                async with self._session().patch(self.url(f"/workers/{self.settings.worker_id}"), json=body) as resp:
                    await resp.read()
                    if resp.status == 404:
                        await self._lost_registration()
                    elif resp.status != 200:
                        log.warning("heartbeat http=%s", resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("heartbeat failed: %r", exc)

    # ---- polling

    async def poll_loop(self) -> None:
        """Long-poll for tasks while a concurrency slot is free; start a runner for each task."""
        backoff = 0.1
        while not self.stopping.is_set():
            await self._slots.acquire()
            try:
                task, ok = await self._poll_once()
            except BaseException:
                self._slots.release()
                raise
            if task is None:
                self._slots.release()
                delay = self.settings.idle_poll_delay if ok else backoff
                backoff = 0.1 if ok else min(backoff * 2, MAX_BACKOFF_S)
                await self.pause(delay)
                continue
            backoff = 0.1
            runner = asyncio.create_task(self._run_task(task))
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)

    async def _poll_once(self) -> tuple[dict[str, Any] | None, bool]:
        """One GET tasks/next: (task or None, whether the answer was a normal one)."""
        url = self.url(f"/workers/{self.settings.worker_id}/tasks/next")
        timeout = aiohttp.ClientTimeout(total=self.settings.poll_timeout)
        try:
            async with self._session().get(url, timeout=timeout) as resp:
                if resp.status == 204:
                    return None, True
                if resp.status == 200:
                    task = await resp.json(content_type=None)
                    if isinstance(task, dict) and {"job_id", "task_id", "type"} <= task.keys():
                        return task, True
                    log.error("malformed task: %r", task)
                    return None, False
                body = await resp.text()
                if resp.status == 404:
                    await self._lost_registration()
                else:
                    log.warning("poll http=%s body=%s", resp.status, body)
                return None, False
        except TimeoutError:
            return None, True  # our own long-poll timeout: simply poll again
        except (aiohttp.ClientError, ValueError) as exc:
            log.warning("poll failed: %r", exc)
            return None, False

    # ---- running tasks

    async def _run_task(self, task: dict[str, Any]) -> None:
        job_id, task_id = str(task["job_id"]), str(task["task_id"])
        params = task.get("params") or {}
        attempt = self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        log.info(
            "task received job=%s task=%s type=%s attempt=%s params=%s tracing_context=%s",
            job_id,
            task_id,
            task.get("type"),
            attempt,
            json.dumps(params),
            json.dumps(task.get("tracing_context")),
        )
        if wants_crash(params, self.settings.worker_id):
            log.info("crashing on task=%s (exit %s)", task_id, CRASH_EXIT_CODE)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
        try:  # the task holds its slot until its result is reported, so at most max_concurrent are out
            result = await self._outcome(job_id, task_id, params, attempt)
            await self._post_result(job_id, task_id, result)
        finally:
            self._slots.release()

    async def _outcome(self, job_id: str, task_id: str, params: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """Run the task; its result, also when it fails or is cancelled on the orchestrator's word."""
        inner = asyncio.create_task(self._execute(job_id, task_id, params, attempt))
        self.running[task_id] = inner
        try:
            return await inner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or task_id not in self._cancel_requested:
                raise  # shutdown: no result
            return {"status": "cancelled", "data": {}, "error": None}
        except Exception as exc:  # what the SDK does with handler exceptions
            log.exception("task=%s raised", task_id)
            return failure("TRANSIENT_ERROR", str(exc))
        finally:
            self.running.pop(task_id, None)
            self._cancel_requested.discard(task_id)

    async def _execute(self, job_id: str, task_id: str, params: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        await self.send_progress(job_id, task_id, 0.5, "echo_worker working")
        sleep_s = float(params.get("sleep_s") or 0)
        once = params.get("sleep_once_file")
        if sleep_s > 0 and (not once or claims_once(once)):
            await asyncio.sleep(sleep_s)
        fail_times = int(params.get("fail_times") or 0)
        if attempt <= fail_times:
            return failure("TRANSIENT_ERROR", f"echo_worker: planned failure {attempt} of {fail_times}")
        fail_once = params.get("fail_once_file")
        if fail_once and claims_once(f"{fail_once}-{job_id}"):
            return failure("TRANSIENT_ERROR", "echo_worker: the job's one planned failure")
        return outcome_result(params, self.settings.worker_id)

    async def _post_result(self, job_id: str, task_id: str, result: dict[str, Any]) -> None:
        """POST /tasks/result, retrying connection errors and 5xx for a while; 4xx are final."""
        body = {"job_id": job_id, "task_id": task_id, "worker_id": self.settings.worker_id, "result": result}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESULT_RETRY_WINDOW_S
        backoff = 0.1
        code = (result.get("error") or {}).get("code")
        while True:
            try:
                async with self._session().post(self.url("/tasks/result"), json=body) as resp:
                    text = await resp.text()
                    if resp.status < 300:
                        log.info(
                            "result posted job=%s task=%s status=%s code=%s http=%s body=%s",
                            job_id,
                            task_id,
                            result["status"],
                            code,
                            resp.status,
                            text,
                        )
                        return
                    if resp.status < 500:
                        log.warning(
                            "result rejected job=%s task=%s status=%s http=%s body=%s",
                            job_id,
                            task_id,
                            result["status"],
                            resp.status,
                            text,
                        )
                        return
                    log.warning("result post http=%s body=%s, retrying", resp.status, text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("result post failed: %r, retrying", exc)
            if loop.time() > deadline:
                log.error("result dropped job=%s task=%s after %ss", job_id, task_id, RESULT_RETRY_WINDOW_S)
                return
            if await self.pause(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    # ---- WebSocket

    async def ws_loop(self) -> None:
        """Keep the WebSocket open (reconnecting with backoff) and handle server commands."""
        url = self.url(f"/ws/{self.settings.worker_id}")
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
                async with self._session().ws_connect(url, heartbeat=20, timeout=timeout) as ws:
                    self.ws = ws
                    backoff = 0.2
                    log.info("websocket connected url=%s", url)
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._handle_ws_text(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                log.info("websocket closed")
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("websocket unavailable: %r", exc)
            finally:
                self.ws = None
            if await self.pause(backoff):
                return
            backoff = min(backoff * 2, 5.0)

    def _handle_ws_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("websocket: invalid JSON %r", text)
            return
        if not isinstance(message, dict):
            return
        kind = message.get("command") or message.get("type") or message.get("event")
        if kind != "cancel_task":
            log.info("websocket message ignored: %s", text)
            return
        task_id = str(message.get("task_id"))
        inner = self.running.get(task_id)
        log.info("cancel_task received task=%s running=%s", task_id, inner is not None)
        if inner is not None:
            self._cancel_requested.add(task_id)
            inner.cancel()

    async def send_progress(self, job_id: str, task_id: str, progress: float, message: str) -> None:
        """Send one progress_update if the WebSocket is open; failures are ignored."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        payload = {
            "event": "progress_update",
            "job_id": job_id,
            "task_id": task_id,
            "progress": progress,
            "message": message,
        }
        with contextlib.suppress(Exception):
            await ws.send_json(payload)

    # ---- main

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        headers = {"X-Worker-Token": self.settings.token}
        async with aiohttp.ClientSession(headers=headers) as session:
            self.session = session
            registering = asyncio.create_task(self.ensure_registered())
            stop_wait = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({registering, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            background: list[asyncio.Task[None]] = [registering]
            if not self.stopping.is_set():
                background += [
                    asyncio.create_task(self.heartbeat_loop()),
                    asyncio.create_task(self.poll_loop()),
                ]
                if self.settings.websocket:
                    background.append(asyncio.create_task(self.ws_loop()))
                await stop_wait
            stop_wait.cancel()
            for task in [*background, *self._runners]:
                task.cancel()
            await asyncio.gather(*background, *self._runners, return_exceptions=True)
            if self.ws is not None:
                await self.ws.close()
        log.info("stopped exit_code=%s", self.exit_code)
        return self.exit_code


async def main() -> int:
    """Entry point: configure from the environment, install signal handlers, run."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s echo_worker[{settings.worker_id}] %(levelname)s %(message)s",
    )
    worker = EchoWorker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    return await worker.run()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
