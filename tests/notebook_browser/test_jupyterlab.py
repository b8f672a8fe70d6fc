"""The widgets in a real front end: JupyterLab in Chromium runs the step-debugging notebook, and Step works.

JupyterLab is started by the test on 127.0.0.1 (a free port, no token, a temp dir as its root and for
its settings), with the venv's kernel. Playwright drives Debian's Chromium (not pytest-playwright,
see tests/browser/conftest.py). The notebook is run with JupyterLab's own "run all cells" command,
then the debugger's Step button is clicked and the highlighted state of the graph must change.
"""

from __future__ import annotations

import re
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from playwright.sync_api import Browser, Page, expect  # noqa: E402
from support.browser import chromium  # noqa: E402
from support.processes import free_port, start_process, stop_process, wait_http  # noqa: E402

pytestmark = pytest.mark.slow

NOTEBOOK = TESTS.parent / "notebooks" / "step_debugging.ipynb"
SCREENSHOTS = TESTS.parent / "artifacts" / "screenshots"
JUPYTER = Path(sys.executable).with_name("jupyter")
GUARD_MS = 60_000
ACTIVE_TITLE = ".avtomatika-step-debugger .debugger-graph g.node.active > title"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium for this module (see support/browser.py)."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving a temp dir holding a copy of the step-debugging notebook; yields its URL."""
    if not JUPYTER.exists():
        pytest.skip("jupyterlab is not installed in this environment")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # No "official Jupyter news?" prompt over the notebook (nor the fetch behind it).
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = free_port()
    env = {
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    args = [
        JUPYTER,
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    proc = start_process(args, env, tmp_path / "jupyterlab.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/status", timeout_s=60, proc=proc)
        yield url
    finally:
        try:  # shuts its kernels down too
            request = urllib.request.Request(f"{url}/api/shutdown", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            proc.wait(timeout=15)
        except Exception:
            pass
        stop_process(proc)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(GUARD_MS)
    try:
        yield opened
    finally:
        context.close()


def test_step_debugger_renders_in_jupyterlab_and_step_moves_the_highlight(jupyterlab: str, page: Page):
    page.goto(f"{jupyterlab}/lab/tree/{NOTEBOOK.name}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=GUARD_MS)
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            return panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel && panel.sessionContext.session.kernel.status === 'idle';
        }""",
        timeout=GUARD_MS,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    debugger = page.locator(".avtomatika-step-debugger")
    expect(debugger).to_be_visible(timeout=GUARD_MS)
    # The last cell goes back to the first step: the job sits in validate, highlighted.
    expect(page.get_by_text("validate running", exact=False)).to_be_visible(timeout=GUARD_MS)
    active = page.locator(ACTIVE_TITLE)
    expect(active).to_have_text("validate", timeout=GUARD_MS)

    # By its text: the accessible name also holds the icon font's glyph.
    debugger.locator("button", has_text=re.compile(r"^\s*Step\s*$")).click()

    expect(active).to_have_text("resize", timeout=GUARD_MS)
    expect(debugger.locator(".current-state")).to_have_text("resize")
    expect(debugger.get_by_text("transition_to('resize')").first).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    debugger.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "jupyterlab_step_debugger.png"), full_page=False)
    debugger.screenshot(path=str(SCREENSHOTS / "jupyterlab_step_debugger_widget.png"))
