"""The notebook widgets, driven through their models as a front end would: buttons' click(), form values.

No kernel here: ipywidgets without one talk to a dummy comm, and the widgets run their work in the
test's event loop, as they do in the kernel's. Graphs are read by parsing the SVG and finding nodes
by their ``<title>``.
"""

from __future__ import annotations

import asyncio

import pytest
from support.blueprints import end_states, pipeline
from support.engine import FakeWorker, failure, fast_config, started_engine, wait_for, wait_for_status
from support.notebook import highlighted, press, svg_nodes, taken_edges, text_of

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.models import JobStatus
from avtomatika.storage import MemoryStorage
from avtomatika.studio.notebook import BlueprintView, DebuggerError, EngineMonitor, StepDebugger, debug_engine


# -- the step debugger ------------------------------------------------------------------------------
async def test_step_highlights_the_state_and_shows_context_action_and_diff(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    assert highlighted(dbg.graph.value) == ["validate"]
    assert "fast_review" not in dbg.now.value
    assert "validate" in text_of(dbg.now.value)

    await press(dbg, dbg.step_button)

    assert dbg.message.value == ""
    assert highlighted(dbg.graph.value) == ["resize"]
    assert (dbg.state, dbg.status, dbg.steps) == ("resize", "running", 1)
    assert svg_nodes(dbg.graph.value)["validate"] >= {"visited"}
    assert taken_edges(dbg.graph.value) == 1
    last = text_of(dbg.log_view.details.value)
    assert "transition_to('resize')" in last
    assert "+ checked" in last
    now = text_of(dbg.now.value)
    assert "cat.png" in now
    assert '"checked": true' in now
    assert dbg.task_form.layout.display == "none"

    await press(dbg, dbg.step_button)

    assert dbg.status == JobStatus.WAITING_FOR_WORKER
    assert "dispatch_task: 'resize'" in text_of(dbg.log_view.details.value)
    assert dbg.task_form.layout.display == ""
    assert "resize" in text_of(dbg.task_form.info.value)
    assert dbg.step_button.disabled


async def test_breakpoint_stops_continue_before_the_handler_runs(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    dbg.breakpoint_list.value = ["resize"]
    assert "breakpoint" in svg_nodes(dbg.graph.value)["resize"]

    await press(dbg, dbg.continue_button)
    assert (dbg.state, dbg.status) == ("resize", "running")  # stopped before resize's handler

    await press(dbg, dbg.continue_button)
    assert (dbg.state, dbg.status) == ("resize", "waiting_for_worker")  # stopped at the task

    entry = await dbg.answer_task("success", {"width": 640, "height": 480})
    assert entry.next_state == "review"
    await press(dbg, dbg.continue_button)

    assert (dbg.state, dbg.status) == ("publish", "finished")
    assert highlighted(dbg.graph.value) == ["publish"]
    assert dbg.session.job.state_history["score"] == 64
    assert [e.kind for e in dbg.entries] == ["step", "step", "answer", "step", "step"]


async def test_back_restores_an_earlier_step_and_continues_with_edited_state_history(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await dbg.continue_()
    await dbg.answer_task("success", {"width": 640})
    await dbg.continue_()
    assert dbg.session.job.state_history["score"] == 64
    before_review = next(s for s in dbg.session.snapshots if s.job.state == "review")

    # Through the controls: pick the snapshot, edit its state_history, press Back.
    dbg.travel.choice.value = before_review.id
    assert '"width": 640' in dbg.travel.history.value
    dbg.travel.history.value = '{"checked": true, "width": 1000}'
    await press(dbg, dbg.travel.back_button)

    assert dbg.message.value == ""
    assert (dbg.state, dbg.status, dbg.steps) == ("review", "running", before_review.step)
    assert highlighted(dbg.graph.value) == ["review"]
    assert "state_history edited" in dbg.entries[-1].action
    await press(dbg, dbg.continue_button)
    assert (dbg.state, dbg.status) == ("publish", "finished")
    assert dbg.session.job.state_history["score"] == 100

    # Back to the very start: the job runs again from validate, and its task is withdrawn on the way.
    await dbg.back(0)
    assert (dbg.state, dbg.status, dbg.steps) == ("validate", "running", 0)
    assert dbg.session.job.state_history == {}
    assert next(label for label, _ in dbg.travel.choice.options) == "step 0 · validate"
    assert all(label.startswith("branch ") for label, _ in dbg.travel.choice.options[1:])


async def test_back_while_waiting_withdraws_the_task(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await dbg.continue_()
    [task] = await dbg.session.open_tasks()
    await dbg.back(1)
    assert (dbg.state, dbg.status) == ("resize", "running")
    stored = await dbg.engine.storage.get_task(task.id)
    assert stored.status == "withdrawn"
    assert dbg.task_form.layout.display == "none"


async def test_a_task_answered_by_hand_with_permanent_error_quarantines_the_job(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await dbg.continue_()
    assert dbg.task_form.layout.display == ""
    assert set(dbg.task_form.status.options) >= {"success", "failure", "cancelled"}

    dbg.task_form.status.value = "failure"
    dbg.task_form.code.value = "PERMANENT_ERROR"
    dbg.task_form.message.value = "file is corrupt"
    await press(dbg, dbg.task_form.answer_button)

    assert dbg.message.value == ""
    assert dbg.status == "quarantined"
    assert "quarantined" in text_of(dbg.header.value)
    assert "PERMANENT_ERROR: file is corrupt" in text_of(dbg.now.value)
    assert dbg.release_button.layout.display == ""
    assert highlighted(dbg.graph.value) == ["resize"]
    assert "tone-quarantined" in svg_nodes(dbg.graph.value)["resize"]

    await press(dbg, dbg.release_button)  # as the studio's Release: the task goes out again
    assert dbg.status == "waiting_for_worker"


async def test_a_handler_that_raises_shows_its_traceback_and_steps_again_once_fixed(make_debugger):
    bp = StateMachineBlueprint("nb_fix")

    @bp.handler_for("review", is_start=True)
    async def review(context, actions):
        context.state_history["score"] = context.state_history["width"] // 10
        actions.transition_to("publish")

    dbg = await make_debugger(end_states(bp, "publish"), {})
    await press(dbg, dbg.continue_button)

    entry = dbg.entries[-1]
    assert entry.state == "review"
    assert entry.error is not None
    assert "KeyError: 'width'" in entry.traceback
    assert dbg.status in ("awaiting_retry", "running")
    last = text_of(dbg.log_view.details.value)
    assert "Traceback" in last
    assert "KeyError" in last

    @bp.handler_for("review", is_start=True)
    async def review(context, actions):  # noqa: F811 - the fix, as a cell run again defines it: the same name
        context.state_history["score"] = context.state_history.get("width", 100) // 10
        actions.transition_to("publish")

    await press(dbg, dbg.step_button)
    assert text_of(dbg.message.value).strip() == ""
    assert dbg.entries[-1].error is None
    assert (dbg.state, dbg.status) == ("publish", "running")
    await dbg.step()
    assert dbg.status == "finished"
    assert dbg.session.job.state_history["score"] == 10


async def test_a_conditional_handler_is_shown_as_the_next_one(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png", "priority": "high"})
    await dbg.continue_()
    await dbg.answer_task("success", {})
    assert "fast_review" in text_of(dbg.now.value)
    assert "priority == 'high'" in text_of(dbg.now.value)
    await dbg.step()
    assert dbg.entries[-1].handler.startswith("pipeline.<locals>.fast_review")


async def test_a_real_worker_can_answer_when_the_debugger_serves(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"}, serve=True)
    assert dbg.url is not None
    assert dbg.url.startswith("http://127.0.0.1:")
    await dbg.continue_()
    assert dbg.url in text_of(dbg.task_form.info.value)

    worker = await FakeWorker(dbg.engine, "real-1", ["resize"]).register()
    task = await worker.take()
    await worker.answer(task, data={"width": 320})

    await wait_for(lambda: _settled_in(dbg, "review"), "the debugger to see the worker's answer")
    assert dbg.entries[-1].kind == "outside"
    assert "real-1 answered task 'resize'" in dbg.entries[-1].action
    assert highlighted(dbg.graph.value) == ["review"]
    assert dbg.task_form.layout.display == "none"


async def _settled_in(dbg: StepDebugger, state: str) -> bool:
    await dbg.settled()
    return dbg.state == state


async def test_a_given_debug_engine_is_used_and_a_stepping_engine_is_refused(make_debugger):
    bp = pipeline()
    engine = debug_engine(bp)
    dbg = await make_debugger(engine, {"image": "a.png"})
    assert dbg.engine is engine
    assert dbg.blueprint is bp
    await dbg.step()
    assert dbg.state == "resize"

    async with started_engine(pipeline()) as running:
        with pytest.raises(DebuggerError, match="steps its jobs by itself"):
            await StepDebugger(running, {"image": "a.png"}).ready()


async def test_errors_of_the_controls_are_shown_not_raised(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await press(dbg, dbg.task_form.answer_button)
    assert "waits for no task" in text_of(dbg.message.value)
    dbg.travel.choice.value = dbg.session.snapshots[0].id
    dbg.travel.history.value = "{not json"
    await press(dbg, dbg.travel.back_button)
    assert "not valid JSON" in text_of(dbg.message.value)
    await press(dbg, dbg.step_button)
    assert dbg.message.value == ""


async def test_an_approval_is_answered_from_the_debugger(make_debugger):
    bp = StateMachineBlueprint("nb_approval")

    @bp.handler_for("ask", is_start=True)
    async def ask(context, actions):
        actions.await_human_approval("slack", "Publish it?", transitions={"yes": "done", "no": "dropped"})

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    @bp.handler_for("dropped", is_end=True)
    async def dropped(context):
        pass

    dbg = await make_debugger(bp, {})
    await press(dbg, dbg.step_button)
    assert dbg.status == "waiting_for_human"
    assert "await_human_approval" in dbg.entries[-1].action
    assert dbg.approval.layout.display == ""
    assert [b.description for b in dbg.approval.buttons.children] == ["no", "yes"]
    assert "Publish it?" in text_of(dbg.approval.info.value)
    assert "slack" in text_of(dbg.approval.info.value)
    await press(dbg, dbg.approval.buttons.children[1])
    assert (dbg.state, dbg.status) == ("done", "running")
    assert dbg.approval.layout.display == "none"
    assert highlighted(dbg.graph.value) == ["done"]


# -- the blueprint view ------------------------------------------------------------------------------
async def test_blueprint_view_redraws_as_handlers_are_added_and_lists_problems():
    bp = StateMachineBlueprint("nb_authoring")

    @bp.handler_for("start", is_start=True)
    async def start(context, actions):
        actions.transition_to("done")

    view = BlueprintView(bp)
    try:
        assert view.errors >= 1
        problems = text_of(view.problems.value)
        assert "no end state" in problems
        assert "unknown state 'done'" in problems
        assert "unknown" in svg_nodes(view.graph.value)["done"]
        first = view.version

        @bp.handler_for("done", is_end=True)
        async def done(context):
            pass

        await view.wait_drawn()  # the view's own poller re-draws it
        assert view.version != first
        assert view.errors == 0
        assert "No problems" in view.problems.value
        assert svg_nodes(view.graph.value)["done"] >= {"end"}

        @bp.handler_for("start", is_start=True).when("context.initial_data.kind ==")
        async def broken(context, actions):
            actions.transition_to("done")

        await view.wait_drawn()
        assert view.errors == 1
        assert "condition" in text_of(view.problems.value).lower()
    finally:
        view.close()


async def test_blueprint_view_without_auto_refresh_draws_on_refresh():
    bp = pipeline()
    view = BlueprintView(bp, auto_refresh=False)
    assert not view.refresh()
    bp.transition("review", "rejected", "declared")
    assert view.refresh()
    assert view.auto_toggle.value is False
    view.auto_toggle.value = True  # the checkbox starts following the blueprint
    assert view._poller is not None
    view.close()
    await asyncio.sleep(0)


# -- the engine monitor -----------------------------------------------------------------------------
async def test_engine_monitor_counts_jobs_per_state_and_runs_the_studio_actions():
    async with started_engine(pipeline(), API_HOST="127.0.0.1") as engine:
        monitor = EngineMonitor(engine, refresh_s=0.05)
        try:
            await monitor.settled()
            assert monitor.studio_url == ""  # not serving HTTP
            job = await monitor.start_job({"image": "cat.png"})
            await wait_for_status(engine, job.id, "waiting_for_worker")
            await wait_for(lambda: _counted(monitor, "resize", 1), "the monitor to count the waiting job")
            assert job.id in monitor.jobs.value

            monitor.job_choice.value = job.id
            monitor.cancel_button.click()
            await monitor.settled()
            assert (await engine.get_job(job.id)).status == "cancelled"
            assert "cancelled" in text_of(monitor.message.value)

            monitor.retry_from.value = "validate"
            monitor.retry_button.click()
            await monitor.settled()
            await wait_for_status(engine, job.id, "waiting_for_worker")

            worker = await FakeWorker(engine, "w-monitor", ["resize"]).register()
            await worker.run_one(failure("PERMANENT_ERROR"))
            await wait_for_status(engine, job.id, "quarantined")
            monitor.job_choice.value = job.id
            monitor.release_button.click()
            await monitor.settled()
            await wait_for_status(engine, job.id, "waiting_for_worker")

            monitor.start_data.value = "{oops"
            monitor.start_button.click()
            await monitor.settled()
            assert "not valid JSON" in text_of(monitor.message.value)
        finally:
            monitor.close()


async def _counted(monitor: EngineMonitor, state: str, count: int) -> bool:
    await monitor.settled()
    marked = f'data-state="{state}" data-count="{count}"' in monitor.graph.value
    return marked and "has-jobs" in svg_nodes(monitor.graph.value)[state]


async def test_engine_monitor_links_to_the_studio_when_the_engine_serves():
    engine = OrchestratorEngine(MemoryStorage(), fast_config())
    engine.register_blueprint(pipeline())
    await engine.start(host="127.0.0.1", port=0)
    monitor = EngineMonitor(engine)
    try:
        await monitor.refresh()
        assert monitor.studio_url == f"http://127.0.0.1:{engine.port}/studio"
        assert monitor.studio_url in monitor.header.value
        job = await monitor.start_job({"image": "x.png"})
        assert f"{monitor.studio_url}/jobs/{job.id}" in monitor.jobs.value
    finally:
        monitor.close()
        await engine.stop()
