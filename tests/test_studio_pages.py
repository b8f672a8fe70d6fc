"""Studio pages through aiohttp_client: they render, have JSON twins, and errors follow ``Accept``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from support.engine import FakeWorker, wait_for_status
from support.studio import csrf_of, studio_app, studio_engine

PAGES = ["/studio/blueprints", "/studio/jobs", "/studio/quarantine", "/studio/workers", "/studio/-/patterns"]


@pytest.mark.parametrize("path", PAGES)
async def test_pages_render_with_layout(aiohttp_client, path: str) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        response = await client.get(path)
        text = await response.text()
        assert response.status == 200, text
        assert "<title>" in text
        assert "Avtomatika Studio</title>" in text
        assert 'href="/studio/static/studio.css"' in text
        assert "htmx-2.0.11.min.js" in text
        assert "Quarantine" in text
        assert "alive" in text
        assert "open on loopback only" in text


async def test_index_redirects_and_static_files_are_served(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        response = await client.get("/studio/", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == "/studio/blueprints"
        for path in [
            "studio.css",
            "studio.js",
            "favicon.svg",
            "vendor/htmx-2.0.11.min.js",
            "vendor/htmx-ext-sse-2.2.4.js",
        ]:
            assert (await client.get(f"/studio/static/{path}")).status == 200, path


async def test_blueprints_page_inlines_one_svg_node_per_state(aiohttp_client) -> None:
    async with studio_engine() as engine:
        await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        text = await (await client.get("/studio/blueprints")).text()
        start = text.index('<svg class="avtomatika-graph"', text.index('data-blueprint="studio_echo"'))
        svg = ET.fromstring(text[start : text.index("</svg>", start) + 6])
        ns = "{http://www.w3.org/2000/svg}"
        nodes = [g.get("id") for g in svg.iter(f"{ns}g") if "state" in (g.get("class") or "").split()]
        assert sorted(nodes) == ["node-done", "node-start", "node-work"]
        assert 'sse-swap="blueprint-marks"' in text
        assert 'data-node="node-start"' in text
        twin = await (await client.get("/studio/blueprints", headers={"Accept": "application/json"})).json()
        names = [b["name"] for b in twin["blueprints"]]
        assert names == ["studio_clip", "studio_echo"]
        echo = next(b for b in twin["blueprints"] if b["name"] == "studio_echo")
        assert sum(echo["counts"].values()) == 1


async def test_job_page_and_its_json_twin(aiohttp_client) -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {"hello": "world"})
        await wait_for_status(engine, job.id, "waiting_for_worker")
        await engine.history_writer.flush()
        client = await aiohttp_client(studio_app(engine))
        text = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert 'data-status="waiting_for_worker"' in text
        assert 'data-node="node-work"' in text
        assert "status-waiting_for_worker" in text
        assert 'data-kind="task_dispatched"' in text
        assert "&#34;hello&#34;" in text
        twin = await (await client.get(f"/studio/jobs/{job.id}?format=json")).json()
        assert twin["status"] == "waiting_for_worker"
        assert twin["task"]["type"] == "echo"
        assert "job_created" in [line["kind"] for line in twin["timeline"]]
        assert twin["visits"] == {"start": 1, "work": 1}


async def test_a_job_forgotten_by_the_engine_opens_from_history(aiohttp_client) -> None:
    async with studio_engine() as engine:
        engine.storage.max_terminal_jobs = 1  # MemoryStorage forgets the oldest ended jobs beyond this
        old = await engine.create_job("studio_echo", {"hello": "history"})
        await wait_for_status(engine, old.id, "waiting_for_worker")
        await engine.cancel_job(old.id, actor="operator:olga")
        newer = await engine.create_job("studio_echo", {})
        await engine.cancel_job(newer.id)
        assert await engine.get_job(old.id) is None, "the engine still keeps the old job"
        client = await aiohttp_client(studio_app(engine))
        response = await client.get(f"/studio/jobs/{old.id}")
        assert response.status == 200, await response.text()
        text = await response.text()
        assert 'data-status="cancelled"' in text
        assert 'data-state="work"' in text
        assert "data-from-history" in text
        assert "cancelled by operator:olga" in text
        assert 'data-kind="job_created"' in text
        assert 'data-kind="job_cancelled"' in text
        assert "&#34;history&#34;" in text, "initial data comes from the job_created line"
        # The graph is drawn from history alone: where it stopped, and the edge it took to get there.
        assert 'data-node="node-work" data-state="work" data-class="visited active status-cancelled' in text
        assert 'data-edge="edge-start-work-0" data-class="taken"' in text
        assert "<svg" in text
        assert re.findall(r'data-action="(\w+)"', text) == ["rerun"], "of the actions, only a rerun applies"
        twin = await (await client.get(f"/studio/jobs/{old.id}?format=json")).json()
        assert twin["from_history"] is True
        assert twin["status"] == "cancelled"
        assert twin["visits"] == {"start": 1, "work": 1}
        assert twin["state_history"] == {"work_tries": 1}, "rebuilt from what each step recorded"
        assert twin["taken_edges"] == {"edge-start-work-0": 1, "entry-studio_echo-edge": 1}
        assert (await client.get("/studio/jobs/no-such-job")).status == 404


async def test_jobs_list_filters_and_json(aiohttp_client) -> None:
    async with studio_engine() as engine, FakeWorker(engine, "w1", ["echo"]) as worker:
        worker.serve()
        done = await engine.create_job("studio_echo", {})
        await wait_for_status(engine, done.id, "finished")
        await engine.create_job("studio_clip", {"url": "x"})
        await engine.history_writer.flush()
        client = await aiohttp_client(studio_app(engine))
        every = await (await client.get("/studio/jobs?format=json")).json()
        assert len(every["jobs"]) == 2
        assert every["source"] == "history"
        finished = await (await client.get("/studio/jobs?format=json&status=finished&blueprint=studio_echo")).json()
        assert [j["id"] for j in finished["jobs"]] == [done.id]
        by_prefix = await (await client.get(f"/studio/jobs?format=json&q={done.id[:5]}")).json()
        assert done.id in [j["id"] for j in by_prefix["jobs"]]
        html = await (await client.get("/studio/jobs?blueprint=studio_echo")).text()
        assert f'id="job-row-{done.id}"' in html
        assert 'sse-swap="job-row"' in html


async def test_workers_page_lists_workers(aiohttp_client) -> None:
    async with studio_engine() as engine, FakeWorker(engine, "w-studio", ["echo"]):
        client = await aiohttp_client(studio_app(engine))
        text = await (await client.get("/studio/workers")).text()
        assert 'data-worker="w-studio"' in text
        assert 'data-alive="true"' in text
        twin = await (await client.get("/studio/workers?format=json")).json()
        assert twin["workers"][0]["worker_id"] == "w-studio"
        assert twin["workers"][0]["alive"] is True


@pytest.mark.parametrize(
    ("headers", "kind"),
    [({"Accept": "application/json"}, "json"), ({"HX-Request": "true"}, "fragment"), ({}, "page")],
)
async def test_errors_follow_accept(aiohttp_client, headers: dict[str, str], kind: str) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        response = await client.get("/studio/jobs/no-such-job", headers=headers)
        assert response.status == 404
        if kind == "json":
            assert "not found" in (await response.json())["error"]
        elif kind == "fragment":
            assert response.headers["HX-Retarget"] == "#flash"
            assert (await response.text()).startswith('<div class="flash error"')
        else:
            text = await response.text()
            assert "<!doctype html>" in text
            assert "404 · Not found" in text


async def test_unknown_studio_path_is_a_studio_404(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        response = await client.get("/studio/nowhere")
        assert response.status == 404
        assert "<!doctype html>" in await response.text()


async def test_start_form_is_built_from_the_input_model(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        text = await (await client.get("/studio/blueprints/studio_clip")).text()
        for name in ("url", "bitrate_kbps", "codec", "hdr"):
            assert f'data-field="{name}"' in text
        assert '<option value="av1"' in text
        assert 'type="checkbox" name="hdr"' in text
        plain = await (await client.get("/studio/blueprints/studio_echo")).text()
        assert 'name="initial_data"' in plain
        assert await csrf_of(client, "/studio/blueprints/studio_echo")


async def test_studio_without_slash_and_site_root_lead_to_the_studio(aiohttp_client):
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        for path in ("/studio", "/"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 302
            assert response.headers["Location"] == "/studio/"
