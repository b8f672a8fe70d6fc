"""The browser tests' pieces: Debian's Chromium through Playwright (browsers cannot be downloaded here),
for one test module; an engine + studio served from a thread of its own; an echo worker process.

Not pytest-playwright: its global fixtures (``context``, ``page``...) capture other tests' parameters
of the same names, and its session-long sync loop blocks every asyncio test after it. Playwright's
sync API marks its loop as running in the main thread, so it is stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, sync_playwright

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from support.blueprints import ClipInput, echo_blueprint
from support.engine import FAST_SETTINGS
from support.processes import ECHO_WORKER_SCRIPT, python_command, running_process

T = TypeVar("T")

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
#: No sandbox (root), no GPU, and nothing that reaches for the network (this machine has none).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A launched Chromium, closed (with Playwright's loop) on exit."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class ServedEngine:
    """An engine started in a thread of its own; ``call`` runs a coroutine on its loop.

    Args:
        blueprints: Served besides the echo ones.
        settings: ``Config`` over the fast test settings.
    """

    def __init__(self, *blueprints: StateMachineBlueprint, **settings: Any) -> None:
        config = Config(**{**FAST_SETTINGS, "API_HOST": "127.0.0.1", **settings})
        self.engine = OrchestratorEngine(config=config)
        self.engine.register_blueprint(echo_blueprint())
        self.engine.register_blueprint(echo_blueprint("studio_clip", ClipInput))
        for blueprint in blueprints:
            self.engine.register_blueprint(blueprint)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="studio-browser-engine", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.engine.start(host="127.0.0.1", port=0)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.engine.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self) -> ServedEngine:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.engine.port}"

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(30)


@contextmanager
def echo_worker(served: ServedEngine, log: Path, worker_id: str = "echo-browser", **env: str) -> Iterator[None]:
    """An echo worker process registered with ``served`` (it answers tasks as their params say)."""
    settings = {"ORCHESTRATOR_URL": served.url, "WORKER_ID": worker_id, "TASK_TYPES": "echo", "HEARTBEAT_INTERVAL": "2"}
    with running_process(python_command(ECHO_WORKER_SCRIPT), {**settings, **env}, log, wait_log_text="registered"):
        yield
