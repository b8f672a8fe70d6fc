"""The issue's check, through the studio: a breakpoint hit on a live engine (two engine processes on one
redis-server, real echo worker processes). The breakpoint is set on one engine's studio, the job is
created through the other's API and held; its context is edited on the other engine's studio (form
POSTs with the session's CSRF token, as the page sends them), and Continue takes it to ``finished``
with the edit in what the worker was sent and answered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from support.cluster import Cluster, Engine, running_cluster
from support.postgres_server import PostgresServer

pytestmark = [pytest.mark.slow]

CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, session: aiohttp.ClientSession) -> Iterator[Cluster]:
    with running_cluster(tmp_path, postgres, session) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser's cookies: the studio's session cookie is kept for 127.0.0.1 too."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as opened:
        yield opened


async def _studio(browser: aiohttp.ClientSession, engine: Engine, path: str) -> tuple[str, str]:
    """A studio page's HTML and the CSRF token it carries (opening it starts the session)."""
    async with browser.get(f"{engine.url}/studio{path}") as page:
        assert page.status == 200, await page.text()
        text = await page.text()
    found = CSRF.search(text)
    assert found is not None
    return text, found.group(1)


async def _post(browser: aiohttp.ClientSession, engine: Engine, path: str, token: str, **form: str) -> tuple[int, str]:
    headers = {"HX-Request": "true"}
    async with browser.post(f"{engine.url}/studio{path}", data={"csrf_token": token, **form}, headers=headers) as sent:
        return sent.status, await sent.text()


@pytest.mark.timeout(90)
async def test_a_job_held_on_a_live_cluster_is_edited_in_the_studio_and_continued(
    cluster: Cluster, browser: aiohttp.ClientSession
) -> None:
    one, two = cluster.engines
    for engine in cluster.engines:
        cluster.start_worker(engine)
    await cluster.wait_workers()

    _, token_one = await _studio(browser, one, "/blueprints/multi_chain")
    status, text = await _post(browser, one, "/blueprints/multi_chain/states/dispatch/breakpoint", token_one)
    assert status == 200, text
    (breakpoint,) = (await cluster.get("/api/v1/breakpoints", two))["breakpoints"]
    assert (breakpoint["state"], breakpoint["set_by"]) == ("dispatch", "operator:local")

    async with cluster.session.post(f"{two.url}/api/v1/jobs/multi_chain", json={"params": {"size": 10}}) as created:
        job_id = (await created.json())["job_id"]
    held = await cluster.wait_status(one, job_id, "held")
    assert (held["current_state"], held["task_count"]) == ("dispatch", 0)

    page, token_two = await _studio(browser, two, f"/jobs/{job_id}")  # the other engine's studio
    assert "Held at a breakpoint" in page
    assert breakpoint["id"][:8] in page
    status, text = await _post(browser, two, f"/jobs/{job_id}/continue", token_two, initial_data="{oops")
    assert status == 422
    assert "initial_data is not valid JSON" in text
    assert (await cluster.get(f"/api/v1/jobs/{job_id}", one))["status"] == "held"

    status, text = await _post(
        browser, two, f"/jobs/{job_id}/continue", token_two, initial_data='{"params": {"size": 42}}'
    )
    assert status == 200, text
    finished = await cluster.wait_status(one, job_id, "finished")
    assert finished["initial_data"] == {"params": {"size": 42}}
    assert finished["state_history"]["echo"] == {"size": 42}  # what the worker was sent, and answered
    assert (await cluster.handler_runs([job_id], ("dispatch",)))[(job_id, "dispatch")] == 1

    # Back on the first engine's studio (the two share 127.0.0.1, so its cookie; each signs its own sessions).
    _, token_one = await _studio(browser, one, "/blueprints/multi_chain")
    status, text = await _post(
        browser, one, f"/blueprints/multi_chain/breakpoints/{breakpoint['id']}/remove", token_one
    )
    assert status == 200, text
    assert (await cluster.get("/api/v1/breakpoints", two))["breakpoints"] == []
