"""JobHistory: the studio's time travel in a notebook, on the read model, for a finished job of an
engine that stopped (history in a SQLite file)."""

from __future__ import annotations

from pathlib import Path

from support.engine import FakeWorker, fast_config, success, wait_for_status
from support.notebook import svg_nodes, taken_edges, text_of

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.storage import MemoryStorage
from avtomatika.studio.notebook import DebuggerError, JobHistory


def review() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("nb_review")

    @bp.handler_for("draft", is_start=True)
    async def draft(context):
        context.state_history["words"] = 120
        context.actions.dispatch_task("proofread", {"lang": "en"}, transitions={"success": "publish"})

    @bp.handler_for("publish", is_end=True)
    async def publish(context):
        context.state_history["published"] = True

    return bp


async def test_a_finished_jobs_history_after_its_engine_stopped(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'history.db'}"
    first = OrchestratorEngine(MemoryStorage(), fast_config(HISTORY_DATABASE_URI=uri))
    first.register_blueprint(review())
    await first.start(http=False)
    try:
        job = await first.create_job("nb_review", {})
        async with FakeWorker(first, "proofer", ["proofread"]) as worker:
            await worker.run_one(success({"typos": 2}))
        await wait_for_status(first, job.id, "finished")
    finally:
        await first.stop()
    engine = OrchestratorEngine(MemoryStorage(), fast_config(HISTORY_DATABASE_URI=uri))
    engine.register_blueprint(review())
    await engine.start(http=False)
    try:
        view = JobHistory(engine, job.id)
        await view.settled()
        assert (view.state, view.status) == ("publish", "finished")
        assert view.seq == view.last_seq
        assert svg_nodes(view.graph.value)["publish"] >= {"active", "visited"}
        assert taken_edges(view.graph.value) == 1
        assert '"published": true' in text_of(view.panel.value)
        # Back to the line where the task was dispatched: draft, waiting, its words set, no typos yet.
        dispatched = next(line for line in view.detail.timeline.lines if line.kind == "task_dispatched")  # type: ignore[union-attr]
        view.slider.value = dispatched.seq
        await view.settled()
        assert (view.seq, view.state, view.status) == (dispatched.seq, "draft", "waiting_for_worker")
        nodes = svg_nodes(view.graph.value)
        assert "active" in nodes["draft"]
        assert "visited" not in nodes["publish"]
        assert taken_edges(view.graph.value) == 0
        panel = text_of(view.panel.value)
        assert '"words": 120' in panel
        assert "typos" not in panel
        assert "proofread" in panel, "the task then, with its params"
        assert '"lang": "en"' in panel
        assert view.picture.html, "a static picture for saved notebooks"
        unknown = JobHistory(engine, "no-such-job")
        await unknown.settled()
        assert "unknown" in text_of(unknown.message.value)
        assert isinstance(DebuggerError("x"), Exception)
    finally:
        await engine.stop()
