"""The widgets in a real front end: JupyterLab in Chromium runs the example notebooks and the debugger works.

JupyterLab is started by the test on 127.0.0.1 (a free port, no token, a temp dir as its root and for
its settings), with the venv's kernel. Playwright drives Debian's Chromium (not pytest-playwright,
see tests/support/browser.py). A notebook is run with JupyterLab's own "run all cells" command, then
the debugger is used as a person would: Step, a click on a state, a fan-out answered task by task;
then the notebook is saved, its kernel shut down, and it is opened again: the graph is still there.
"""

from __future__ import annotations

import re
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from support.browser import chromium
from support.processes import TESTS_DIR, free_port, start_process, stop_process, wait_http

pytestmark = pytest.mark.slow

NOTEBOOK = TESTS_DIR.parent / "notebooks" / "step_debugging.ipynb"
REPORT = TESTS_DIR.parent / "notebooks" / "fan_out_and_approval.ipynb"
SCREENSHOTS = TESTS_DIR.parent / "artifacts" / "screenshots"
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
    """JupyterLab serving a temp dir holding copies of two example notebooks; yields its URL."""
    if not JUPYTER.exists():
        pytest.skip("jupyterlab is not installed in this environment")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    shutil.copy(REPORT, root / REPORT.name)
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


def open_notebook(page: Page, url: str, name: str) -> None:
    """Open ``name`` in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{url}/lab/tree/{name}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=GUARD_MS)
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            return panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel && panel.sessionContext.session.kernel.status === 'idle';
        }""",
        timeout=GUARD_MS,
    )


def test_step_debugger_renders_in_jupyterlab_and_step_moves_the_highlight(jupyterlab: str, page: Page):
    open_notebook(page, jupyterlab, NOTEBOOK.name)
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


#: The screen size font sizes are checked at: labels must stay >= MIN_LABEL_PX on it.
WIDE = {"width": 1400, "height": 1000}
MIN_LABEL_PX = 10
LABEL_SIZES_JS = """() => [...document.querySelectorAll(
    '.avtomatika-step-debugger .avtomatika-graph-view g.node.state text')].map(
    (text) => parseFloat(text.getAttribute('font-size')) * text.getScreenCTM().a)"""


def test_the_debugger_on_eight_states_breakpoint_by_click_fan_out_by_hand_and_the_saved_picture(
    jupyterlab: str, browser: Browser
):
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(GUARD_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        open_notebook(page, jupyterlab, REPORT.name)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        debugger = page.locator(".avtomatika-step-debugger")
        expect(page.get_by_text("fan_out running", exact=False)).to_be_visible(timeout=GUARD_MS)
        expect(debugger.locator(".current-state")).to_have_text("fan_out")

        # Eight states, drawn at full width with labels a person can read.
        sizes = page.evaluate(LABEL_SIZES_JS)
        assert len(sizes) >= 8
        assert min(sizes) >= MIN_LABEL_PX, sizes
        graph_width = debugger.locator(".avtomatika-graph-view").bounding_box()["width"]
        assert graph_width > 0.8 * debugger.bounding_box()["width"]

        # A click on a state toggles its breakpoint: the checkbox follows, and a second click undoes it.
        approval = debugger.locator(
            ".avtomatika-graph-view g.node.state", has=page.locator("title", has_text="approval")
        )
        approval.click()
        box = debugger.get_by_role("checkbox", name="approval")
        expect(box).to_be_checked()
        expect(debugger.locator(".avtomatika-graph-view g.node.state.breakpoint > title")).to_have_text("approval")
        approval.click()
        expect(box).not_to_be_checked()
        approval.click()
        expect(box).to_be_checked()
        debugger.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_report_debugger.png"), full_page=False)

        # Step: the fan-out dispatches three tasks; each is answered in the form, the last one first.
        debugger.locator("button", has_text=re.compile(r"^\s*Step\s*$")).click()
        form = debugger.locator(".avtomatika-task-form")
        expect(form.get_by_text("3 open tasks")).to_be_visible()
        for open_count, score in ((3, 4), (2, 3), (1, 2)):
            expect(form.get_by_text(f"{open_count} open task")).to_be_visible()
            if open_count > 1:
                form.locator("select").first.select_option(index=open_count - 1)
            form.locator("textarea").fill(f'{{"score": {score}}}')
            if open_count == 3:
                form.screenshot(path=str(SCREENSHOTS / "jupyterlab_fan_out_form.png"))
            form.locator("button", has_text=re.compile(r"^\s*Answer\s*$")).click()
        expect(debugger.locator(".current-state")).to_have_text("aggregate")
        expect(form).to_be_hidden()
        expect(debugger.get_by_text('the payload is under "data"', exact=False)).to_be_visible()
        debugger.screenshot(path=str(SCREENSHOTS / "jupyterlab_report_at_the_aggregator.png"))

        # Save, shut the kernel down, open the notebook again: the picture shows the graph and the state.
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.sessionContext.session")
        page.evaluate("() => window.jupyterapp.shell.currentWidget.close()")
        open_notebook(page, jupyterlab, REPORT.name)
        picture = page.locator(".avtomatika-static").filter(has_text="Step debugger of report")
        expect(picture.locator("svg")).to_be_visible()
        expect(picture.locator("g.node.active > title")).to_have_text("aggregate")
        expect(page.get_by_text("model not found")).to_have_count(0)
        picture.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_report_reopened.png"), full_page=False)
    finally:
        context.close()
