"""A real engine with a history writer subscribed to its events: a finished job's whole timeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.history import STATE_LEFT, HistoryFilter, HistoryStorage, HistoryWriter, open_history
from avtomatika.runtime.context import JobContext
from avtomatika.storage import MemoryStorage


def greeting() -> StateMachineBlueprint:
    flow = StateMachineBlueprint(name="greeting", api_version="v1", api_endpoint="/jobs/greeting")

    @flow.handler_for("start", is_start=True)
    async def start(context: JobContext) -> None:
        context.state_history["greeting"] = f"hello {context.initial_data.name}"
        context.actions.transition_to("done")

    @flow.handler_for("done", is_end=True)
    async def done(context: JobContext) -> None:
        pass

    return flow


@pytest.fixture
async def history() -> AsyncIterator[HistoryStorage]:
    history = await open_history(None)  # nothing configured: SQLite in memory
    try:
        yield history
    finally:
        await history.close()


async def test_the_timeline_of_a_finished_job(history: HistoryStorage) -> None:
    flow = greeting()
    engine = OrchestratorEngine(MemoryStorage(), Config(EXECUTOR_CONCURRENCY=2))
    engine.register_blueprint(flow)
    writer = HistoryWriter(history, engine.storage, engine.events, flush_interval_s=0.01)
    await engine.start(http=False)
    await writer.start()
    try:
        job = await engine.create_job("greeting", {"name": "Ada"}, client="acme")
        deadline = time.monotonic() + 10
        while (current := await engine.get_job(job.id)) is None or current.status != "finished":
            assert time.monotonic() < deadline, f"the job did not finish: {current}"
            await asyncio.sleep(0.01)
    finally:
        await engine.stop()
        await writer.stop()  # after the engine: its last events are written too

    timeline = await history.timeline(job.id)
    assert [(e.kind, e.state) for e in timeline] == [
        ("job_created", "start"),
        ("step_finished", "start"),
        (STATE_LEFT, "start"),
        ("state_entered", "done"),
        ("step_finished", "done"),
        (STATE_LEFT, "done"),
        ("job_finished", "done"),
    ]
    created, step, left, entered, *_, finished = timeline
    assert created.data["initial_data"] == {"name": "Ada"}
    assert created.data["client"] == "acme"
    assert created.data["blueprint_version"] == flow.version
    assert step.duration_ms is not None
    assert step.duration_ms >= 0
    assert left.duration_ms is not None
    assert left.duration_ms >= 0
    assert entered.data == {"previous": "start", "via": {"kind": "transition"}}
    assert (step.data["handler"], step.data["action"], "condition" in step.data) == (
        "greeting.<locals>.start",
        "transition",
        False,
    )
    assert step.data["changes"] == {"set": {"greeting": "hello Ada"}}
    assert finished.status == "finished"
    # Ordered by seq (publication order); `at` is when each event was built, and the engine builds
    # step_finished after the events of its outcome, so times may differ by microseconds from the order.
    assert min(e.at for e in timeline) == created.at
    assert max(e.at for e in timeline) - created.at < 5

    row = await history.get_job(job.id)
    assert row is not None
    assert (row.blueprint, row.blueprint_version, row.status, row.state, row.client) == (
        "greeting",
        flow.version,
        "finished",
        "done",
        "acme",
    )
    assert row.finished_at == finished.at
    assert row.duration_s is not None
    page = await history.list_jobs(HistoryFilter(blueprint="greeting", status="finished"))
    assert [j.id for j in page.jobs] == [job.id]
    assert (await history.counts("greeting")).by_state == {"done": 1}
    assert writer.stats() | {"last_error": None} == {
        "written": 5,
        "dropped": 0,
        "rejected": 0,
        "failures": 0,
        "last_error": None,
    }
