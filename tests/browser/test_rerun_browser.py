"""Rerun in Chromium (issue 21): a finished job rerun from its second state with one field edited; the
new job finishes on the other branch, both pages link to each other, the new one shows the diff.
Real engine with SQLite history, real echo worker process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from support.blueprints import routing_blueprint
from support.browser import ServedEngine, echo_worker
from support.engine import wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    folder = tmp_path_factory.mktemp("rerun")
    engine = ServedEngine(
        routing_blueprint("studio_rerun"), HISTORY_DATABASE_URI=f"sqlite:///{folder / 'history.db'}"
    ).start()
    try:
        with echo_worker(engine, folder / "worker.log"):
            yield engine
    finally:
        engine.stop()


def test_rerun_a_finished_job_from_its_second_state_with_an_edit(
    page: Page, served: ServedEngine, screenshots: Path
) -> None:
    origin = served.call(served.engine.create_job("studio_rerun", {"priority": "urgent", "items": ["a", "b"]}))
    served.call(wait_for_status(served.engine, origin.id, "finished"))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.goto(f"{served.url}/studio/jobs/{origin.id}")
    page.click('[data-action="rerun"]')
    expect(page).to_have_url(re.compile(rf"/studio/jobs/{origin.id}/rerun$"))

    page.select_option("#rerun-state", "triage")  # the form reloads with triage's data
    expect(page.locator("[data-rerun-source]")).to_contain_text("as the job entered triage")
    expect(page.locator("#rerun-state_history")).to_have_value(re.compile(r'"items": 2'))
    data = page.locator("#rerun-initial_data")
    data.fill(data.input_value().replace('"urgent"', '"normal"'))
    page.screenshot(path=screenshots / "rerun-form.png", full_page=True)
    page.click('[data-action="rerun"]')
    expect(page).not_to_have_url(re.compile(r"/rerun$"))
    assert dialogs == ["Start a new job of studio_rerun at triage?"], "one confirm, naming the state; none to reload"

    expect(page).not_to_have_url(re.compile(rf"{origin.id}"))
    new_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-header")).to_have_attribute("data-status", "finished")
    rerun_of = page.locator("[data-rerun-of]")
    expect(rerun_of.locator(f'a[href$="/jobs/{origin.id}"]')).to_be_visible()
    entry = page.locator('#job-graph svg [id="entry-studio_rerun-edge"]')
    expect(entry).to_have_count(1)
    expect(entry).not_to_have_class(re.compile(r"\btaken\b"))  # it began at triage, not at the start
    expect(rerun_of.locator('[data-rerun-diff="initial_data"]')).to_contain_text("priority")
    expect(rerun_of.locator('[data-rerun-diff="initial_data"]')).to_contain_text('"urgent" → "normal"')
    # received did not run again; triage took its default branch this time (which drops "items")
    expect(page.locator("[data-state-history]")).not_to_contain_text('"items"')
    expect(page.locator("[data-state-history]")).to_contain_text('"lane": "slow"')
    page.screenshot(path=screenshots / "rerun-new-job.png", full_page=True)

    rerun_of.locator(f'a[href$="/jobs/{origin.id}"]').click()
    expect(page.locator("[data-reruns]").locator(f'a[href$="/jobs/{new_id}"]')).to_be_visible()
    page.screenshot(path=screenshots / "rerun-origin.png", full_page=True)
