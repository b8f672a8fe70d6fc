"""Browser tests: Playwright on Debian's Chromium against a real engine + studio and a real worker process.

The engine runs in a background thread with its own event loop (pytest-playwright's fixtures are
synchronous), serving its API and the studio on 127.0.0.1:<free port>. An ``echo_worker.py`` process
registers with it over HTTP and answers tasks as their params say.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from engine_helpers import FAST_SETTINGS  # noqa: E402
from playwright.sync_api import Browser, Page  # noqa: E402
from support.browser import chromium  # noqa: E402
from support.processes import ECHO_WORKER_SCRIPT, python_command, running_process  # noqa: E402
from test_studio_support import ClipInput, echo_blueprint  # noqa: E402

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint  # noqa: E402

GUARD_MS = 15_000
SCREENSHOTS = TESTS.parent / "artifacts" / "screenshots"
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium for this module (see support/browser.py)."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in a fresh context (no cookies): each test is a new browser session."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(GUARD_MS)
    try:
        yield opened
    finally:
        context.close()


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


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    """The engine + studio, open on loopback, with one echo worker process (for one module)."""
    served = ServedEngine().start()
    try:
        with echo_worker(served, tmp_path_factory.mktemp("browser") / "echo_worker.log"):
            yield served
    finally:
        served.stop()


@contextlib.contextmanager
def echo_worker(served: ServedEngine, log: Path, worker_id: str = "echo-browser", **env: str) -> Iterator[None]:
    """An echo worker process registered with ``served`` (it answers tasks as their params say)."""
    settings = {"ORCHESTRATOR_URL": served.url, "WORKER_ID": worker_id, "TASK_TYPES": "echo", "HEARTBEAT_INTERVAL": "2"}
    with running_process(python_command(ECHO_WORKER_SCRIPT), {**settings, **env}, log, wait_log_text="registered"):
        yield


@pytest.fixture
def guarded_studio() -> Iterator[ServedEngine]:
    """An engine whose studio asks for STUDIO_TOKEN (no worker needed)."""
    served = ServedEngine(STUDIO_TOKEN="browser-secret").start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
