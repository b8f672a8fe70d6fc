"""EngineMonitor's breakpoints and bulk actions (issue 21, items 1, 3 and 4 from the notebook), driven
through the widgets' models as a front end would (values set, buttons clicked), on a real engine in
process with a worker answering in process: a breakpoint set from the monitor holds a job, its
context is edited (a bad edit refused), it is stepped then continued to ``finished``; quarantined
jobs selected are released with edited params, failed with a reason and retried from a state at a
capped rate, with the progress shown, and a slow bulk action is cancelled."""

from __future__ import annotations

import asyncio
import json

from support.engine import FakeWorker, failure, success, wait_for, wait_for_status
from support.notebook import press, svg_nodes, text_of
from support.studio import studio_engine

from avtomatika import OrchestratorEngine
from avtomatika.events import EventKind
from avtomatika.studio.notebook import EngineMonitor


async def _monitor(engine: OrchestratorEngine) -> EngineMonitor:
    monitor = EngineMonitor(engine, blueprint="studio_echo", refresh_s=0.05)
    await monitor.settled()
    return monitor


async def test_a_breakpoint_set_from_the_monitor_holds_a_job_edited_stepped_and_continued() -> None:
    async with studio_engine() as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        monitor = await _monitor(engine)
        panel = monitor.breakpoints
        try:
            panel.state_choice.value = "work"
            await press(monitor, panel.break_button)
            assert panel.breakpoint_count == 1
            assert "breakpoint" in svg_nodes(monitor.graph.value)["work"]
            assert "bp-dot" in monitor.graph.value

            job = await monitor.start_job({"size": 10})
            await wait_for_status(engine, job.id, "held")
            await monitor.refresh()
            assert (panel.held_count, panel.held_choice.value) == (1, job.id)
            assert json.loads(panel.initial_data.value) == {"size": 10}
            assert "holds 1" in text_of(panel.list.value)
            assert not panel.continue_button.disabled

            panel.initial_data.value = '{"size": 42'
            await press(monitor, panel.continue_button)
            assert "initial_data: not valid JSON" in text_of(panel.message.value)
            assert (await engine.get_job(job.id)).status == "held"

            panel.initial_data.value = '{"size": 42}'
            await press(monitor, panel.step_button)  # runs work (its task goes out), held at the next state
            task = await worker.take()
            assert task.params == {"size": 42}
            await worker.answer(task, success({"echoed": 42}))
            stepped = await wait_for_status(engine, job.id, "held")
            assert stepped.state == "done"
            await monitor.refresh()
            assert panel.held_choice.value == job.id
            assert json.loads(panel.state_history.value)["echoed"] == 42  # the editors show the new context
            await press(monitor, panel.continue_button)
            finished = await wait_for_status(engine, job.id, "finished")
            assert finished.initial_data == {"size": 42}

            history = await engine.job_history(job.id)
            continued = [e for e in history if e.kind == EventKind.JOB_CONTINUED]
            assert [(e.data["actor"], e.data["step"]) for e in continued] == [("notebook", True), ("notebook", False)]
            assert continued[0].data["edits"] == {"initial_data": {"set": {"size": 42}}}

            await monitor.refresh()
            assert panel.held_count == 0
            assert panel.continue_button.disabled
            panel.remove_choice.value = panel.remove_choice.options[0][1]
            await press(monitor, panel.remove_button)
            assert panel.breakpoint_count == 0
            assert await engine.breakpoints() == []
        finally:
            monitor.close()


async def _quarantined(engine: OrchestratorEngine, worker: FakeWorker, count: int) -> list[str]:
    jobs = [await engine.create_job("studio_echo", {"n": n}) for n in range(count)]
    for _ in jobs:
        await worker.run_one(failure("PERMANENT_ERROR", "bad input"))
    for job in jobs:
        await wait_for_status(engine, job.id, "quarantined")
    return [job.id for job in jobs]


async def _bulk_done(monitor: EngineMonitor) -> None:
    await monitor.settled()  # the panel follows the action until it ends
    assert monitor.bulk.bulk_status == "finished", text_of(monitor.bulk.message.value)


async def test_selected_quarantined_jobs_are_released_failed_and_retried_in_bulk_at_a_rate() -> None:
    async with studio_engine() as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        ids = await _quarantined(engine, worker, 8)
        monitor = await _monitor(engine)
        bulk = monitor.bulk
        try:
            assert {value for _, value in bulk.jobs.options} == set(ids)
            assert bulk.start_button.disabled  # nothing selected

            # A slow one, cancelled between two jobs: the first is released, the others are not.
            slow = await bulk.start("release", ids[:3], rate_per_s=0.2)
            await wait_for(lambda: _handled(engine, slow.id), "the first job of the slow bulk action")
            await press(monitor, bulk.cancel_button)
            assert bulk.bulk_status == "cancelled"
            assert bulk.handled == 1
            assert [(await engine.get_job(i)).status for i in ids[1:3]] == ["quarantined", "quarantined"]

            bulk.jobs.value = tuple(ids[1:5])
            assert bulk.start_button.description == "Release 4 selected"
            bulk.params.value = '{"fixed": true}'
            bulk.rate.value = 20
            await press(monitor, bulk.start_button)
            await _bulk_done(monitor)
            assert (bulk.handled, bulk.total, bulk.progress.value, bulk.progress.max) == (4, 4, 4, 4)
            assert bulk.jobs.value == ()  # the selection does not outlive its action
            for _ in ids[:5]:  # the slow action's job (as is), then the four with the edit
                task = await worker.take()
                assert task.params.get("fixed") is (None if task.job_id == ids[0] else True)
                await worker.answer(task)
                await wait_for_status(engine, task.job_id, "finished")
            released = [e for e in await engine.job_history(ids[1]) if e.kind == EventKind.JOB_RELEASED]
            assert released[0].data["bulk_id"] == bulk.bulk_id
            assert released[0].data["actor"] == "notebook"

            bulk.jobs.value = tuple(ids[5:7])
            bulk.kind.value = "fail"
            bulk.reason.value = "bad upstream data"
            await press(monitor, bulk.start_button)
            await _bulk_done(monitor)
            for job_id in ids[5:7]:
                failed = await engine.get_job(job_id)
                assert failed.status == "failed"
                assert failed.error.startswith("bad upstream data")

            bulk.jobs.value = (ids[7],)
            bulk.kind.value = "retry"
            bulk.from_state.value = "start"
            await press(monitor, bulk.start_button)
            await _bulk_done(monitor)
            task = await worker.take()
            assert task.job_id == ids[7]
            assert "retry of 1 job(s) at 20/s: finished · 1 handled · 1 done" in text_of(bulk.message.value)

            await worker.answer(task, failure("PERMANENT_ERROR", "still bad"))  # quarantined again
            await wait_for_status(engine, ids[7], "quarantined")
            await monitor.refresh()
            bulk.jobs.value = (ids[7],)
            bulk.kind.value = "release"
            bulk.params.value = "[1, 2]"
            await press(monitor, bulk.start_button)
            assert "params must be a JSON object" in text_of(bulk.message.value)
            assert (await engine.get_job(ids[7])).status == "quarantined"
        finally:
            monitor.close()


async def _handled(engine: OrchestratorEngine, bulk_id: str) -> bool:
    await asyncio.sleep(0)
    return (await engine.bulk.get(bulk_id)).handled >= 1
