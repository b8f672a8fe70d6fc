"""Fan-out / fan-in: several tasks, one aggregation state that runs once with every result."""

from __future__ import annotations

from typing import Any

import pytest
from support.engine import (
    FakeWorker,
    assert_no_silent_stall,
    failure,
    started_engine,
    success,
    wait_for_status,
)

from avtomatika import StateMachineBlueprint
from avtomatika.errors import ResultRejected
from avtomatika.models import JobStatus, TaskStatus


def seed_fanout(aggregated: list[dict[str, Any]]) -> StateMachineBlueprint:
    """The seed README's fan-out/fan-in example, completed into a runnable blueprint."""
    my_blueprint = StateMachineBlueprint("files")

    @my_blueprint.handler_for("process_files", is_start=True)
    async def fan_out_handler(context):
        for file in context.initial_data.get("files", []):
            context.actions.dispatch_task(
                task_type="file_analysis", params={"file": file}, transitions={"success": "aggregate_results"}
            )

    @my_blueprint.aggregator_for("aggregate_results")
    async def aggregator_handler(context):
        all_results = context.aggregation_results
        aggregated.append(dict(all_results))
        summary = [res.get("data") for res in all_results.values()]
        context.state_history["summary"] = summary
        context.actions.transition_to("processing_complete")

    @my_blueprint.handler_for("processing_complete", is_end=True)
    async def complete(context):
        pass

    return my_blueprint


def parallel_blueprint(aggregated: list[dict[str, Any]]) -> StateMachineBlueprint:
    bp = StateMachineBlueprint("parallel")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        context.actions.dispatch_parallel(
            [{"task_type": "file_analysis", "params": {"file": f}} for f in context.initial_data["files"]],
            aggregate_into="gather",
        )

    @bp.aggregator_for("gather")
    async def gather(aggregation_results, state_history, actions):
        aggregated.append(dict(aggregation_results))
        state_history["files"] = sorted(r["data"]["file"] for r in aggregation_results.values())
        actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def analyse(task: Any) -> dict[str, Any]:
    return success({"file": task.params["file"], "size": len(task.params["file"])})


async def take_all(worker: FakeWorker, n: int) -> list[Any]:
    return [await worker.take() for _ in range(n)]


async def test_seed_fanout_aggregator_runs_once_with_every_result() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a.txt", "bb.txt", "ccc.txt"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        tasks = await take_all(worker, 3)
        for task in tasks[:2]:
            await worker.answer(task, analyse(task))
        waiting = await engine.get_job(job.id)
        assert waiting is not None
        assert waiting.status == JobStatus.WAITING_FOR_PARALLEL_TASKS  # one branch is still out
        await worker.answer(tasks[2], analyse(tasks[2]))
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert len(aggregated) == 1
    [results] = aggregated
    assert set(results) == {t.id for t in tasks}
    assert all(r["status"] == "success" for r in results.values())
    assert sorted(s["file"] for s in done.state_history["summary"]) == ["a.txt", "bb.txt", "ccc.txt"]
    assert done.state == "processing_complete"


async def test_an_answered_branch_is_closed_at_once_and_a_duplicate_changes_nothing() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        first, *_ = await take_all(worker, 3)
        assert await worker.answer(first, analyse(first)) == "result_accepted_success"
        stored = await engine.storage.get_task(first.id)
        assert stored is not None
        assert stored.status == TaskStatus.DONE
        assert await engine.storage.worker_load() == {"w1": 2}
        assert await worker.answer(first, analyse(first)) == "result_accepted_duplicate"
        assert set(await engine.storage.branch_results(job.id)) == {first.id}
        waiting = await engine.get_job(job.id)
        assert waiting is not None
        assert waiting.status == JobStatus.WAITING_FOR_PARALLEL_TASKS
    assert aggregated == []


async def test_interleaved_fan_outs_each_aggregate_once() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        jobs = [await engine.create_job("files", {"files": [f"{n}-{i}" for i in range(3)]}) for n in "xy"]
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        tasks = await take_all(worker, 6)
        for task in sorted(tasks, key=lambda t: t.params["file"][2:]):  # x-0, y-0, x-1, y-1...
            await worker.answer(task, analyse(task))
        for job in jobs:
            await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert sorted(sorted(r["data"]["file"] for r in round_.values()) for round_ in aggregated) == [
        ["x-0", "x-1", "x-2"],
        ["y-0", "y-1", "y-2"],
    ]


async def test_single_dispatch_to_an_aggregation_state_is_a_fan_out_of_one() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["only.txt"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        await worker.run_one(analyse)
        done = await wait_for_status(engine, job.id, "finished")
    assert len(aggregated) == 1
    assert done.state_history["summary"] == [{"file": "only.txt", "size": 8}]


async def test_dispatch_parallel_aggregates_every_branch() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(parallel_blueprint(aggregated)) as engine:
        job = await engine.create_job("parallel", {"files": ["x", "y", "z", "w"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        worker.serve(analyse)
        try:
            done = await wait_for_status(engine, job.id, "finished")
        finally:
            await worker.stop()
    assert len(aggregated) == 1
    assert len(aggregated[0]) == 4
    assert done.state_history["files"] == ["w", "x", "y", "z"]


async def test_branch_results_are_not_merged_into_state_history() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(parallel_blueprint(aggregated)) as engine:
        job = await engine.create_job("parallel", {"files": ["x", "y"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        for _ in range(2):
            await worker.run_one(analyse)
        done = await wait_for_status(engine, job.id, "finished")
    assert set(done.state_history) == {"files"}


async def test_transient_branch_is_retried_and_the_aggregator_still_runs_once() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        tasks = await take_all(worker, 3)
        await worker.answer(tasks[0], analyse(tasks[0]))
        await worker.answer(tasks[1], failure("TRANSIENT_ERROR", "disk busy"))
        await worker.answer(tasks[2], analyse(tasks[2]))
        retry = await worker.take()
        assert retry.params == tasks[1].params
        assert retry.attempt == 2
        midway = await engine.get_job(job.id)
        assert midway is not None
        assert midway.status == JobStatus.WAITING_FOR_PARALLEL_TASKS
        await worker.answer(retry, analyse(retry))
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert len(aggregated) == 1
    assert set(aggregated[0]) == {tasks[0].id, retry.id, tasks[2].id}
    assert done.retry_count == 1


async def test_timed_out_branch_is_retried_and_the_aggregator_runs_once() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated), WORKER_TIMEOUT_SECONDS=0.2) as engine:
        job = await engine.create_job("files", {"files": ["a", "b"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        first, second = await take_all(worker, 2)
        await worker.answer(first, analyse(first))
        retry = await worker.take()  # `second` was never answered
        assert retry.params == second.params
        await worker.answer(retry, analyse(retry))
        await wait_for_status(engine, job.id, "finished")
    assert len(aggregated) == 1
    assert set(aggregated[0]) == {first.id, retry.id}


async def test_permanent_branch_quarantines_and_release_finishes() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        a, b, c = await take_all(worker, 3)
        await worker.answer(a, analyse(a))
        await worker.answer(b, failure("PERMANENT_ERROR", "corrupted"))
        quarantined = await wait_for_status(engine, job.id, "quarantined")
        assert "corrupted" in (quarantined.error or "")
        held = {t.params["file"] for t in await engine.current_tasks(quarantined)}
        assert held == {"b", "c"}  # the failed branch and the one still running
        with pytest.raises(ResultRejected):  # c was withdrawn when the job was quarantined
            await worker.answer(c, analyse(c))
        await assert_no_silent_stall(engine)

        await engine.release_job(job.id)
        again = await take_all(worker, 2)
        assert {t.params["file"] for t in again} == {"b", "c"}
        for task in again:
            await worker.answer(task, analyse(task))
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert len(aggregated) == 1
    assert set(aggregated[0]) == {a.id, *(t.id for t in again)}
    assert sorted(s["file"] for s in done.state_history["summary"]) == ["a", "b", "c"]


async def test_branch_exhausting_its_retries_quarantines_the_job() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated), JOB_MAX_RETRIES=1) as engine:
        job = await engine.create_job("files", {"files": ["a", "b"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        a, b = await take_all(worker, 2)
        await worker.answer(a, analyse(a))
        await worker.answer(b, failure("TRANSIENT_ERROR"))
        await worker.run_one(failure("TRANSIENT_ERROR"))
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert "retries exhausted" in (done.error or "")
    assert aggregated == []


async def test_invalid_input_branch_fails_the_job_and_withdraws_the_others() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        a, b = await take_all(worker, 2)  # c stays queued
        await worker.answer(a, failure("INVALID_INPUT_ERROR", "not a file"))
        await wait_for_status(engine, job.id, "failed")
        with pytest.raises(ResultRejected):
            await worker.answer(b, analyse(b))
        assert await worker.poll() is None  # c was withdrawn from its queue
        await assert_no_silent_stall(engine)
    assert aggregated == []


async def test_fan_out_to_a_non_aggregator_state_is_quarantined() -> None:
    bp = StateMachineBlueprint("bad_fanout")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        for n in range(2):
            context.actions.dispatch_task("file_analysis", {"n": n}, transitions={"success": "plain"})

    @bp.handler_for("plain", is_end=True)
    async def plain(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("bad_fanout")
        done = await wait_for_status(engine, job.id, "quarantined")
        assert (await engine.dashboard())["queues"] == {}  # nothing was dispatched
    assert "Blueprint 'bad_fanout', state 'split'" in (done.error or "")
    assert "aggregation state" in (done.error or "")


async def test_fan_out_to_different_states_is_quarantined() -> None:
    bp = StateMachineBlueprint("split_targets")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        context.actions.dispatch_task("file_analysis", {}, transitions={"success": "gather"})
        context.actions.dispatch_task("file_analysis", {}, transitions={"success": "done"})

    @bp.aggregator_for("gather")
    async def gather(context):
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("split_targets")
        result = await wait_for_status(engine, job.id, "quarantined")
    assert "one aggregation state" in (result.error or "")


async def test_dispatch_parallel_to_a_non_aggregator_state_is_quarantined() -> None:
    bp = StateMachineBlueprint("bad_parallel")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        context.actions.dispatch_parallel([{"task_type": "file_analysis"}], aggregate_into="done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("bad_parallel")
        result = await wait_for_status(engine, job.id, "quarantined")
    assert "'done' is not an aggregation state" in (result.error or "")


async def test_dispatch_parallel_to_an_unknown_state_is_quarantined_without_retries() -> None:
    bp = StateMachineBlueprint("unknown_parallel")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        context.actions.dispatch_parallel([{"task_type": "file_analysis"}], aggregate_into=context.initial_data["to"])

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    bp.transition("split", "done")
    async with started_engine(bp) as engine:
        job = await engine.create_job("unknown_parallel", {"to": "nowhere"})
        result = await wait_for_status(engine, job.id, "quarantined")
    assert "unknown state 'nowhere'" in (result.error or "")
    assert result.retry_count == 0


async def test_branch_taking_another_transition_withdraws_the_other_branches() -> None:
    bp = StateMachineBlueprint("escape")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        for n in range(3):
            context.actions.dispatch_task(
                "file_analysis", {"n": n}, transitions={"success": "gather", "skip": "skipped"}
            )

    @bp.aggregator_for("gather")
    async def gather(context):
        context.actions.transition_to("skipped")

    @bp.handler_for("skipped", is_end=True)
    async def skipped(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("escape")
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        first, second = await take_all(worker, 2)  # the third stays queued
        await worker.answer(first, {"status": "skip"})
        done = await wait_for_status(engine, job.id, "finished")
        assert done.state == "skipped"
        with pytest.raises(ResultRejected):
            await worker.answer(second, success())
        assert await worker.poll() is None
        assert sum((await engine.dashboard())["queues"].values()) == 0
        assert await engine.storage.worker_load() == {}
        await assert_no_silent_stall(engine)


async def test_cancel_during_fan_out_withdraws_every_branch() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        await wait_for_status(engine, job.id, "waiting_for_parallel_tasks")
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        taken = await worker.take()
        tasks_before = await engine.current_tasks(await wait_for_status(engine, job.id, "waiting_for_parallel_tasks"))
        await engine.cancel_job(job.id)
        assert await worker.poll() is None
        with pytest.raises(ResultRejected):
            await worker.answer(taken, analyse(taken))
        for task in tasks_before:
            stored = await engine.storage.get_task(task.id)
            assert stored is not None
            assert stored.status == TaskStatus.WITHDRAWN
    assert aggregated == []


async def test_second_fan_out_round_sees_only_its_own_results() -> None:
    aggregated: list[dict[str, Any]] = []
    bp = StateMachineBlueprint("rounds")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        size = 2 if not context.state_history.get("rounds") else 3
        context.actions.dispatch_parallel([{"task_type": "file_analysis", "params": {"file": "f"}}] * size, "gather")

    @bp.aggregator_for("gather")
    async def gather(context):
        aggregated.append(dict(context.aggregation_results))
        context.state_history["rounds"] = context.state_history.get("rounds", 0) + 1
        if context.state_history["rounds"] < 2:
            context.actions.transition_to("split")
        else:
            context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("rounds")
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        worker.serve(analyse)
        try:
            await wait_for_status(engine, job.id, "finished")
        finally:
            await worker.stop()
    assert [len(r) for r in aggregated] == [2, 3]
    assert not set(aggregated[0]) & set(aggregated[1])


async def test_empty_fan_out_is_quarantined_as_taking_no_action() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": []})
        done = await wait_for_status(engine, job.id, "quarantined")
    assert "took no action" in (done.error or "")


async def test_release_with_params_edits_only_the_failed_branch() -> None:
    aggregated: list[dict[str, Any]] = []
    async with started_engine(seed_fanout(aggregated)) as engine:
        job = await engine.create_job("files", {"files": ["a", "b", "c"]})
        worker = await FakeWorker(engine, "w1", ["file_analysis"]).register()
        _, b, _ = await take_all(worker, 3)
        await worker.answer(b, failure("PERMANENT_ERROR", "corrupted"))
        await wait_for_status(engine, job.id, "quarantined")
        await engine.release_job(job.id, params={"file": "b-repaired", "repair": True})
        again = sorted([await worker.take() for _ in range(3)], key=lambda t: t.params["file"])
        assert [t.params for t in again] == [{"file": "a"}, {"file": "b-repaired", "repair": True}, {"file": "c"}]
        for task in again:
            await worker.answer(task, analyse(task))
        done = await wait_for_status(engine, job.id, "finished")
    assert sorted(s["file"] for s in done.state_history["summary"]) == ["a", "b-repaired", "c"]
