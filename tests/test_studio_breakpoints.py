"""Breakpoints in the studio: set from a state of a blueprint's graph or from a job's page, drawn on the
graph and listed; a held job's page edits its context (bad input refused inline, never a 5xx) and
continues or steps it; held jobs in lists and counts. The two-engine case is in
test_studio_breakpoints_cluster.py, the browser one in browser/test_breakpoints_browser.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.engine import FakeWorker, success, wait_for_status
from support.studio import csrf_of, studio_app, studio_engine

from avtomatika import OrchestratorEngine
from avtomatika.events import EventKind

HX = {"HX-Request": "true"}
JSON = {"Accept": "application/json"}


async def _client(aiohttp_client: Any, engine: OrchestratorEngine) -> tuple[TestClient, dict[str, str]]:
    client = await aiohttp_client(studio_app(engine))
    token = await csrf_of(client)
    return client, {**HX, "X-CSRF-Token": token}


async def test_a_state_clicked_on_the_blueprint_page_sets_and_removes_a_breakpoint(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client, headers = await _client(aiohttp_client, engine)
        page = await (await client.get("/studio/blueprints/studio_echo")).text()
        assert 'data-graph-mode="breakpoints"' in page
        assert "None. Click a state on the graph" in page

        panel = await client.get("/studio/blueprints/studio_echo/states/work", headers=HX)
        text = await panel.text()
        assert panel.status == 200
        assert "Break here for every new job" in text
        assert "/studio/jobs?blueprint=studio_echo&amp;state=work" in text

        set_ = await client.post("/studio/blueprints/studio_echo/states/work/breakpoint", headers=headers)
        text = await set_.text()
        assert set_.status == 200, text
        (breakpoint,) = await engine.breakpoints()
        assert (breakpoint.blueprint, breakpoint.state, breakpoint.job_id) == ("studio_echo", "work", None)
        assert breakpoint.actor == "operator:local"
        assert f'data-breakpoint="{breakpoint.id}"' in text
        assert 'hx-swap-oob="true"' in text
        assert "Every new job of studio_echo is held" in text
        assert re.search(r'data-state="work" data-class="[^"]*\bbreakpoint\b', text)  # the graph's mark

        page_json = await (await client.get("/studio/blueprints/studio_echo?format=json")).json()
        assert [bp["id"] for bp in page_json["breakpoints"]] == [breakpoint.id]
        panel_json = await (await client.get("/studio/blueprints/studio_echo/states/work", headers=JSON)).json()
        assert panel_json["breakpoints"][0]["state"] == "work"
        listed = await (await client.get("/studio/blueprints?format=json")).json()
        assert {b["name"]: len(b["breakpoints"]) for b in listed["blueprints"]}["studio_echo"] == 1

        removed = await client.post(
            f"/studio/blueprints/studio_echo/breakpoints/{breakpoint.id}/remove",
            data={"panel_state": "work"},
            headers=headers,
        )
        assert removed.status == 200
        assert "Removed the breakpoint on work" in await removed.text()
        assert await engine.breakpoints() == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studio/blueprints/studio_echo/states/nowhere", 404),
        ("/studio/blueprints/nothing/states/work", 404),
    ],
)
async def test_unknown_states_and_blueprints_are_404(aiohttp_client, path: str, status: int) -> None:
    async with studio_engine() as engine:
        client, headers = await _client(aiohttp_client, engine)
        assert (await client.get(path, headers=HX)).status == status
        assert (await client.post(path + "/breakpoint", headers=headers)).status == status
        gone = await client.post("/studio/blueprints/studio_echo/breakpoints/nope/remove", headers=headers)
        assert gone.status == 404


async def _held(engine: OrchestratorEngine, data: dict[str, Any]) -> str:
    await engine.set_breakpoint("studio_echo", "work")
    job = await engine.create_job("studio_echo", data)
    await wait_for_status(engine, job.id, "held")
    return job.id


async def test_a_held_job_page_edits_the_context_and_continues(aiohttp_client) -> None:
    async with studio_engine() as engine:
        worker = FakeWorker(engine, "w1", ["echo"])
        await worker.register()
        client, headers = await _client(aiohttp_client, engine)
        job_id = await _held(engine, {"size": 10})

        page = await (await client.get(f"/studio/jobs/{job_id}")).text()
        assert "Held at a breakpoint" in page
        assert 'name="initial_data"' in page
        assert "&#34;size&#34;: 10" in page
        assert 'data-action="step"' in page
        assert "Nothing times it out while it is held" in page
        assert "times out in" not in page  # no countdown for a held job
        view = await (await client.get(f"/studio/jobs/{job_id}?format=json")).json()
        assert view["status"] == "held"
        assert (view["hold"]["held"], view["hold"]["held_at"]) == (True, "work")
        assert view["hold"]["breakpoints"][0]["state"] == "work"

        bad = await client.post(
            f"/studio/jobs/{job_id}/continue",
            data={"initial_data": '{"size": 42', "state_history": "[1]"},
            headers=headers,
        )
        text = await bad.text()
        assert bad.status == 422
        assert 'data-error-for="initial_data"' in text
        assert "initial_data is not valid JSON" in text
        assert 'data-error-for="state_history"' in text
        assert "must be a JSON object" in text
        assert "{&#34;size&#34;: 42" in text  # as typed
        assert (await engine.get_job(job_id)).status == "held"

        good = await client.post(
            f"/studio/jobs/{job_id}/continue",
            data={"initial_data": json.dumps({"size": 42}), "state_history": "{}"},
            headers=headers,
        )
        assert good.status == 200, await good.text()
        assert "Continued with initial_data and state_history as edited" in await good.text()
        task = await worker.take()
        assert task.params == {"size": 42}
        await worker.answer(task, success({"echo": 42}))
        finished = await wait_for_status(engine, job_id, "finished")
        assert finished.initial_data == {"size": 42}
        history = await engine.job_history(job_id)
        (continued,) = [e for e in history if e.kind == EventKind.JOB_CONTINUED]
        assert continued.data["actor"] == "operator:local"
        assert continued.data["edits"]["initial_data"] == {"set": {"size": 42}}


async def test_step_holds_the_job_at_the_next_state_and_a_continue_of_a_running_job_is_409(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client, headers = await _client(aiohttp_client, engine)
        job_id = await _held(engine, {})
        stepped = await client.post(f"/studio/jobs/{job_id}/step", headers=headers)
        assert stepped.status == 200
        assert "Stepped" in await stepped.text()
        job = await wait_for_status(engine, job_id, "waiting_for_worker")  # work dispatched its task
        assert job.state == "work"
        again = await client.post(f"/studio/jobs/{job_id}/continue", headers=headers)
        assert again.status == 409
        assert "only held jobs can be continued" in await again.text()


async def test_a_job_page_breaks_its_own_job_at_a_state(aiohttp_client) -> None:
    async with studio_engine() as engine:
        worker = FakeWorker(engine, "w1", ["echo"])
        await worker.register()
        client, headers = await _client(aiohttp_client, engine)
        job = await engine.create_job("studio_echo", {})
        await wait_for_status(engine, job.id, "waiting_for_worker")
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert "Break this job at" in page
        assert "None holds this job." in page

        refused = await client.post(f"/studio/jobs/{job.id}/breakpoints", data={"state": "nowhere"}, headers=headers)
        assert refused.status == 400
        assert "has no state &#39;nowhere&#39;" in await refused.text()
        set_ = await client.post(f"/studio/jobs/{job.id}/breakpoints", data={"state": "done"}, headers=headers)
        assert set_.status == 200
        (breakpoint,) = await engine.breakpoints()
        assert (breakpoint.job_id, breakpoint.state) == (job.id, "done")
        assert "This job will be held before done." in await set_.text()
        marks = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert re.search(r'data-state="done" data-class="[^"]*\bbreakpoint\b', marks)

        task = await worker.take()
        await worker.answer(task)
        held = await wait_for_status(engine, job.id, "held")
        assert held.state == "done"
        removed = await client.post(f"/studio/jobs/{job.id}/breakpoints/{breakpoint.id}/remove", headers=headers)
        assert removed.status == 200
        await wait_for_status(engine, job.id, "finished")  # removing it continued the job


async def test_held_jobs_are_counted_listed_and_filtered(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client, _ = await _client(aiohttp_client, engine)
        job_id = await _held(engine, {})
        page = await (await client.get("/studio/jobs")).text()
        assert "data-held>1<" in page  # the navigation bar's count
        held = await (await client.get("/studio/jobs?status=held&format=json")).json()
        assert [row["id"] for row in held["jobs"]] == [job_id]
        assert {row["status"] for row in held["jobs"]} == {"held"}
        other = await (await client.get("/studio/jobs?status=running&format=json")).json()
        assert job_id not in [row["id"] for row in other["jobs"]]
