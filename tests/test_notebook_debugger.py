"""The step debugger on a real blueprint (issue 22): a .when() branch, a task, a fan-out of 3 into an
aggregator, a human approval. Driven through the widgets' models as a front end would (no kernel):
buttons' click(), form values, and a graph click as the front end reports it (a new ``breakpoints``).
"""

from __future__ import annotations

from support.blueprints import amount_router, pipeline, report
from support.notebook import highlighted, press, svg_nodes, text_of

from avtomatika import StateMachineBlueprint
from avtomatika.studio.notebook import StepDebugger


async def to_fan_out(dbg: StepDebugger) -> None:
    """From intake to the three open branches of fan_out."""
    await dbg.continue_()
    await dbg.answer_task("success", {"pages": ["p1", "p2", "p3"]})
    await dbg.continue_()
    assert (dbg.state, dbg.status) == ("fan_out", "waiting_for_parallel_tasks")


# -- 1. pending inputs: what the aggregator will get ----------------------------------------------
async def test_at_a_breakpoint_on_the_aggregator_the_context_shows_aggregation_results(make_debugger):
    dbg = await make_debugger(report(), {"document": "q3.pdf"}, breakpoints=["aggregate"])
    await to_fan_out(dbg)
    branches = [task.id for task in dbg.open_tasks]
    for score, task_id in enumerate(branches, 1):
        await dbg.answer_task("success", {"score": score}, task_id=task_id)
    assert (dbg.state, dbg.status) == ("aggregate", "running")

    now = text_of(dbg.now.value)
    assert "aggregation_results" in now
    assert 'the payload is under "data"' in now
    assert '"score": 3' in now
    assert "aggregate" in now  # the next handler
    await press(dbg, dbg.step_button)
    step = dbg.entries[-1]
    received = step.context["aggregation_results"]
    assert sorted(received) == sorted(branches)
    assert [received[task_id]["data"]["score"] for task_id in branches] == [1, 2, 3]
    assert dbg.session.job.state_history["total"] == 6
    assert "aggregation_results it received" in text_of(dbg.log_view.details.value)


# -- 2. Back: the previous step by default, redo, the branch kept, edits where the job is --------
async def test_back_defaults_to_the_previous_step_and_redo_returns(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png", "priority": "high"})
    await dbg.continue_()
    await dbg.answer_task("success", {"width": 640})
    assert dbg.log_view.shown is dbg.entries[-1]  # the answer's details, not the first line's
    await dbg.step()  # review (the .when() branch): -> publish
    assert (dbg.state, dbg.steps) == ("publish", 3)
    assert dbg.travel.choice.label == "step 2 · review"  # Back's default: undo the last step

    await press(dbg, dbg.travel.back_button)
    assert (dbg.state, dbg.status, dbg.steps) == ("review", "running", 2)
    back = dbg.entries[-1]
    assert back.kind == "back"
    assert "kept as branch 1" in back.action
    left = [e for e in dbg.entries if e.branch == 1]
    assert [e.kind for e in left] == ["step"]
    assert "[branch 1, left]" in dict((v, k) for k, v in dbg.log_view.lines.options)[left[0].seq]
    assert not dbg.travel.redo_button.disabled

    await press(dbg, dbg.travel.redo_button)
    assert (dbg.state, dbg.status, dbg.steps) == ("publish", "running", 3)
    assert dbg.log_view.shown is dbg.entries[-1]  # the newest action's details, not the first line's
    assert dbg.log_view.lines.value == dbg.entries[-1].seq
    assert all(e.branch is None for e in dbg.entries)  # the step is on the line again
    assert dbg.travel.redo_button.disabled
    numbers = [e.seq for e in dbg.entries]
    assert numbers == sorted(set(numbers))  # log lines never share a number


async def test_a_new_step_after_back_starts_a_line_and_the_old_one_stays_reachable(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png", "priority": "high"})
    await dbg.continue_()
    await dbg.answer_task("success", {"width": 640})
    await dbg.continue_()
    assert (dbg.state, dbg.status) == ("publish", "finished")

    await dbg.back(2, {"checked": True, "width": 10})
    await dbg.step()  # a new line from step 2
    assert dbg.travel.redo_button.disabled  # something new happened: nothing is "ahead" any more
    branch = [label for label, _ in dbg.travel.choice.options if label.startswith("branch 1")]
    assert branch  # the finished line is still there, as a branch
    finished = next(c for c in dbg.session.tree.on_branches() if c.tip and c.job.status == "finished")
    await dbg.restore(finished.id)
    assert (dbg.state, dbg.status) == ("publish", "finished")
    assert dbg.session.job.state_history["width"] == 640
    assert any(e.branch == 2 for e in dbg.entries)  # the line just left became branch 2


async def test_edit_state_history_at_the_current_step(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await dbg.continue_()
    await dbg.answer_task("success", {"width": 640})
    assert (dbg.state, dbg.steps) == ("review", 2)

    await dbg.back(dbg.steps, {"checked": True, "width": 1000})  # was: "no snapshot 2"
    assert dbg.entries[-1].kind == "edit"
    assert (dbg.state, dbg.steps) == ("review", 2)

    dbg.editor.text.value = '{"checked": true, "width": 2000}'  # the editor under the context
    await press(dbg, dbg.editor.save_button)
    await dbg.step()
    assert dbg.session.job.state_history["score"] == 200


# -- 3. the graph: full width, zoom, click-to-toggle, checkboxes -----------------------------------
async def test_a_click_on_a_state_toggles_its_breakpoint_and_the_checkboxes_follow(make_debugger):
    dbg = await make_debugger(report(), {"document": "q3.pdf"})
    assert dbg.graph.layout.width == "100%"
    assert dbg.graph.zoom == 0  # fit to the width (the front end keeps labels >= 10 px)
    boxes = {b.description: b for b in dbg.breakpoint_list.children[1:]}
    assert list(boxes) == list(report().states)

    dbg.graph.set_state({"breakpoints": ["aggregate"]})  # what the front end sends on a click
    assert dbg.breakpoints == {"aggregate"}
    assert boxes["aggregate"].value is True
    assert "breakpoint" in svg_nodes(dbg.graph.value)["aggregate"]

    boxes["approval"].value = True  # a checkbox: the other breakpoint stays
    assert dbg.breakpoints == {"aggregate", "approval"}
    assert set(dbg.graph.breakpoints) == {"aggregate", "approval"}

    dbg.graph.toggle("aggregate")  # a second click takes it out
    assert dbg.breakpoints == {"approval"}
    assert boxes["aggregate"].value is False
    assert "breakpoint" not in svg_nodes(dbg.graph.value)["aggregate"]


# -- 4. a traceback stays until the next action ---------------------------------------------------
async def test_a_traceback_stays_until_the_next_action_and_a_log_click_brings_lines_back(make_debugger):
    bp = StateMachineBlueprint("nb_boom")

    @bp.handler_for("start", is_start=True)
    async def start(context, actions):
        raise ValueError("boom")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    bp.transition("start", "done")
    dbg = await make_debugger(bp, {})
    await press(dbg, dbg.step_button)
    assert "ValueError: boom" in text_of(dbg.log_view.details.value)

    # A change from outside (here: the retry backoff running out, as the scheduler does) is logged...
    await dbg.engine.operations.retry_step_due(dbg.job_id)
    await dbg.session.sync()
    await dbg._refresh()
    assert dbg.entries[-1].kind == "outside"
    # ...but the traceback stays on screen.
    assert "Traceback" in text_of(dbg.log_view.details.value)
    assert "Click a line" in text_of(dbg.log_view.hint.value)

    dbg.log_view.lines.value = dbg.entries[-1].seq  # a click on the outside line shows it
    assert "retry backoff is over" in text_of(dbg.log_view.details.value)
    dbg.log_view.lines.value = dbg.entries[0].seq  # and a click on the step brings the traceback back
    assert "ValueError: boom" in text_of(dbg.log_view.details.value)


# -- 5. a fan-out answered task by task ----------------------------------------------------------
async def test_every_open_task_has_a_picker_and_its_own_answer(make_debugger):
    dbg = await make_debugger(report(), {"document": "q3.pdf"})
    await to_fan_out(dbg)
    form = dbg.task_form
    assert form.layout.display == ""
    labels = [label for label, _ in form.picker.options]
    assert labels[0].startswith("1 of 3 · analyze")
    assert '{"page": "p3"}' in labels[2]
    assert "3 open tasks" in text_of(form.heading.value)

    form.data.value = '{"score": 5}'  # a draft for branch 1...
    form.picker.value = form.picker.options[1][1]
    assert form.data.value == "{}"  # ...is not branch 2's
    form.data.value = '{"score": 7}'
    await press(dbg, form.answer_button)
    assert dbg.message.value == ""
    assert "2 still open" in dbg.entries[-1].action
    assert [label.split(" · ")[0] for label, _ in form.picker.options] == ["1 of 2", "2 of 2"]
    form.picker.value = form.picker.options[0][1]
    assert form.data.value == '{"score": 5}'  # branch 1's draft kept
    await press(dbg, form.answer_button)
    form.data.value = '{"score": 1}'
    await press(dbg, form.answer_button)

    assert (dbg.state, dbg.status) == ("aggregate", "running")
    results = dbg._coming.inputs["aggregation_results"]
    assert sorted(r["data"]["score"] for r in results.values()) == [1, 5, 7]


# -- 6. exhaust the retries in one answer ---------------------------------------------------------
async def test_exhaust_retries_reaches_the_failure_transition(make_debugger):
    dbg = await make_debugger(pipeline(), {"image": "cat.png"})
    await dbg.continue_()
    await press(dbg, dbg.task_form.exhaust_button)
    assert (dbg.state, dbg.status) == ("rejected", "running")
    retries = dbg.engine.config.JOB_MAX_RETRIES
    assert f"failed task 'resize' {retries + 1} time(s)" in dbg.entries[-1].action
    assert "TRANSIENT_ERROR" in (dbg.session.job.error or "")


async def test_exhausting_a_fan_out_branch_quarantines_the_job(make_debugger):
    dbg = await make_debugger(report(), {"document": "q3.pdf"})
    await to_fan_out(dbg)
    await dbg.exhaust_retries(dbg.open_tasks[1].id)
    assert dbg.status == "quarantined"
    assert "retries exhausted" in dbg.session.job.error


# -- 7. a condition that raises, seen in the debugger ---------------------------------------------
async def test_a_condition_that_raises_is_shown_before_the_step_and_quarantines_at_it(make_debugger):
    dbg = await make_debugger(amount_router(), {"amount": "2000"})
    assert "'2000' > 1000" in text_of(dbg.now.value)
    await press(dbg, dbg.step_button)
    assert (dbg.state, dbg.status) == ("route", "quarantined")
    assert "condition 'context.initial_data.amount > 1000' of handler" in dbg.entries[-1].error


# -- 8. an invalid blueprint, at open or made invalid by a cell ------------------------------------
async def test_a_handler_renamed_in_a_cell_turns_the_debugger_off_with_every_error(make_debugger):
    bp = pipeline()
    dbg = await make_debugger(bp, {"image": "cat.png"})
    assert dbg.valid

    @bp.handler_for("publish", is_end=True)
    async def publish_v2(context):  # a cell run again with the handler renamed
        pass

    await press(dbg, dbg.step_button)
    assert dbg.state == "validate"  # nothing ran
    assert "two default handlers" in text_of(dbg.message.value)
    assert not dbg.valid
    assert dbg.step_button.disabled
    assert dbg.continue_button.disabled
    assert "invalid blueprint" in text_of(dbg.header.value)
    assert "publish_v2" in text_of(dbg.now.value)


async def test_a_debugger_opened_on_an_invalid_blueprint_lists_every_error_and_does_not_step():
    bp = StateMachineBlueprint("nb_broken")

    @bp.handler_for("start", is_start=True).when("context.initial_data.size >")
    async def start(context, actions):
        actions.transition_to("nowhere")

    dbg = StepDebugger(bp, {})
    try:
        await dbg.settled()
        assert not dbg.valid
        assert dbg.job_id == ""
        header, now = text_of(dbg.header.value), text_of(dbg.now.value)
        assert "invalid blueprint" in header
        assert "starting" not in header
        assert "column 28" in now  # every error, each on its own line
        assert "unknown state 'nowhere'" in now
        assert "no end state" in now
        assert dbg.step_button.disabled
        assert dbg.continue_button.disabled
        assert "is invalid" in text_of(dbg.message.value)
    finally:
        await dbg.aclose()


# -- 12. the approval's message; open tasks without awaiting ---------------------------------------
async def test_the_approval_shows_its_message_and_decisions(make_debugger):
    dbg = await make_debugger(report(), {"document": "q3.pdf", "priority": "rush"})
    await dbg.continue_()
    assert dbg.entries[0].handler.endswith("rush  (when context.initial_data.priority == 'rush')")
    assert dbg.state == "fan_out"
    for task in dbg.open_tasks:
        await dbg.answer_task("success", {"score": 4}, task_id=task.id)
    await dbg.continue_()
    assert dbg.status == "waiting_for_human"
    info = text_of(dbg.approval.info.value)
    assert "Publish the report (score 4)?" in info
    assert "integration notebook" in " ".join(info.split())
    assert [b.description for b in dbg.approval.buttons.children] == ["approve", "reject"]
    await press(dbg, dbg.approval.buttons.children[0])
    await dbg.continue_()
    assert (dbg.state, dbg.status) == ("publish", "finished")
    assert highlighted(dbg.graph.value) == ["publish"]
