"""Breakpoints in Chromium (issue 21, item 4): a click on a state of a blueprint's graph sets a
breakpoint on every new job; a job started from the page is held there (live, over SSE); its
``initial_data`` is edited (a typo refused inline first) and Continue takes it to ``finished`` on a
real echo worker process, the edit in its result and its timeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from support.browser import ServedEngine

pytestmark = pytest.mark.slow

GUARD_MS = 15_000


def node(page: Page, state: str):
    return page.locator(f'svg g.node.state[data-state="{state}"]')


def test_break_on_a_clicked_state_hold_edit_continue(page: Page, studio: ServedEngine, screenshots: Path) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{studio.url}/studio/blueprints/studio_echo")
    node(page, "work").click()
    panel = page.locator("#state-detail")
    expect(panel).to_contain_text("Break here for every new job")
    page.screenshot(path=screenshots / "breakpoint-state-panel.png", full_page=True)
    panel.locator('[data-action="break-every-new-job"]').click()
    expect(page.locator("#blueprint-breakpoints .breakpoint-item")).to_have_count(1)
    expect(panel).to_contain_text("Every new job of studio_echo is held")
    expect(node(page, "work")).to_have_class(re.compile(r"\bbreakpoint\b"))
    expect(node(page, "work").locator(".bp-mark")).to_have_count(1)
    page.screenshot(path=screenshots / "breakpoint-set.png", full_page=True)

    try:
        page.fill("#initial-data", '{"size": 10}')
        page.click("#start-form button[type=submit]")
        expect(page).to_have_url(re.compile(r"/studio/jobs/[0-9a-f-]{36}$"), timeout=GUARD_MS)
        job_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#job-header")).to_have_attribute("data-status", "held", timeout=GUARD_MS)
        hold = page.locator("#job-hold [data-held]")
        expect(hold).to_contain_text("Held at work")
        expect(page.locator(".nav-held [data-held]")).to_have_text("1")
        page.screenshot(path=screenshots / "breakpoint-held-job.png", full_page=True)

        editor = page.locator("#hold-initial_data")
        editor.fill('{"size": 42,}')
        hold.locator('[data-action="continue"]').click()
        expect(page.locator('[data-error-for="initial_data"]')).to_contain_text("not valid JSON")
        expect(page.locator("#job-header")).to_have_attribute("data-status", "held")
        page.screenshot(path=screenshots / "breakpoint-edit-refused.png", full_page=True)

        page.locator("#hold-initial_data").fill('{"size": 42}')
        page.locator('#job-hold [data-action="continue"]').click()
        expect(page.locator("#job-header")).to_have_attribute("data-status", "finished", timeout=GUARD_MS)
        expect(page.locator("[data-state-history]")).to_contain_text('"size": 42')  # the worker's echo
        expect(page.locator("[data-initial-data]")).to_contain_text('"size": 42')
        page.click('[data-timeline-mode="full"]')
        continued = page.locator('#timeline-lines li[data-kind="job_continued"]')
        expect(continued).to_have_count(1, timeout=GUARD_MS)
        page.screenshot(path=screenshots / "breakpoint-continued.png", full_page=True)
        job = studio.call(studio.engine.get_job(job_id))
        assert job is not None
        assert job.state_history["echo"]["size"] == 42
        page.goto(f"{studio.url}/studio/blueprints")
        expect(page.locator('[data-blueprint="studio_echo"] svg g.node.state[data-state="work"]')).to_have_class(
            re.compile(r"\bbreakpoint\b")
        )
        page.screenshot(path=screenshots / "breakpoint-blueprints.png", full_page=True)
    finally:
        for breakpoint in studio.call(studio.engine.breakpoints()):
            studio.call(studio.engine.remove_breakpoint(breakpoint.id))


def test_break_one_job_from_its_page_then_step(page: Page, studio: ServedEngine, screenshots: Path) -> None:
    # Its task takes 3 s, so the job is still running when its page is drawn and the break clicked
    # (with 1 s, a loaded machine drew the page of a job already finished: no break control).
    job = studio.call(studio.engine.create_job("studio_echo", {"sleep_s": 3.0}))
    page.goto(f"{studio.url}/studio/jobs/{job.id}")
    page.select_option("#break-at", "done")
    page.click('[data-action="break"]')
    expect(page.locator("#job-hold [data-job-breakpoints] .breakpoint-item")).to_have_count(1)
    expect(page.locator("[data-hold-message]")).to_contain_text("held before done")
    expect(page.locator("#job-header")).to_have_attribute("data-status", "held", timeout=GUARD_MS)
    expect(page.locator("#job-hold [data-held]")).to_contain_text("Held at done")
    page.locator('#job-hold [data-action="step"]').click()  # done's handler runs: the job ends
    expect(page.locator("#job-header")).to_have_attribute("data-status", "finished", timeout=GUARD_MS)
    expect(page.locator("#job-hold")).to_have_count(0)  # an ended job has no breakpoint panel
    page.screenshot(path=screenshots / "breakpoint-stepped-to-the-end.png", full_page=True)
    for breakpoint in studio.call(studio.engine.breakpoints()):  # a job's own outlives it (the engine's rule)
        studio.call(studio.engine.remove_breakpoint(breakpoint.id))
