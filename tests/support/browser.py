"""Debian's Chromium through Playwright (browsers cannot be downloaded here), for one test module.

Not pytest-playwright: its global fixtures (``context``, ``page``...) capture other tests' parameters
of the same names, and its session-long sync loop blocks every asyncio test after it. Playwright's
sync API marks its loop as running in the main thread, so it is stopped at the end of the module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

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
