"""Quarantine triage in Chromium: 30 quarantined jobs with 3 error signatures are grouped; one group is
released with an edited param at 5 jobs/s (the rate seen in the release events' times), another failed
with a reason; new jobs quarantined meanwhile are announced and nothing moves under an open edit.

Every wait is an expect-style wait; no assertion is about wall-clock speed (only a lower bound on the
spread of the releases, which the rate cap guarantees).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect
from support.blueprints import one_task_blueprint
from support.browser import ServedEngine
from support.engine import FakeWorker, failure, wait_for_status

from avtomatika import OrchestratorEngine
from avtomatika.events import EventKind

pytestmark = pytest.mark.slow

GUARD_MS = 15_000
#: The three error messages (their numbers differ from job to job, their signature does not).
MESSAGES = ("file {n} is corrupt", "codec 'av{n}' is not supported", "quota of {n} MB exceeded")
RATE_PER_S = 5


async def quarantine(engine: OrchestratorEngine, numbers: range, message: str | None = None) -> list[str]:
    """One job per number, quarantined by a PERMANENT_ERROR: ``message``, else MESSAGES in turn (tasks of
    released jobs this worker takes meanwhile are left unanswered)."""
    ids = []
    async with FakeWorker(engine, "w-triage", ["convert"]) as worker:
        for n in numbers:
            job = await engine.create_job("triage_files", {"file": f"f{n}.mp4", "codec": "av2"})
            text = (message or MESSAGES[n % len(MESSAGES)]).format(n=100 + n)
            task = await worker.take()
            while task.job_id != job.id:
                task = await worker.take()
            await worker.answer(task, failure("PERMANENT_ERROR", text))
            await wait_for_status(engine, job.id, "quarantined")
            ids.append(job.id)
    return ids


async def release_times(engine: OrchestratorEngine, job_ids: list[str]) -> list[float]:
    times = []
    for job_id in job_ids:
        lines = await engine.job_history(job_id)
        times += [line.at for line in lines if line.kind == EventKind.JOB_RELEASED]
    return sorted(times)


@pytest.fixture(scope="module")
def served() -> Iterator[ServedEngine]:
    engine = ServedEngine(one_task_blueprint("triage_files", task_type="convert", endpoint=True)).start()
    try:
        yield engine
    finally:
        engine.stop()


def group_of(page: Page, text: str) -> Locator:
    return page.locator("tbody.q-group", has=page.locator("tr.group-head", has_text=text))


def box(locator: Locator) -> tuple[float, float]:
    found = locator.bounding_box()
    assert found is not None
    return round(found["x"], 1), round(found["y"], 1)


def test_triage_groups_releases_at_a_capped_rate_fails_and_never_shifts(
    page: Page, served: ServedEngine, screenshots: Path
) -> None:
    ids = served.call(quarantine(served.engine, range(30)))
    corrupt, codec, quota = (ids[i::3] for i in range(3))
    page.goto(f"{served.url}/studio/quarantine?job={codec[4]}")
    expect(page.locator("body")).to_have_attribute("data-live", "open")
    expect(page.locator("tr.group-head")).to_have_count(3)
    for text in ("file <n> is corrupt", "codec <value> is not supported", "quota of <n> MB exceeded"):
        expect(group_of(page, text).locator("tr.q-row")).to_have_count(10)
        expect(group_of(page, text).locator("[data-group-count]")).to_have_text("10")
    arrived = page.locator(f'[id="q-{codec[4]}"]')
    expect(arrived).to_have_class(re.compile(r"\barrived\b"))
    expect(arrived).to_be_in_viewport()
    expect(page.locator('[data-selected-count="triage"]')).to_have_text("1 selected")
    page.screenshot(path=screenshots / "triage-arrived.png", full_page=True)

    # Nothing selected: every action button is disabled (and so no confirm can open).
    arrived.locator('input[name="job_id"]').uncheck()
    expect(page.locator('[data-selected-count="triage"]')).to_have_text("0 selected")
    for button in page.locator("#triage [data-needs-selection]").all():
        expect(button).to_be_disabled()

    # One group released with an edited param at 5 jobs/s, reviewed as a diff first.
    corrupt_group = group_of(page, "file <n> is corrupt")
    corrupt_group.locator("[data-select-group]").check()
    expect(page.locator('[data-selected-count="triage"]')).to_have_text("10 selected")
    page.fill("#triage-params", '{"codec": "h264",}')
    page.fill("#triage-rate", str(RATE_PER_S))
    page.click('#triage button[value="release-edited"]')
    expect(page.locator('#bulk-review [data-error-field="params"]')).to_contain_text("not valid JSON")
    page.fill("#triage-params", '{"codec": "h264"}')
    page.click('#triage button[value="release-edited"]')
    expect(page.locator("#bulk-review [data-question]")).to_have_text("Release 10 jobs with edited params?")
    expect(page.locator("#bulk-review ul.changes li.changed")).to_contain_text("codec")
    page.screenshot(path=screenshots / "triage-review.png", full_page=True)
    page.click("#bulk-review [data-confirm-bulk]")
    release = page.locator("#bulk-runs .bulk-progress").first
    expect(release).to_be_visible()
    expect(page.locator('[data-selected-count="triage"]')).to_have_text("0 selected")
    expect(corrupt_group.locator("[data-select-group]")).not_to_be_checked()
    expect(page.locator("#bulk-review")).to_be_empty()

    # An open edit; new jobs quarantined meanwhile are announced, and nothing moves.
    page.fill("#triage-params", '{"codec": "vp9"')
    page.focus("#triage-params")
    watched = [
        page.locator("#triage-params"),
        page.locator(f'[id="q-{quota[9]}"]'),
        page.locator(f'[id="q-{codec[0]}"]'),
    ]
    before = [box(w) for w in watched]
    served.call(quarantine(served.engine, range(100, 103), message=MESSAGES[2]))
    expect(page.locator("[data-arrivals]")).to_be_visible()
    expect(page.locator("[data-arrivals-count]")).to_have_text("3")
    expect(group_of(page, "quota of <n> MB exceeded").locator("[data-group-count]")).to_have_text("13")
    expect(group_of(page, "quota of <n> MB exceeded").locator("tr.q-row")).to_have_count(10)
    assert [box(w) for w in watched] == before
    expect(page.locator("#triage-params")).to_be_focused()
    expect(page.locator("#triage-params")).to_have_value('{"codec": "vp9"')
    page.screenshot(path=screenshots / "triage-arrivals.png", full_page=True)

    # Another group failed with a reason, while the release goes on.
    page.fill("#triage-params", "")
    group_of(page, "codec <value> is not supported").locator("[data-select-group]").check()
    page.fill('#triage input[name="reason"]', "codec retired")
    page.click('#triage button[value="fail"]')
    expect(page.locator("#bulk-review [data-question]")).to_have_text("Fail 10 jobs with the reason “codec retired”?")
    page.click("#bulk-review [data-confirm-bulk]")
    expect(page.locator("#bulk-runs .bulk-progress")).to_have_count(2)
    for run in page.locator("#bulk-runs .bulk-progress").all():
        expect(run).to_have_attribute("data-bulk-status", "finished", timeout=GUARD_MS)
    expect(corrupt_group.locator("[data-group-count]")).to_have_text("0")
    expect(corrupt_group.locator("tr.q-row.left")).to_have_count(10)
    assert [box(w) for w in watched[1:]] == before[1:]
    page.screenshot(path=screenshots / "triage-done.png", full_page=True)

    times = served.call(release_times(served.engine, corrupt))
    assert len(times) == 10
    assert times[-1] - times[0] >= (len(times) - 1) / RATE_PER_S - 0.5, times
    for job_id in corrupt:
        job = served.call(served.engine.get_job(job_id))
        assert job is not None
        assert job.status == "waiting_for_worker"
    failed = [served.call(served.engine.get_job(job_id)) for job_id in codec]
    assert all(j is not None and j.status == "failed" and "codec retired" in (j.error or "") for j in failed)

    # "show" reloads the table: the new jobs are in it, the released and failed groups are gone.
    page.click("[data-arrivals-show]")
    expect(page.locator("tr.group-head")).to_have_count(1)
    expect(page.locator("tr.q-row")).to_have_count(13)
    expect(page.locator("[data-arrivals]")).to_be_hidden()

    # The jobs list: everything matching its filter, reviewed with its count.
    page.goto(f"{served.url}/studio/jobs?status=quarantined&blueprint=triage_files")
    page.check('#jobs-bulk [name="select"][value="filter"]')
    page.click('#jobs-bulk button[value="cancel"]')
    expect(page.locator("#bulk-review [data-question]")).to_have_text("Cancel 13 jobs?")
    page.screenshot(path=screenshots / "jobs-bulk-review.png", full_page=True)
    page.goto(f"{served.url}/studio/bulk")
    expect(page.locator("table.bulk-list tbody tr")).to_have_count(2)
    page.screenshot(path=screenshots / "bulk-list.png", full_page=True)
