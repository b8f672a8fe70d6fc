"""EngineMonitor's rerun (issue 21, item 2 from the notebook), driven through the widgets' models as a
front end would (values set, buttons clicked): an ended job chosen, a state, its data there in the
editors, one field edited, Rerun; the new job finishes with the edit, both histories name each other;
a bad edit is shown and not sent; a job in flight is not offered."""

from __future__ import annotations

import json

from support.engine import FakeWorker, success, wait_for_status
from support.notebook import press, text_of
from support.studio import studio_engine

from avtomatika.studio.notebook import EngineMonitor


async def test_an_ended_job_is_rerun_from_the_monitor_with_an_edit() -> None:
    async with studio_engine() as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        monitor = EngineMonitor(engine, blueprint="studio_echo", refresh_s=0.05)
        panel = monitor.reruns
        try:
            job = await monitor.start_job({"size": 10})
            task = await worker.take()
            await worker.answer(task, success({"echoed": 10}))
            await wait_for_status(engine, job.id, "finished")
            in_flight = await monitor.start_job({"size": 1})
            await monitor.refresh()
            assert [job_id for _, job_id in panel.job_choice.options] == [job.id], "a job in flight is not offered"
            assert (await worker.take()).job_id == in_flight.id  # answered by nobody: it stays in flight

            panel.state_choice.value = "work"
            await monitor.settled()
            assert json.loads(panel.initial_data.value) == {"size": 10}
            assert json.loads(panel.state_history.value) == {}
            assert "as the job entered work (visit 1)" in text_of(panel.source.value)

            panel.initial_data.value = '{"size": 42'
            await press(monitor, panel.rerun_button)
            assert "initial_data: not valid JSON" in text_of(panel.message.value)
            assert panel.last_rerun == ""

            panel.initial_data.value = '{"size": 42}'
            await press(monitor, panel.rerun_button)
            rerun_id = panel.last_rerun
            assert rerun_id
            assert f"a rerun of {job.id[:8]}" in " ".join(text_of(panel.message.value).split())
            task = await worker.take()
            assert task.params == {"size": 42}
            await worker.answer(task, success({"echoed": 42}))
            rerun = await wait_for_status(engine, rerun_id, "finished")
            assert rerun.state_history["work_tries"] == 1  # start did not run again, work ran once
            detail = await engine.reads.detail(rerun_id)
            assert detail.rerun_of["job_id"] == job.id
            assert detail.rerun_of["edits"] == {"initial_data": {"set": {"size": 42}, "was": {"size": 10}}}
            assert (await engine.reads.detail(job.id)).reruns[0]["rerun_job_id"] == rerun_id
            assert (await engine.get_job(in_flight.id)).status == "waiting_for_worker"
        finally:
            monitor.close()
