"""Browser tests: Playwright on Debian's Chromium against a real engine + studio and a real worker process.

The engine (``support.browser.ServedEngine``) runs in a background thread with its own event loop
(pytest-playwright's fixtures are synchronous), serving its API and the studio on 127.0.0.1:<free port>.
A ``support/workers/echo.py`` process registers with it over HTTP and answers tasks as their params say.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from support.browser import ServedEngine, chromium, echo_worker

GUARD_MS = 15_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


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


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    """The engine + studio, open on loopback, with one echo worker process (for one module)."""
    served = ServedEngine().start()
    try:
        with echo_worker(served, tmp_path_factory.mktemp("browser") / "echo_worker.log"):
            yield served
    finally:
        served.stop()


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
