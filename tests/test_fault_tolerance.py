"""PROTOCOL.md "Results and failures": every status and error code, stale and foreign results,
timeouts, lost workers and missing workers, driven in-process."""

from __future__ import annotations

import asyncio
import random

import pytest
from support.blueprints import plain_blueprint
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
from avtomatika.errors import ResultRejected, WorkerNotFound
from avtomatika.models import JobStatus, TaskStatus


def full_blueprint() -> StateMachineBlueprint:
    """start dispatches one `echo` task declaring success, failure, cancelled and a custom status."""
    bp = StateMachineBlueprint("full")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_task(
            "echo",
            params={"n": 1},
            transitions={
                "success": "end",
                "failure": "failed_step",
                "cancelled": "cancelled_step",
                "needs_review": "review",
            },
        )

    @bp.handler_for("failed_step", is_end=True)
    async def failed_step(context):
        context.state_history["took"] = "failure"

    @bp.handler_for("cancelled_step", is_end=True)
    async def cancelled_step(context):
        context.state_history["took"] = "cancelled"

    @bp.handler_for("review", is_end=True)
    async def review(context):
        context.state_history["took"] = "review"

    @bp.handler_for("end", is_end=True)
    async def end(context):
        context.state_history["took"] = "success"

    return bp


def two_task_blueprint() -> StateMachineBlueprint:
    """Two tasks one after the other, so a job is still waiting after the first answer."""
    bp = StateMachineBlueprint("two_tasks")

    @bp.handler_for("first", is_start=True)
    async def first(context):
        context.actions.dispatch_task("echo", {"step": 1}, transitions={"success": "second"})

    @bp.handler_for("second")
    async def second(context):
        context.actions.dispatch_task("echo", {"step": 2}, transitions={"success": "end"})

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


# -- answers -----------------------------------------------------------------------------------


async def test_success_merges_data_and_moves_to_the_success_state() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain", {"text": "hi"})
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        task = await worker.take()
        assert (task.job_id, task.type, task.params) == (job.id, "echo", {"text": "hi"})
        ack = await worker.answer(task, success({"echoed": "hi"}))
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert ack == "result_accepted_success"
    assert done.state_history == {"echoed": "hi"}
    assert done.retry_count == 0


async def test_job_waits_for_worker_while_its_task_is_out() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        waiting = await wait_for_status(engine, job.id, "waiting_for_worker")
        [task] = await engine.current_tasks(waiting)
        assert task.status == TaskStatus.QUEUED
        await assert_no_silent_stall(engine)


async def test_transient_twice_then_success_finishes_with_retry_count_2() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        first = await worker.run_one(failure("TRANSIENT_ERROR", "rate limited"))
        second = await worker.run_one(failure("TRANSIENT_ERROR", "rate limited"))
        third = await worker.run_one(success({"ok": True}))
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert [first.attempt, second.attempt, third.attempt] == [1, 2, 3]
    assert len({first.id, second.id, third.id}) == 3
    assert done.retry_count == 2
    assert done.state_history == {"ok": True}
    assert done.error is None


async def test_failure_without_an_error_code_is_retried_as_transient() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "failure"})
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
    assert done.retry_count == 1


async def test_job_awaiting_a_task_retry_is_not_stalled() -> None:
    async with started_engine(plain_blueprint(), RETRY_BACKOFF_BASE_SECONDS=30) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("TRANSIENT_ERROR"))
        waiting = await wait_for_status(engine, job.id, "awaiting_retry")
        [retry] = await engine.current_tasks(waiting)
        assert retry.status == TaskStatus.RETRY_SCHEDULED
        assert retry.attempt == 2
        await assert_no_silent_stall(engine)


async def test_transient_beyond_max_retries_takes_the_failure_transition() -> None:
    async with started_engine(full_blueprint(), JOB_MAX_RETRIES=2) as engine:
        job = await engine.create_job("full")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        for _ in range(3):  # the first attempt and two retries
            await worker.run_one(failure("TRANSIENT_ERROR", "flaky network"))
        done = await wait_for_status(engine, job.id, "finished")
        assert await worker.poll() is None
        await assert_no_silent_stall(engine)
    assert done.state == "failed_step"
    assert done.state_history == {"took": "failure"}
    assert done.retry_count == 2


async def test_transient_beyond_max_retries_without_failure_transition_is_quarantined() -> None:
    async with started_engine(plain_blueprint(), JOB_MAX_RETRIES=2) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        for _ in range(3):
            await worker.run_one(failure("TRANSIENT_ERROR", "flaky network"))
        done = await wait_for_status(engine, job.id, "quarantined")
        held = await engine.current_tasks(done)
        await assert_no_silent_stall(engine)
    assert "retries exhausted" in (done.error or "")
    assert "flaky network" in (done.error or "")
    assert [t.type for t in held] == ["echo"]


async def test_zero_max_retries_means_no_retry() -> None:
    async with started_engine(plain_blueprint(), JOB_MAX_RETRIES=0) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("TRANSIENT_ERROR"))
        done = await wait_for_status(engine, job.id, "quarantined")
    assert done.retry_count == 0


async def test_permanent_error_quarantines_then_release_with_edited_params_finishes() -> None:
    async with started_engine(full_blueprint()) as engine:
        job = await engine.create_job("full")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("PERMANENT_ERROR", "corrupted file"))
        quarantined = await wait_for_status(engine, job.id, "quarantined")
        assert "PERMANENT_ERROR: corrupted file" in (quarantined.error or "")
        assert [t.params for t in await engine.current_tasks(quarantined)] == [{"n": 1}]
        assert await worker.poll() is None  # nothing is dispatched while quarantined
        await assert_no_silent_stall(engine)

        released = await engine.release_job(job.id, params={"quality": "low"})
        assert released.status == JobStatus.WAITING_FOR_WORKER
        assert released.error is None
        task = await worker.take()
        assert task.params == {"n": 1, "quality": "low"}
        await worker.answer(task, success())
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert done.state == "end"


async def test_permanent_error_release_without_params_dispatches_the_same_params() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain", {"file": "a.mp4"})
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("PERMANENT_ERROR"))
        await wait_for_status(engine, job.id, "quarantined")
        await engine.release_job(job.id)
        task = await worker.take()
        assert task.params == {"file": "a.mp4"}
        assert task.attempt == 1


async def test_invalid_input_error_fails_the_job_even_with_a_failure_transition() -> None:
    async with started_engine(full_blueprint()) as engine:
        job = await engine.create_job("full")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("INVALID_INPUT_ERROR", "not a video"))
        done = await wait_for_status(engine, job.id, "failed")
        await assert_no_silent_stall(engine)
    assert done.state == "start"
    assert "INVALID_INPUT_ERROR" in (done.error or "")
    assert "not a video" in (done.error or "")


async def test_unknown_status_fails_the_job_naming_it() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "exploded"})
        done = await wait_for_status(engine, job.id, "failed")
    assert done.error == "Worker returned unhandled status: exploded"


async def test_custom_status_in_transitions_moves_there() -> None:
    async with started_engine(full_blueprint()) as engine:
        job = await engine.create_job("full")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        ack = await worker.answer(await worker.take(), {"status": "needs_review", "data": {"score": 0.4}})
        done = await wait_for_status(engine, job.id, "finished")
    assert ack == "result_accepted_needs_review"
    assert done.state == "review"
    assert done.state_history == {"score": 0.4, "took": "review"}


async def test_cancelled_without_transition_cancels_the_job() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "cancelled"})
        await wait_for_status(engine, job.id, "cancelled")
        await assert_no_silent_stall(engine)


async def test_cancelled_with_a_declared_transition_takes_it() -> None:
    async with started_engine(full_blueprint()) as engine:
        job = await engine.create_job("full")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "cancelled"})
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state == "cancelled_step"


# -- which results are accepted ----------------------------------------------------------------


async def test_duplicate_result_is_acknowledged_and_changes_nothing() -> None:
    async with started_engine(two_task_blueprint()) as engine:
        job = await engine.create_job("two_tasks")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        first = await worker.take()
        await worker.answer(first, success({"a": 1}))
        second = await worker.take()
        before = await engine.get_job(job.id)
        assert before is not None
        assert before.state == "second"
        ack = await worker.answer(first, success({"a": "changed", "b": 2}))
        after = await engine.get_job(job.id)
        assert ack == "result_accepted_duplicate"
        assert after == before
        await worker.answer(second, success())
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"a": 1}


async def test_duplicate_of_the_last_result_leaves_the_finished_job_alone() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        task = await worker.take()
        await worker.answer(task, success({"v": 1}))
        done = await wait_for_status(engine, job.id, "finished")
        assert await worker.answer(task, {"status": "failure", "error": {"code": "PERMANENT_ERROR"}}) == (
            "result_accepted_duplicate"
        )
        assert await engine.get_job(job.id) == done


async def test_stale_result_after_a_timeout_redispatch_is_rejected_409() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain", {"timeout": 0.2})
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        stale = await worker.take()
        retry = await worker.take()  # re-dispatched once the first timed out
        assert retry.id != stale.id
        assert retry.attempt == 2
        with pytest.raises(ResultRejected) as info:
            await worker.answer(stale, success({"late": True}))
        assert info.value.status == 409
        await worker.answer(retry, success({"fresh": True}))
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"fresh": True}
    assert done.retry_count == 1


async def test_late_result_cannot_revive_a_failed_job() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        task = await worker.take()
        await engine.fail_job(job.id, reason="operator gave up")
        with pytest.raises(ResultRejected) as info:
            await worker.answer(task, success())
        assert info.value.status == 409
        job_now = await engine.get_job(job.id)
    assert job_now is not None
    assert job_now.status == JobStatus.FAILED


async def test_result_from_another_worker_is_rejected_403() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        owner = await FakeWorker(engine, "owner", ["echo"]).register()
        task = await owner.take()
        intruder = await FakeWorker(engine, "intruder", ["echo"]).register()
        with pytest.raises(ResultRejected) as info:
            await intruder.answer(task, success())
        assert info.value.status == 403
        await owner.answer(task, success())
        await wait_for_status(engine, job.id, "finished")


async def test_result_for_an_unknown_task_is_rejected_404() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        await wait_for_status(engine, job.id, "waiting_for_worker")
        with pytest.raises(ResultRejected) as info:
            await engine.submit_result(job.id, "no-such-task", "w1", success())
        assert info.value.status == 404


async def test_result_for_a_task_not_yet_taken_is_rejected() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain")
        await FakeWorker(engine, "w1", ["echo"]).register()
        waiting = await wait_for_status(engine, job.id, "waiting_for_worker")
        [task] = await engine.current_tasks(waiting)
        with pytest.raises(ResultRejected):
            await engine.submit_result(job.id, task.id, "w1", success())


# -- timeouts and lost workers -----------------------------------------------------------------


async def test_task_timeout_is_treated_as_transient_and_the_job_finishes() -> None:
    async with started_engine(plain_blueprint()) as engine:
        job = await engine.create_job("plain", {"timeout": 0.2})
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.take()  # never answered
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
    assert done.retry_count == 1


async def test_task_timing_out_every_time_ends_in_quarantine() -> None:
    async with started_engine(plain_blueprint(), JOB_MAX_RETRIES=1) as engine:
        job = await engine.create_job("plain", {"timeout": 0.1})
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.take()
        await worker.take()
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert "retries exhausted" in (done.error or "")
    assert "no result from worker 'w1'" in (done.error or "")


async def test_default_worker_timeout_applies_without_timeout_seconds() -> None:
    async with started_engine(plain_blueprint(), WORKER_TIMEOUT_SECONDS=0.2) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.take()
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
    assert done.retry_count == 1


async def test_expired_worker_has_its_running_task_redispatched() -> None:
    async with started_engine(plain_blueprint(), WORKER_HEALTH_CHECK_INTERVAL_SECONDS=0.2) as engine:
        job = await engine.create_job("plain", {"n": 1})
        async with FakeWorker(engine, "doomed", ["echo"]) as doomed:
            lost = await doomed.take()  # then it never heartbeats again
        async with FakeWorker(engine, "healthy", ["echo"]).keep_alive(0.05) as healthy:
            task = await healthy.take()
            assert task.id != lost.id
            assert task.params == {"n": 1}
            await healthy.answer(task, success())
            done = await wait_for_status(engine, job.id, "finished")
            await assert_no_silent_stall(engine)
        with pytest.raises(WorkerNotFound):
            await engine.heartbeat("doomed", {})
        with pytest.raises(ResultRejected):
            await engine.submit_result(job.id, lost.id, "doomed", success())
    assert done.retry_count == 1


async def test_expired_worker_has_the_tasks_given_to_it_but_not_taken_queued_again() -> None:
    async with started_engine(plain_blueprint(), WORKER_HEALTH_CHECK_INTERVAL_SECONDS=0.2) as engine:
        await FakeWorker(engine, "doomed", ["echo"]).register()
        job = await engine.create_job("plain")
        waiting = await wait_for_status(engine, job.id, "waiting_for_worker")
        [given] = await engine.current_tasks(waiting)
        assert given.worker_id == "doomed"  # it was free, so the task went to its inbox

        async def requeued() -> bool:
            [task] = await waiting_tasks(engine, job.id)
            return task.worker_id is None

        await wait_for(requeued, "the task to leave the expired worker's inbox")
        await assert_no_silent_stall(engine)
        async with FakeWorker(engine, "healthy", ["echo"]).keep_alive(0.05) as healthy:
            await healthy.run_one(success())
            done = await wait_for_status(engine, job.id, "finished")
    assert done.retry_count == 0  # never attempted, so not a retry


async def test_heartbeat_keeps_a_worker_alive_past_its_ttl() -> None:
    async with (
        started_engine(plain_blueprint(), WORKER_HEALTH_CHECK_INTERVAL_SECONDS=0.1) as engine,
        FakeWorker(engine, "steady", ["echo"]).keep_alive(0.03) as worker,
    ):
        job = await engine.create_job("plain")
        await wait_for_status(engine, job.id, "waiting_for_worker")
        await asyncio.sleep(0.6)  # three TTLs of 0.2 s
        await worker.run_one(success())
        await wait_for_status(engine, job.id, "finished")


async def test_unknown_worker_cannot_poll_or_heartbeat() -> None:
    async with started_engine(plain_blueprint()) as engine:
        with pytest.raises(WorkerNotFound):
            await engine.next_task("ghost", 0)
        with pytest.raises(WorkerNotFound):
            await engine.heartbeat("ghost", {"load": 1})


# -- no worker ---------------------------------------------------------------------------------


async def test_task_with_no_capable_worker_waits_and_proceeds_when_one_registers() -> None:
    async with started_engine(plain_blueprint()) as engine:
        other = await FakeWorker(engine, "other", ["resize"]).register()
        job = await engine.create_job("plain", {"x": 1})
        await wait_for_status(engine, job.id, "waiting_for_worker")
        assert await other.poll(0.2) is None
        still = await engine.get_job(job.id)
        assert still is not None
        assert still.status == JobStatus.WAITING_FOR_WORKER
        assert (await engine.dashboard())["queues"] == {"echo": 1}
        await assert_no_silent_stall(engine)

        late = await FakeWorker(engine, "late", ["echo"]).register()
        await late.run_one(success())
        await wait_for_status(engine, job.id, "finished")


async def test_worker_polling_before_a_task_exists_gets_it_when_dispatched() -> None:
    async with started_engine(plain_blueprint()) as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        worker.serve(success({"served": True}))
        try:
            job = await engine.create_job("plain")
            done = await wait_for_status(engine, job.id, "finished")
        finally:
            await worker.stop()
    assert done.state_history == {"served": True}


async def test_job_proceeds_state_by_state_with_a_serving_worker() -> None:
    async with started_engine(two_task_blueprint()) as engine:
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        worker.serve(lambda task: success({f"step{task.params['step']}": True}))
        try:
            jobs = [await engine.create_job("two_tasks") for _ in range(10)]
            for job in jobs:
                done = await wait_for_status(engine, job.id, "finished")
                assert done.state_history == {"step1": True, "step2": True}
            await assert_no_silent_stall(engine)
        finally:
            await worker.stop()
    assert len(worker.taken) == 20


async def test_waiting_job_state_is_visible() -> None:
    async with started_engine(two_task_blueprint()) as engine:
        job = await engine.create_job("two_tasks")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(success())
        waiting = await wait_for_state(engine, job.id, "second", "waiting_for_worker")
        [task] = await engine.current_tasks(waiting)
        assert task.params == {"step": 2}


# -- everything at once ------------------------------------------------------------------------


def mixed_blueprint() -> StateMachineBlueprint:
    """A single task, then a fan-out of three, then the end."""
    bp = StateMachineBlueprint("mixed")

    @bp.handler_for("single", is_start=True)
    async def single(context):
        context.actions.dispatch_task("echo", {"step": "single"}, transitions={"success": "fan"}, timeout_seconds=0.3)

    @bp.handler_for("fan")
    async def fan(context):
        for n in range(3):
            context.actions.dispatch_task(
                "echo", {"step": "fan", "n": n}, transitions={"success": "gather"}, timeout_seconds=0.3
            )

    @bp.aggregator_for("gather")
    async def gather(context):
        context.state_history["branches"] = len(context.aggregation_results)
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def test_many_jobs_with_flaky_workers_all_end_and_leave_nothing_behind() -> None:
    rng = random.Random(1234)

    def flaky(task):
        roll = rng.random()
        if task.attempt < 3 and roll < 0.25:
            return failure("TRANSIENT_ERROR", "flaky")
        if task.attempt < 3 and roll < 0.35:
            return None  # never answered: the task times out
        return success({"by": task.worker_id})

    async with started_engine(mixed_blueprint(), JOB_MAX_RETRIES=5) as engine:
        workers = [FakeWorker(engine, f"w{i}", ["echo"], max_concurrent_tasks=2) for i in range(3)]
        for worker in workers:
            await worker.register()
            worker.serve(flaky)
        try:
            jobs = [await engine.create_job("mixed") for _ in range(25)]
            for job in jobs:
                done = await wait_for_status(engine, job.id, ["finished", "quarantined", "failed"], timeout_s=60)
                assert done.status == JobStatus.FINISHED, done.error
                assert done.state_history["branches"] == 3
            await assert_no_silent_stall(engine)
        finally:
            for worker in workers:
                await worker.stop()

        async def drained() -> bool:
            return await engine.storage.worker_load() == {}

        await wait_for(drained, "every worker's load to be released")
        assert sum((await engine.dashboard())["queues"].values()) == 0


async def test_failure_with_a_plain_string_error_keeps_its_message() -> None:
    async with started_engine(plain_blueprint(), JOB_MAX_RETRIES=0) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one({"status": "failure", "error": "disk full"})
        done = await wait_for_status(engine, job.id, "quarantined")
    assert "disk full" in (done.error or "")


async def test_transient_retry_without_backoff_still_finishes() -> None:
    async with started_engine(plain_blueprint(), RETRY_BACKOFF_BASE_SECONDS=0) as engine:
        job = await engine.create_job("plain")
        worker = await FakeWorker(engine, "w1", ["echo"]).register()
        await worker.run_one(failure("TRANSIENT_ERROR"))
        await worker.run_one(success())
        done = await wait_for_status(engine, job.id, "finished")
    assert done.retry_count == 1
