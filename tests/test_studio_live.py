"""Live updates: SSE streams send named events (the partials) after the engine's events."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from support.engine import FakeWorker, wait_for_status
from support.studio import GUARD_S, next_event, studio_app, studio_engine

from avtomatika.studio.render import TEMPLATES_DIR
from avtomatika.studio.sse import SseEvent


async def test_job_stream_sends_marks_after_the_job_changes(aiohttp_client) -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {})
        await wait_for_status(engine, job.id, "waiting_for_worker")
        client = await aiohttp_client(studio_app(engine))
        async with client.get(f"/studio/live/jobs/{job.id}") as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            first = await next_event(response, "job-marks")
            assert "status-waiting_for_worker" in first
            async with FakeWorker(engine, "w1", ["echo"]) as worker:
                await worker.run_one()
                marks = await next_event(response, "job-marks", "status-finished")
                assert re.search(r'data-node="node-done"[^>]*data-class="[^"]*active', marks)
                header = await next_event(response, "job-header", 'data-status="finished"')
                assert "finished" in header


async def test_job_stream_appends_new_timeline_lines_once(aiohttp_client) -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {})
        await wait_for_status(engine, job.id, "waiting_for_worker")
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert 'sse-swap="timeline-lines" hx-swap="beforeend"' in page
        async with client.get(f"/studio/live/jobs/{job.id}") as response:
            whole = await next_event(response, "timeline")
            seen = [int(s) for s in re.findall(r'id="timeline-line-(\d+)"', whole)]
            assert seen, whole
            assert 'data-kind="job_created"' in whole
            async with FakeWorker(engine, "w1", ["echo"]) as worker:
                await worker.run_one()
                while 'data-kind="job_finished"' not in (lines := await next_event(response, "timeline-lines")):
                    seen += [int(s) for s in re.findall(r'id="timeline-line-(\d+)"', lines)]
                seen += [int(s) for s in re.findall(r'id="timeline-line-(\d+)"', lines)]
                assert "<li" in lines
                assert "<ol" not in lines, "lines are appended to the page's list, not a new list"
        recorded = [entry.seq for entry in await engine.job_history(job.id)]
        assert seen == recorded, "every line sent once, in order"


async def test_jobs_stream_sends_new_rows(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        async with client.get("/studio/live/jobs?blueprint=studio_echo") as response:
            await next_event(response, "nav-counts")
            job = await engine.create_job("studio_echo", {})
            row = await next_event(response, "job-row", "data-sse-new")
            assert f'id="job-row-{job.id}"' in row


async def test_blueprints_and_nav_follow_quarantine(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        async with client.get("/studio/live/blueprints") as response:
            await next_event(response, "blueprint-marks")
            async with FakeWorker(engine, "w1", ["echo"]) as worker:
                await engine.create_job("studio_echo", {})
                await worker.run_one({"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "x"}})
                marks = await next_event(response, "blueprint-marks", "tone-quarantined")
                assert 'data-node="node-work"' in marks
                nav = await next_event(response, "nav-counts", "data-quarantined>1<")
                assert "Quarantine" in nav


async def test_streams_end_on_shutdown(aiohttp_client) -> None:
    async with studio_engine() as engine:
        app = studio_app(engine)
        client = await aiohttp_client(app)
        response = await client.get("/studio/live/workers")
        await next_event(response, "worker-table")
        await asyncio.wait_for(client.close(), GUARD_S)  # would wait for the stream without on_shutdown
        response.close()


def test_every_sse_event_has_its_partial_and_every_swap_is_listed() -> None:
    names = {str(e) for e in SseEvent}
    for event in SseEvent:
        assert (TEMPLATES_DIR / event.partial).is_file(), event.partial
    used = set()
    for template in Path(TEMPLATES_DIR).glob("*.html"):
        used |= set(re.findall(r'sse-swap="([^"]+)"', template.read_text()))
    assert used <= names, used - names
    assert used == names - set(), names - used
