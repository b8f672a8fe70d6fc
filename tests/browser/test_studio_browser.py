"""The studio in Chromium: graphs, starting a job, live highlighting, quarantine, retry, CSRF, sign-in.

Every wait is an expect-style wait (no sleeps); screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from support.browser import ServedEngine
from support.engine import wait_for_status

pytestmark = pytest.mark.slow

GUARD_MS = 15_000


def node(page: Page, state: str):
    return page.locator(f'svg [id="node-{state}"]')


def accept_confirms(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def test_blueprints_page_shows_one_svg_node_per_state(page: Page, studio: ServedEngine, screenshots: Path) -> None:
    page.goto(f"{studio.url}/studio/blueprints")
    expect(page).to_have_title(re.compile("Blueprints · Avtomatika Studio"))
    card = page.locator('[data-blueprint="studio_echo"]')
    expect(card.locator("svg g.node.state")).to_have_count(3)
    expect(page.locator("[data-access]")).to_have_text("open on loopback only")
    expect(page.locator("body")).to_have_attribute("data-live", "open", timeout=GUARD_MS)
    page.screenshot(path=screenshots / "blueprints.png", full_page=True)
    page.goto(f"{studio.url}/studio/-/patterns")
    page.screenshot(path=screenshots / "patterns.png", full_page=True)
    page.goto(f"{studio.url}/studio/workers")
    expect(page.locator('[data-worker="echo-browser"]')).to_have_attribute("data-alive", "true")
    page.screenshot(path=screenshots / "workers.png", full_page=True)


def test_start_a_job_and_watch_it_finish(page: Page, studio: ServedEngine, screenshots: Path) -> None:
    accept_confirms(page)
    page.goto(f"{studio.url}/studio/blueprints/studio_clip")
    expect(page.locator('[data-field="codec"] select')).to_be_visible()
    page.screenshot(path=screenshots / "blueprint-start-form.png", full_page=True)
    page.goto(f"{studio.url}/studio/blueprints/studio_echo")
    page.fill("#initial-data", '{"sleep_s": 1.5, "note": "from the browser"}')
    page.click("#start-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/studio/jobs/[0-9a-f-]{36}$"), timeout=GUARD_MS)
    expect(node(page, "work")).to_have_class(re.compile(r"\bstatus-waiting_for_worker\b"), timeout=GUARD_MS)
    page.screenshot(path=screenshots / "job-waiting.png", full_page=True)
    expect(node(page, "done")).to_have_class(re.compile(r"\bstatus-finished\b"), timeout=GUARD_MS)
    expect(node(page, "work")).not_to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator("#job-header")).to_have_attribute("data-status", "finished")
    # The timeline grew without a reload: its last line arrived over SSE, and no line came twice.
    expect(page.locator('#timeline-lines li[data-kind="job_finished"]')).to_have_count(1, timeout=GUARD_MS)
    seqs = page.locator("#timeline-lines > li").evaluate_all("lines => lines.map(li => Number(li.dataset.seq))")
    assert seqs == sorted(set(seqs)), seqs
    page.screenshot(path=screenshots / "job-finished.png", full_page=True)
    page.goto(f"{studio.url}/studio/jobs")
    expect(page.locator("#job-rows tr").first).to_be_visible()
    page.screenshot(path=screenshots / "jobs.png", full_page=True)


def test_quarantined_job_edited_and_released_finishes(page: Page, studio: ServedEngine, screenshots: Path) -> None:
    job = studio.call(studio.engine.create_job("studio_echo", {"outcome": "permanent"}))
    studio.call(wait_for_status(studio.engine, job.id, "quarantined"))
    page.goto(f"{studio.url}/studio/jobs/{job.id}")
    page.click(f'a[href$="/quarantine?job={job.id}"]')
    item = page.locator(f'[id="q-{job.id}"]')
    expect(item).to_have_class(re.compile(r"\barrived\b"))
    expect(item).to_contain_text("PERMANENT_ERROR")
    expect(page.locator('[data-selected-count="triage"]')).to_have_text("1 selected")
    page.screenshot(path=screenshots / "quarantine.png", full_page=True)
    page.fill("#triage-params", '{"outcome": "success"}')
    page.click('#triage button[value="release-edited"]')
    expect(page.locator("#bulk-review [data-question]")).to_have_text("Release 1 job with edited params?")
    page.click("#bulk-review [data-confirm-bulk]")
    expect(item).to_have_class(re.compile(r"\bleft\b"), timeout=GUARD_MS)
    page.goto(f"{studio.url}/studio/jobs/{job.id}")
    expect(node(page, "done")).to_have_class(re.compile(r"\bstatus-finished\b"), timeout=GUARD_MS)


def test_retry_a_failed_job(page: Page, studio: ServedEngine) -> None:
    accept_confirms(page)
    job = studio.call(studio.engine.create_job("studio_echo", {"fail_first": True}))
    page.goto(f"{studio.url}/studio/jobs/{job.id}")
    expect(page.locator("#job-header")).to_have_attribute("data-status", "failed", timeout=GUARD_MS)
    expect(node(page, "work")).to_have_class(re.compile(r"\bstatus-failed\b"))
    page.select_option("#retry-from", "work")
    page.click('[data-action="retry"]')
    expect(page.locator("#flash")).to_contain_text("Retried job", timeout=GUARD_MS)
    expect(node(page, "done")).to_have_class(re.compile(r"\bstatus-finished\b"), timeout=GUARD_MS)


def test_post_without_csrf_is_refused(page: Page, studio: ServedEngine) -> None:
    job = studio.call(studio.engine.create_job("studio_echo", {"sleep_s": 5}))
    page.goto(f"{studio.url}/studio/jobs/{job.id}")
    refused = page.request.post(f"{studio.url}/studio/jobs/{job.id}/cancel", form={"reason": "no token"})
    assert refused.status == 403
    status = page.evaluate(
        "async (url) => (await fetch(url, {method: 'POST', headers: {'HX-Request': 'true'}})).status",
        f"{studio.url}/studio/jobs/{job.id}/cancel",
    )
    assert status == 403
    assert studio.call(studio.engine.get_job(job.id)).status != "cancelled"


def test_with_a_token_a_fresh_browser_gets_the_login_page(
    page: Page, guarded_studio: ServedEngine, screenshots: Path
) -> None:
    page.goto(f"{guarded_studio.url}/studio/jobs")
    expect(page).to_have_url(re.compile(r"/studio/login\?next="))
    expect(page.locator("#login-form")).to_be_visible()
    page.screenshot(path=screenshots / "login.png", full_page=True)
    page.fill("#name", "browser")
    page.fill("#token", "browser-secret")
    page.click("#login-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/studio/jobs$"))
    expect(page.locator("header")).to_contain_text("browser")
