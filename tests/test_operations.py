"""Operator and client actions: cancel, retry, release, fail, human approval, and sub-jobs."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from support.engine import (
    FakeWorker,
    assert_no_silent_stall,
    failure,
    started_engine,
    success,
    wait_for,
    wait_for_state,
    wait_for_status,
    waiting_tasks,
)

from avtomatika import StateMachineBlueprint
from avtomatika.errors import InvalidOperation, ResultRejected
from avtomatika.models import JobStatus, TaskStatus


def pipeline() -> StateMachineBlueprint:
    """prepare -> work (a task) -> end; prepare counts its runs in state_history."""
    bp = StateMachineBlueprint("pipeline")

    @bp.handler_for("prepare", is_start=True)
    async def prepare(context):
        context.state_history["prepared"] = context.state_history.get("prepared", 0) + 1
        context.actions.transition_to("work")

    @bp.handler_for("work")
    async def work(context):
        context.actions.dispatch_task("echo", {"n": 1}, transitions={"success": "end"})

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_waiting_job_withdraws_its_queued_task() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        waiting = await wait_for_status(engine, job.id, "waiting_for_worker")
        [task] = await engine.current_tasks(waiting)
        cancelled = await engine.cancel_job(job.id, actor="alice")
        assert cancelled.status == JobStatus.CANCELLED
        assert "alice" in (cancelled.error or "")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        assert await worker.poll(0.2) is None
        stored = await engine.storage.get_task(task.id)
        assert stored is not None
        assert stored.status == TaskStatus.WITHDRAWN
        assert sum((await engine.dashboard())["queues"].values()) == 0


async def test_cancel_withdraws_a_task_given_to_a_worker_inbox() -> None:
    async with started_engine(pipeline()) as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        job = await engine.create_job("pipeline")
        [task] = await engine.current_tasks(await wait_for_status(engine, job.id, "waiting_for_worker"))
        assert task.worker_id == "w1"
        await engine.cancel_job(job.id)
        assert await worker.poll(0.2) is None
        assert await engine.storage.worker_load() == {}


async def test_cancel_running_task_rejects_its_late_result() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        task = await worker.take()
        await engine.cancel_job(job.id)
        with pytest.raises(ResultRejected) as info:
            await worker.answer(task, success())
        assert info.value.status == 409
        assert await engine.storage.worker_load() == {}
        done = await engine.get_job(job.id)
    assert done is not None
    assert done.status == JobStatus.CANCELLED


async def test_cancel_during_a_retry_backoff_stops_the_retry() -> None:
    async with started_engine(pipeline(), RETRY_BACKOFF_BASE_SECONDS=0.2) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("TRANSIENT_ERROR"))
        await wait_for_status(engine, job.id, "awaiting_retry")
        await engine.cancel_job(job.id)
        assert await worker.poll(0.5) is None  # the backoff passed and nothing was queued
        done = await engine.get_job(job.id)
    assert done is not None
    assert done.status == JobStatus.CANCELLED


@pytest.mark.parametrize("status", ["finished", "failed", "cancelled"])
async def test_cancel_a_terminal_job_is_refused(status: str) -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        if status == "finished":
            worker = await FakeWorker(engine, "w1", ["echo"]).register()
            await worker.run_one(success())
        elif status == "failed":
            await wait_for_status(engine, job.id, "waiting_for_worker")
            await engine.fail_job(job.id)
        else:
            await engine.cancel_job(job.id)
        await wait_for_status(engine, job.id, status)
        with pytest.raises(InvalidOperation, match=f"cannot cancel a job that is {status}"):
            await engine.cancel_job(job.id)


async def test_cancel_a_quarantined_job_is_allowed() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("PERMANENT_ERROR"))
        await wait_for_status(engine, job.id, "quarantined")
        cancelled = await engine.cancel_job(job.id)
    assert cancelled.status == JobStatus.CANCELLED


# -- retry, release, fail ----------------------------------------------------------------------


async def test_retry_failed_job_from_its_state_dispatches_again() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("INVALID_INPUT_ERROR"))
        failed = await wait_for_status(engine, job.id, "failed")
        assert failed.state == "work"
        retried = await engine.retry_job(job.id, actor="bob")
        assert retried.state == "work"
        assert retried.error is None
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert done.state_history["prepared"] == 1  # prepare did not run again


async def test_retry_failed_job_from_an_earlier_state() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "garbage"})
        await wait_for_status(engine, job.id, "failed")
        await engine.retry_job(job.id, from_state="prepare")
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history["prepared"] == 2


async def test_retry_a_quarantined_job_runs_its_state_again() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("PERMANENT_ERROR"))
        await wait_for_status(engine, job.id, "quarantined")
        await engine.retry_job(job.id)
        task = await worker.take()
        assert task.params == {"n": 1}
        await worker.answer(task, success())
        await wait_for_status(engine, job.id, "finished")


async def test_retry_a_running_job_is_refused() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        await wait_for_status(engine, job.id, "waiting_for_worker")
        with pytest.raises(InvalidOperation, match="only failed, cancelled or quarantined"):
            await engine.retry_job(job.id)


async def test_retry_from_an_unknown_state_is_refused() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        await wait_for_status(engine, job.id, "waiting_for_worker")
        await engine.cancel_job(job.id)
        with pytest.raises(InvalidOperation, match="no state 'nowhere'"):
            await engine.retry_job(job.id, from_state="nowhere")


async def test_release_a_job_that_is_not_quarantined_is_refused() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        await wait_for_status(engine, job.id, "waiting_for_worker")
        with pytest.raises(InvalidOperation, match="only quarantined jobs can be released"):
            await engine.release_job(job.id)


async def test_fail_a_quarantined_job() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("PERMANENT_ERROR"))
        await wait_for_status(engine, job.id, "quarantined")
        failed = await engine.fail_job(job.id, actor="carol", reason="input is hopeless")
        assert failed.status == JobStatus.FAILED
        # The root cause stays beside the operator's reason.
        assert failed.error == "input is hopeless · root cause: PERMANENT_ERROR: boom"
        assert await engine.current_tasks(failed) == []
        with pytest.raises(InvalidOperation):
            await engine.release_job(job.id)


async def test_fail_a_finished_job_is_refused() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(success())
        await wait_for_status(engine, job.id, "finished")
        with pytest.raises(InvalidOperation, match="cannot fail a job that is finished"):
            await engine.fail_job(job.id)


# -- human approval ----------------------------------------------------------------------------


def approval() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("approval")

    @bp.handler_for("ask", is_start=True)
    async def ask(context):
        context.actions.await_human_approval(
            integration="slack",
            message=f"Publish {context.initial_data['title']}?",
            transitions={"approve": "publish", "reject": "discard"},
        )

    @bp.handler_for("publish", is_end=True)
    async def publish(context):
        context.state_history["published"] = True

    @bp.handler_for("discard", is_end=True)
    async def discard(context):
        context.state_history["published"] = False

    return bp


async def test_human_approval_waits_then_the_decision_picks_the_transition() -> None:
    async with started_engine(approval()) as engine:
        job = await engine.create_job("approval", {"title": "post"})
        waiting = await wait_for_status(engine, job.id, "waiting_for_human")
        assert waiting.wait is not None
        assert waiting.wait["message"] == "Publish post?"
        assert waiting.wait["integration"] == "slack"
        await assert_no_silent_stall(engine)
        await engine.decide(job.id, "approve", actor="dave")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state == "publish"
    assert done.state_history["published"] is True
    assert done.state_history["approval"] == {"decision": "approve", "actor": "dave"}


async def test_human_rejection_takes_its_transition() -> None:
    async with started_engine(approval()) as engine:
        job = await engine.create_job("approval", {"title": "post"})
        await wait_for_status(engine, job.id, "waiting_for_human")
        await engine.decide(job.id, "reject")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state == "discard"


async def test_unknown_decision_is_refused_and_the_job_keeps_waiting() -> None:
    async with started_engine(approval()) as engine:
        job = await engine.create_job("approval", {"title": "post"})
        await wait_for_status(engine, job.id, "waiting_for_human")
        with pytest.raises(InvalidOperation, match="unknown decision 'maybe'; expected one of: approve, reject"):
            await engine.decide(job.id, "maybe")
        still = await engine.get_job(job.id)
        assert still is not None
        assert still.status == JobStatus.WAITING_FOR_HUMAN


async def test_decision_for_a_job_not_waiting_for_approval_is_refused() -> None:
    async with started_engine(approval()) as engine:
        job = await engine.create_job("approval", {"title": "post"})
        await wait_for_status(engine, job.id, "waiting_for_human")
        await engine.decide(job.id, "approve")
        await wait_for_status(engine, job.id, "finished")
        with pytest.raises(InvalidOperation, match="not waiting for approval"):
            await engine.decide(job.id, "approve")


# -- sub-jobs ----------------------------------------------------------------------------------


class ChildInput(BaseModel):
    x: int


def parent_and_child() -> tuple[StateMachineBlueprint, StateMachineBlueprint]:
    parent = StateMachineBlueprint("parent")

    @parent.handler_for("start", is_start=True)
    async def start(context):
        context.actions.run_blueprint(
            "child", {"x": context.initial_data["x"]}, transitions={"success": "ok", "failure": "ko"}
        )

    @parent.handler_for("ok", is_end=True)
    async def ok(context):
        context.state_history["outcome"] = "ok"

    @parent.handler_for("ko", is_end=True)
    async def ko(context):
        context.state_history["outcome"] = "ko"

    child = StateMachineBlueprint("child", input_model=ChildInput)

    @child.handler_for("work", is_start=True)
    async def work(context):
        context.actions.dispatch_task("child_work", {"x": context.initial_data.x}, transitions={"success": "done"})

    @child.handler_for("done", is_end=True)
    async def done(context):
        pass

    return parent, child


async def child_of(engine, parent_id: str):
    parent = await wait_for_status(engine, parent_id, "waiting_for_sub_job")
    assert parent.wait is not None
    child = await engine.get_job(parent.wait["child_job_id"])
    assert child is not None
    assert child.parent_job_id == parent_id
    return child


async def test_child_job_finished_resumes_the_parent_with_success() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        child = await child_of(engine, parent.id)
        assert child.initial_data == {"x": 3}
        await assert_no_silent_stall(engine)
        worker = await FakeWorker(engine, "w1", ["child_work"]).register()
        await worker.run_one(lambda task: success({"doubled": task.params["x"] * 2}))
        await wait_for_status(engine, child.id, "finished")
        done = await wait_for_status(engine, parent.id, "finished")
    assert done.state == "ok"
    assert done.state_history["sub_job"]["status"] == "finished"
    assert done.state_history["sub_job"]["state_history"] == {"doubled": 6}


async def test_child_job_failed_resumes_the_parent_with_failure() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        await child_of(engine, parent.id)
        worker = await FakeWorker(engine, "w1", ["child_work"]).register()
        await worker.run_one(failure("INVALID_INPUT_ERROR", "x is odd"))
        done = await wait_for_status(engine, parent.id, "finished")
    assert done.state == "ko"
    assert done.state_history["sub_job"]["status"] == "failed"
    assert "x is odd" in done.state_history["sub_job"]["error"]


async def test_child_job_cancelled_resumes_the_parent_with_failure() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        child = await child_of(engine, parent.id)
        await engine.cancel_job(child.id)
        done = await wait_for_status(engine, parent.id, "finished")
    assert done.state == "ko"


async def test_quarantined_child_keeps_the_parent_waiting_until_it_ends() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        child = await child_of(engine, parent.id)
        worker = await FakeWorker(engine, "w1", ["child_work"]).register()
        await worker.run_one(failure("PERMANENT_ERROR"))
        await wait_for_status(engine, child.id, "quarantined")
        still = await engine.get_job(parent.id)
        assert still is not None
        assert still.status == JobStatus.WAITING_FOR_SUB_JOB
        await assert_no_silent_stall(engine)
        await engine.release_job(child.id)
        await worker.run_one(success())
        done = await wait_for_status(engine, parent.id, "finished")
    assert done.state == "ok"


async def test_cancel_parent_cancels_its_child() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        child = await child_of(engine, parent.id)
        await engine.cancel_job(parent.id)
        cancelled_child = await wait_for_status(engine, child.id, "cancelled")
        worker = await FakeWorker(engine, "w1", ["child_work"]).register()
        assert await worker.poll(0.2) is None
        parent_now = await engine.get_job(parent.id)
    assert parent_now is not None
    assert parent_now.status == JobStatus.CANCELLED
    assert "parent job" in (cancelled_child.error or "")


async def test_failing_the_parent_cancels_its_child() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": 3})
        child = await child_of(engine, parent.id)
        await engine.fail_job(parent.id, reason="no longer needed")
        await wait_for_status(engine, child.id, "cancelled")
        parent_now = await engine.get_job(parent.id)
    assert parent_now is not None
    assert parent_now.status == JobStatus.FAILED


async def test_run_blueprint_with_child_input_its_model_refuses_is_quarantined() -> None:
    async with started_engine(*parent_and_child()) as engine:
        parent = await engine.create_job("parent", {"x": "not a number"})
        done = await wait_for_status(engine, parent.id, "quarantined")
        await assert_no_silent_stall(engine)
        assert [j.blueprint for j in await engine.list_jobs()] == ["parent"]
    assert "Blueprint 'parent', state 'start'" in (done.error or "")
    assert "child" in (done.error or "")


async def test_run_blueprint_of_an_unknown_blueprint_is_quarantined() -> None:
    bp = StateMachineBlueprint("orphan_parent")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.run_blueprint("nobody", {}, transitions={"success": "end", "failure": "end"})

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("orphan_parent")
        done = await wait_for_status(engine, job.id, "quarantined")
    assert "unknown blueprint 'nobody'" in (done.error or "")


# -- listing -----------------------------------------------------------------------------------


async def test_list_jobs_filters_by_status_and_blueprint() -> None:
    async with started_engine(pipeline(), approval()) as engine:
        waiting = await engine.create_job("pipeline")
        human = await engine.create_job("approval", {"title": "t"})
        await wait_for_status(engine, waiting.id, "waiting_for_worker")
        await wait_for_status(engine, human.id, "waiting_for_human")
        await engine.cancel_job(waiting.id)
        assert [j.id for j in await engine.list_jobs(status="cancelled")] == [waiting.id]
        assert [j.id for j in await engine.list_jobs(blueprint="approval")] == [human.id]
        assert [j.id for j in await engine.list_jobs()] == [human.id, waiting.id]  # newest first
        dashboard = await engine.dashboard()
    assert dashboard["jobs"]["by_status"] == {"cancelled": 1, "waiting_for_human": 1}


async def test_current_tasks_of_a_waiting_job() -> None:
    async with started_engine(pipeline()) as engine:
        job = await engine.create_job("pipeline")
        await wait_for_state(engine, job.id, "work", "waiting_for_worker")

        async def one_task() -> bool:
            return len(await waiting_tasks(engine, job.id)) == 1

        await wait_for(one_task, "one waiting task")


# -- operations while a handler runs -----------------------------------------------------------


def slow_start(gate: asyncio.Event, calls: dict[str, int]) -> StateMachineBlueprint:
    bp = StateMachineBlueprint("slow")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        calls["start"] = calls.get("start", 0) + 1
        await gate.wait()
        context.actions.transition_to("next")

    @bp.handler_for("next")
    async def next_step(context):
        calls["next"] = calls.get("next", 0) + 1
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        calls["end"] = calls.get("end", 0) + 1

    return bp


async def test_cancel_while_the_handler_runs_discards_its_action() -> None:
    gate = asyncio.Event()
    calls: dict[str, int] = {}
    async with started_engine(slow_start(gate, calls)) as engine:
        job = await engine.create_job("slow")
        await wait_for(lambda: _true(calls.get("start")), "the start handler to begin")
        await engine.cancel_job(job.id)
        gate.set()
        await asyncio.sleep(0.1)  # let the handler finish; nothing should follow from it
        done = await engine.get_job(job.id)
    assert done is not None
    assert done.status == JobStatus.CANCELLED
    assert done.state == "start"
    assert calls == {"start": 1}


async def test_cancel_then_retry_while_the_old_handler_runs_steps_the_job_once() -> None:
    gate = asyncio.Event()
    calls: dict[str, int] = {}
    async with started_engine(slow_start(gate, calls)) as engine:
        job = await engine.create_job("slow")
        await wait_for(lambda: _true(calls.get("start")), "the start handler to begin")
        await engine.cancel_job(job.id)
        await engine.retry_job(job.id)
        await asyncio.sleep(0.05)
        assert calls == {"start": 1}  # the retry waits for the old handler to end
        gate.set()
        await wait_for_status(engine, job.id, "finished")
        await asyncio.sleep(0.1)  # a second stepper, if any, would run the handlers again now
    assert calls == {"start": 2, "next": 1, "end": 1}


async def _true(value: object) -> bool:
    return bool(value)


async def test_cancel_then_retry_of_a_pending_job_runs_its_handler_once() -> None:
    calls: list[str] = []
    bp = StateMachineBlueprint("counted")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        calls.append(context.job_id)
        await asyncio.sleep(0.01)
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("counted")
        await engine.cancel_job(job.id)
        await engine.retry_job(job.id)
        await wait_for_status(engine, job.id, "finished")
        await asyncio.sleep(0.1)
    assert calls == [job.id]
