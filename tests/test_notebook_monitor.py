"""EngineMonitor true to the jobs' statuses and to the engine's (issue 22, item 9), and an engine
started again on its port in the same process (item 11: a notebook cell run twice)."""

from __future__ import annotations

import aiohttp
import pytest
from support.blueprints import pipeline
from support.engine import fast_config, started_engine, wait_for, wait_for_status
from support.notebook import svg_nodes, text_of
from support.processes import free_port

from avtomatika import OrchestratorEngine
from avtomatika.storage import MemoryStorage
from avtomatika.studio.notebook import DebuggerError, EngineMonitor


async def test_finished_jobs_are_not_live_and_the_buttons_follow_the_chosen_job():
    async with started_engine(pipeline(), API_HOST="127.0.0.1") as engine:
        monitor = EngineMonitor(engine, refresh_s=0.05)
        try:
            done = [await monitor.start_job({}) for _ in range(2)]  # no image: rejected at once, finished
            for job in done:
                await wait_for_status(engine, job.id, "finished")
            waiting = await monitor.start_job({"image": "cat.png"})
            await wait_for_status(engine, waiting.id, "waiting_for_worker")
            await monitor.refresh()

            assert monitor.live_jobs == 1
            assert monitor.by_status == {"finished": 2, "waiting_for_worker": 1}
            header = " ".join(text_of(monitor.header.value).split())
            assert "1 live job" in header
            assert "2 finished" in header
            nodes = svg_nodes(monitor.graph.value)
            assert "has-jobs" not in nodes["rejected"]  # finished jobs are not counted on the graph
            assert 'data-state="resize" data-count="1"' in monitor.graph.value

            monitor.job_choice.value = done[0].id
            assert monitor.cancel_button.disabled
            assert monitor.release_button.disabled
            assert monitor.retry_button.disabled  # a finished job cannot be retried
            monitor.job_choice.value = waiting.id
            assert not monitor.cancel_button.disabled
            assert monitor.release_button.disabled
            await monitor.cancel(waiting.id)
            assert not monitor.retry_button.disabled  # cancelled: it can run again
            assert monitor.cancel_button.disabled
        finally:
            monitor.close()


async def test_a_stopped_engine_is_shown_stopped_and_starts_no_job():
    engine = OrchestratorEngine(MemoryStorage(), fast_config())
    engine.register_blueprint(pipeline())
    await engine.start(http=False)
    monitor = EngineMonitor(engine)
    try:
        await monitor.settled()
        assert monitor.engine_running
        await engine.stop()
        await wait_for(lambda: _stopped(monitor), "the monitor to notice the engine stopped")
        assert "engine stopped" in text_of(monitor.header.value)
        assert monitor.start_button.disabled
        with pytest.raises(DebuggerError, match="the engine is stopped"):
            await monitor.start_job({"image": "x.png"})
        assert await engine.list_jobs() == []  # nothing was created that would never run
    finally:
        monitor.close()


async def _stopped(monitor: EngineMonitor) -> bool:
    await monitor.settled()
    return not monitor.engine_running


async def test_an_engine_started_on_the_port_of_an_earlier_one_stops_it():
    port = free_port()
    first = OrchestratorEngine(MemoryStorage(), fast_config())
    first.register_blueprint(pipeline())
    await first.start(host="127.0.0.1", port=port)
    second = OrchestratorEngine(MemoryStorage(), fast_config())  # the cell run again
    second.register_blueprint(pipeline())
    try:
        await second.start(host="127.0.0.1", port=port)  # was: OSError, address in use
        assert not first.running
        assert first.app is None
        assert second.port == port
        job = await second.create_job("nb_pipeline", {})
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job.id}") as got:
            assert got.status == 200
            assert (await got.json())["id"] == job.id
    finally:
        await second.stop()
        await first.stop()  # stopping twice is harmless
