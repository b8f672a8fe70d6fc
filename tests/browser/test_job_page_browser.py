"""A job's page in Chromium (issue 20): the path as taken, a timeline that opens, the root cause kept,
a 40-branch fan-out at a glance, and time travel on a finished job after an engine restart with
SQLite history. Real engine, real echo worker process; every wait is an expect-style wait."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from support.blueprints import batch_blueprint, routing_blueprint
from support.browser import ServedEngine, echo_worker
from support.engine import wait_for_status

from avtomatika import StateMachineBlueprint
from avtomatika.graph import extract

pytestmark = pytest.mark.slow

GUARD_MS = 15_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    folder = tmp_path_factory.mktemp("job-page")
    engine = ServedEngine(
        routing_blueprint("studio_route"),
        batch_blueprint("studio_batch"),
        HISTORY_DATABASE_URI=f"sqlite:///{folder / 'history.db'}",
    ).start()
    try:
        with echo_worker(engine, folder / "worker.log", MAX_CONCURRENT="8"):
            yield engine
    finally:
        engine.stop()


def ended(served: ServedEngine, blueprint: str, data: dict[str, Any], status: str = "finished") -> str:
    job = served.call(served.engine.create_job(blueprint, data))
    served.call(wait_for_status(served.engine, job.id, status))
    return job.id


def edge_ids(blueprint: StateMachineBlueprint) -> dict[str, str]:
    """The dom ids of triage's two edges to shipped: the ``.when()`` handler's and the default's."""
    edges = [e for e in extract(blueprint).edges if (e.source, e.target) == ("triage", "shipped")]
    return {("when" if e.condition else "otherwise"): e.dom_id for e in edges}


def graph_node(page: Page, state: str) -> Any:
    return page.locator(f'#job-graph svg [id="node-{state}"]')


def test_each_job_page_highlights_only_the_edge_it_took(page: Page, served: ServedEngine, screenshots: Path) -> None:
    ids = edge_ids(routing_blueprint("studio_route"))
    urgent = ended(served, "studio_route", {"priority": "urgent"})
    normal = ended(served, "studio_route", {"priority": "normal"})
    for job_id, taken, other in ((urgent, "when", "otherwise"), (normal, "otherwise", "when")):
        page.goto(f"{served.url}/studio/jobs/{job_id}")
        expect(page.locator(f'#job-graph svg [id="{ids[taken]}"]')).to_have_class(re.compile(r"\btaken\b"))
        expect(page.locator(f'#job-graph svg [id="{ids[other]}"]')).not_to_have_class(re.compile(r"\btaken\b"))
        expect(graph_node(page, "shipped")).to_have_class(re.compile(r"\bactive\b"))
        page.screenshot(path=screenshots / f"job-route-{taken}.png", full_page=True)
    # A click on a state: its visits, the handler that ran (the default one), its task.
    graph_node(page, "triage").click()
    detail = page.locator("#state-detail")
    expect(detail).to_contain_text("default (no .when() held)")
    expect(detail).to_contain_text('"lane": "slow"')


def test_a_timeline_line_opens_to_a_results_data_and_error(page: Page, served: ServedEngine, screenshots: Path) -> None:
    job_id = ended(served, "studio_route", {"priority": "urgent", "task": {"fail_times": 1}})
    page.goto(f"{served.url}/studio/jobs/{job_id}")
    page.click('[data-timeline-mode="full"]')
    results = page.locator('#timeline-lines li[data-kind="task_result"]')
    expect(results).to_have_count(2)
    failed, succeeded = results.nth(0), results.nth(1)
    failed.locator("summary").first.click()
    expect(failed.locator("[data-error-code]")).to_have_text("TRANSIENT_ERROR")
    expect(failed.locator("[data-error-message]")).not_to_be_empty()
    succeeded.locator("summary").first.click()
    expect(succeeded.locator("[data-result-data]")).to_contain_text('"lane": "fast"')
    page.screenshot(path=screenshots / "job-timeline-open.png", full_page=True)
    # The compact timeline folds the task's two attempts into one row, which opens to both.
    page.click('[data-timeline-mode="compact"]')
    task = page.locator('#timeline-rows li[data-row="task"]')
    expect(task).to_have_count(1)
    task.locator("summary").first.click()
    expect(task.locator("[data-attempt]")).to_have_count(2)
    expect(task.locator("[data-error-code]")).to_have_text("TRANSIENT_ERROR")


def test_failing_a_quarantined_job_keeps_its_original_error(
    page: Page, served: ServedEngine, screenshots: Path
) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    job_id = ended(served, "studio_route", {"priority": "normal", "task": {"outcome": "permanent"}}, "quarantined")
    page.goto(f"{served.url}/studio/jobs/{job_id}")
    page.click('[data-action="fail"]')
    expect(page.locator("#job-header")).to_have_attribute("data-status", "failed", timeout=GUARD_MS)
    expect(page.locator("[data-reason]")).to_contain_text("failed by")
    expect(page.locator("[data-error-panel] [data-cause]")).to_contain_text("PERMANENT_ERROR")
    page.screenshot(path=screenshots / "job-failed-root-cause.png", full_page=True)


def test_a_40_branch_fan_out_at_a_glance(page: Page, served: ServedEngine, screenshots: Path) -> None:
    job_id = ended(served, "studio_batch", {"n": 40, "bad": 7}, "quarantined")
    page.goto(f"{served.url}/studio/jobs/{job_id}")
    # Quarantined by the bad branch: the others are done, or held for a release (their number depends on
    # how far the worker got), and one failed.
    counts = re.compile(r"^(\d+)/40 done( · (\d+) held)? · 1 failed$")
    expect(page.locator("#branches-panel [data-fan-out-counts]")).to_have_text(counts)
    label = page.locator("#branches-panel [data-fan-out-counts]").inner_text()
    expect(graph_node(page, "split").locator(".node-note")).to_have_text(label.replace(" · ", "", 1))
    table = page.locator("#branches")
    expect(table.locator("tbody tr")).to_have_count(40)
    page.select_option('[data-branch-filter="branches"]', "failed")
    expect(table.locator("tbody tr:visible")).to_have_count(1)
    expect(table.locator("tbody tr:visible")).to_contain_text("PERMANENT_ERROR")
    # The timeline folds the fan-out's 40 dispatches into one row.
    expect(page.locator('#timeline-rows li[data-row="fan_out"]')).to_have_count(1)
    expect(page.locator('#timeline-rows li[data-row="task"]')).to_have_count(0)
    page.screenshot(path=screenshots / "job-fan-out-40.png", full_page=True)


def test_time_travel_on_a_finished_job_after_a_restart(page: Page, tmp_path: Path, screenshots: Path) -> None:
    history = f"sqlite:///{tmp_path / 'history.db'}"
    first = ServedEngine(routing_blueprint("studio_route"), HISTORY_DATABASE_URI=history).start()
    try:
        with echo_worker(first, tmp_path / "worker.log", "echo-travel"):
            job_id = ended(first, "studio_route", {"priority": "urgent", "items": ["a", "b"]})
    finally:
        first.stop()
    again = ServedEngine(routing_blueprint("studio_route"), HISTORY_DATABASE_URI=history).start()
    try:
        page.goto(f"{again.url}/studio/jobs/{job_id}")
        expect(page.locator("[data-from-history]").first).to_be_visible()
        expect(graph_node(page, "shipped")).to_have_class(re.compile(r"\bactive\b"))
        twin = page.request.get(f"{again.url}/studio/jobs/{job_id}?format=json").json()
        dispatched = next(line["seq"] for line in twin["timeline"] if line["kind"] == "task_dispatched")
        page.locator("#travel-range").fill(str(dispatched))
        moment = page.locator(f'#moment [data-moment="{dispatched}"]')
        expect(moment).to_have_attribute("data-state", "triage", timeout=GUARD_MS)
        expect(graph_node(page, "triage")).to_have_class(re.compile(r"\bactive\b"))
        expect(graph_node(page, "shipped")).not_to_have_class(re.compile(r"\bvisited\b"))
        expect(moment.locator("[data-moment-history]")).to_have_text('{\n  "items": 2\n}')
        expect(moment).to_contain_text('"lane": "fast"')
        page.screenshot(path=screenshots / "job-time-travel-after-restart.png", full_page=True)
        page.click("[data-travel-live]")
        expect(graph_node(page, "shipped")).to_have_class(re.compile(r"\bactive\b"))
        expect(page.locator("#moment")).to_be_empty()
    finally:
        again.stop()


def test_the_blueprints_page_counts_fit_and_explain(page: Page, served: ServedEngine, screenshots: Path) -> None:
    for _ in range(3):
        ended(served, "studio_route", {"priority": "urgent"})
    page.goto(f"{served.url}/studio/blueprints")
    shipped = page.locator('[data-blueprint="studio_route"] svg [id="node-shipped"]')
    expect(shipped.locator(".node-note")).to_contain_text("finished")
    expect(shipped.locator(":scope > title")).to_have_text("shipped")  # nodes are still found by their title
    hover = shipped.locator(":scope > path title, :scope > polygon title").first  # what a hover shows
    expect(hover).to_contain_text("ended here (history):")
    expect(shipped).not_to_have_class(re.compile(r"\bhas-jobs\b"))  # ended jobs are not in flight
    box = page.locator('[data-blueprint="studio_route"] div.graph').bounding_box()
    note = shipped.locator(".node-note").bounding_box()
    assert box is not None
    assert note is not None
    assert box["x"] <= note["x"], "the note is not cut"
    assert note["x"] + note["width"] <= box["x"] + box["width"], "the note is not cut"
    page.screenshot(path=screenshots / "blueprints-counts.png", full_page=True)
    shipped.click()
    expect(page).to_have_url(re.compile(r"/studio/jobs\?blueprint=studio_route&state=shipped$"))
