"""What a commit guarantees, in one process (MemoryStorage): fan-in exactly once whatever races a
branch, a result taken once, a retry that comes due with a quarantine or a cancel queues nothing,
follow-ups (timers due at once) carried out even when their handler fails once, a worker that does
not read its WebSocket holds nothing up, and nothing of it in history twice.

The same properties across engine processes on Redis, with SIGKILL at every write, are in
``tests/test_crash_points.py`` and ``tests/test_fan_in_races.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from support.blueprints import branches_blueprint, plain_blueprint
from support.engine import (
    FakeWorker,
    assert_no_silent_stall,
    failure,
    started_engine,
    success,
    wait_for,
    wait_for_status,
)

from avtomatika import StateMachineBlueprint
from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import ResultRejected
from avtomatika.models import JobStatus, Task, TaskStatus
from avtomatika.runtime import runner
from avtomatika.runtime.scheduler import Scheduler
from avtomatika.timers import TimerKind


async def history_problems(engine: OrchestratorEngine, job_id: str) -> list[str]:
    assert engine.history_writer is not None
    await engine.history_writer.flush()
    assert engine.history is not None
    timeline = await engine.history.timeline(job_id)
    problems = []
    for kind in ("task_result", "task_dispatched"):
        twice = [t for t, n in Counter(e.data.get("task_id") for e in timeline if e.kind == kind).items() if n > 1]
        if twice:
            problems.append(f"{kind} twice for {twice}")
    return problems


# -- fan-in exactly once ----------------------------------------------------------------------------
async def test_branch_results_racing_their_timeouts_count_once_each() -> None:
    """Each branch is answered in the same instant its timeout fires: whichever lands first wins, the
    other changes nothing, and every aggregator gets exactly one result per branch."""
    rng = random.Random(7)
    async with started_engine(branches_blueprint(), JOB_MAX_RETRIES=10) as engine:
        worker = await FakeWorker(engine, "w1").register()
        jobs = [await engine.create_job("branches", {"n": 4}) for _ in range(10)]
        answered = Counter()
        for _ in range(40):
            task = await worker.take()
            racers = [worker.answer(task, success({"branch": task.params["branch"]}))]
            racers.insert(rng.randrange(2), engine.results.task_timed_out(task.id))
            outcomes = await asyncio.gather(*racers, return_exceptions=True)
            answered.update(type(o).__name__ if isinstance(o, Exception) else str(o) for o in outcomes)
        worker.serve(lambda task: success({"branch": task.params["branch"]}))  # the retries
        for job in jobs:
            done = await wait_for_status(engine, job.id, "finished")
            assert done.state_history["got"] == [0, 1, 2, 3]
            assert await history_problems(engine, job.id) == []
        await assert_no_silent_stall(engine)
    assert answered["ResultRejected"] + answered["result_accepted_success"] == 40  # both outcomes happened
    assert answered["ResultRejected"] > 0
    assert answered["result_accepted_success"] > 0


async def test_a_branch_result_after_a_cancel_changes_nothing() -> None:
    async with started_engine(branches_blueprint(timeout_s=30)) as engine:
        worker = await FakeWorker(engine, "w1").register()
        job = await engine.create_job("branches", {"n": 2})
        first, second = await worker.take(), await worker.take()
        assert await worker.answer(first, success({"branch": 0})) == "result_accepted_success"
        await engine.cancel_job(job.id)
        with pytest.raises(ResultRejected):
            await worker.answer(second, success({"branch": 1}))
        cancelled = await wait_for_status(engine, job.id, "cancelled")
        assert "got" not in cancelled.state_history
        stored = [await engine.storage.get_task(t.id) for t in (first, second)]
        assert [t.status for t in stored if t is not None] == [TaskStatus.DONE, TaskStatus.WITHDRAWN]


# -- a cancel during a run of inline handlers ---------------------------------------------------------
def _paused_chain(ran: list[str], paused: asyncio.Event, go: asyncio.Event) -> StateMachineBlueprint:
    """start -> slow -> after -> done, all inline; ``slow`` waits for ``go`` after setting ``paused``."""
    bp = StateMachineBlueprint("paused_chain")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("slow")

    @bp.handler_for("slow")
    async def slow(context):
        paused.set()
        await go.wait()
        context.actions.transition_to("after")

    @bp.handler_for("after")
    async def after(context):
        ran.append(context.job_id)
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        ran.append("done")

    return bp


def _run_over(engine: OrchestratorEngine, job_id: str) -> Any:
    async def over() -> bool:
        return job_id not in engine.runner._stepping  # test-only: the runner's own set

    return over


@pytest.mark.parametrize("recheck_after_s", [0.0, 3600.0])
async def test_a_job_cancelled_while_its_handler_runs_stays_cancelled(
    recheck_after_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while ``slow`` runs: with the run long enough to read the job's version again, no
    further handler runs; with a run too short for it, ``after`` runs but the commit ending the run
    fails its version check, so nothing of the run is kept. Either way the job stays cancelled where
    it was last committed (``start``: the run's moves are committed with its end), and history shows
    no state entered."""
    monkeypatch.setattr(runner, "RECHECK_AFTER_S", recheck_after_s)
    ran: list[str] = []
    paused, go = asyncio.Event(), asyncio.Event()
    async with started_engine(_paused_chain(ran, paused, go)) as engine:
        job = await engine.create_job("paused_chain", {})
        await asyncio.wait_for(paused.wait(), 10)
        await engine.cancel_job(job.id)
        go.set()
        await wait_for(_run_over(engine, job.id), "the run of handlers to end")
        cancelled = await engine.get_job(job.id)
        assert cancelled is not None
        assert (cancelled.status, cancelled.state) == ("cancelled", "start")  # start -> slow was not committed
        assert ran == ([] if recheck_after_s == 0.0 else [job.id, "done"])
        assert engine.history_writer is not None
        await engine.history_writer.flush()
        assert engine.history is not None
        entered = [line.state for line in await engine.history.timeline(job.id) if line.kind == "state_entered"]
        assert entered == []


# -- a result taken once ----------------------------------------------------------------------------
@pytest.mark.parametrize("blueprint", ["plain", "branches"])
async def test_the_same_result_posted_twice_at_once_is_taken_once(blueprint: str) -> None:
    async with started_engine(plain_blueprint(), branches_blueprint(timeout_s=30)) as engine:
        worker = await FakeWorker(engine, "w1").register()
        job = await engine.create_job(blueprint, {"n": 1})
        task = await worker.take()
        result = success({"branch": 0})
        answers = await asyncio.gather(*(worker.answer(task, result) for _ in range(2)))
        assert sorted(answers) == ["result_accepted_duplicate", "result_accepted_success"]
        await wait_for_status(engine, job.id, "finished")
        assert await history_problems(engine, job.id) == []


# -- a retry coming due with a quarantine or a cancel -------------------------------------------------
async def _retry_scheduled(engine: OrchestratorEngine, blueprint: str) -> tuple[str, Task]:
    """A job whose (first) task failed transiently: its retry waits for its backoff."""
    worker = FakeWorker(engine, "w1")
    await worker.register()
    job = await engine.create_job(blueprint, {"n": 2})
    task = await worker.take()
    await worker.answer(task, failure("TRANSIENT_ERROR"))
    waiting = await engine.get_job(job.id)
    assert waiting is not None
    retries = [t for t in await engine.current_tasks(waiting) if t.status == TaskStatus.RETRY_SCHEDULED]
    assert len(retries) == 1
    return job.id, retries[0]


@pytest.mark.parametrize("operation", ["cancel", "quarantine", "fail"])
async def test_a_retry_coming_due_as_the_job_stops_queues_nothing(operation: str, monkeypatch) -> None:
    """The retry's timer fires; between its look at the task and its commit, the job is cancelled,
    failed or quarantined (its other branch failed for good): the retry queues nothing."""
    blueprint = "branches" if operation == "quarantine" else "plain"
    settings = {"RETRY_BACKOFF_BASE_SECONDS": 60, "RETRY_BACKOFF_MAX_SECONDS": 60}
    async with started_engine(plain_blueprint(), branches_blueprint(timeout_s=30), **settings) as engine:
        job_id, retry = await _retry_scheduled(engine, blueprint)
        other = await FakeWorker(engine, "w2").register()

        async def stop_the_job() -> None:
            if operation == "cancel":
                await engine.cancel_job(job_id)
            elif operation == "fail":
                await engine.fail_job(job_id)
            else:
                await other.answer(await other.take(), failure("PERMANENT_ERROR"))

        committer = engine.committer
        update_job, raced = committer.update_job, []

        async def racing(job: str, build: Any) -> Any:
            if not raced:
                raced.append(job)
                await stop_the_job()
            return await update_job(job, build)

        monkeypatch.setattr(committer, "update_job", racing)
        await engine.results.retry_due(retry.id)  # the backoff's timer, as the job stops
        assert raced == [job_id]
        assert await engine.storage.queue_lengths() == {}
        stored = await engine.storage.get_task(retry.id)
        assert stored is not None
        assert stored.status == TaskStatus.WITHDRAWN
        job = await engine.get_job(job_id)
        assert job is not None
        assert job.status in (JobStatus.CANCELLED, JobStatus.QUARANTINED, JobStatus.FAILED)


# -- follow-ups --------------------------------------------------------------------------------------
async def test_a_follow_up_whose_handler_fails_comes_due_again_after_its_lease(monkeypatch) -> None:
    """A sub-job ends; the first attempt to resume its parent fails (storage hiccup): the timer stays
    claimed, comes due again after the storage's lease, and the parent moves on."""
    parent = StateMachineBlueprint("parent")

    @parent.handler_for("start", is_start=True)
    async def start(context):
        context.actions.run_blueprint("child", {}, {"success": "done", "failure": "done"})

    @parent.handler_for("done", is_end=True)
    async def done(context):
        pass

    child = StateMachineBlueprint("child")

    @child.handler_for("only", is_start=True, is_end=True)
    async def only(context):
        pass

    async with started_engine(parent, child) as engine:
        engine.storage.lease_s = 0.3
        calls: list[str] = []
        resume = engine.operations.resume_parent

        async def flaky_resume(child_id: str) -> None:
            calls.append(child_id)
            if len(calls) == 1:
                raise ConnectionError("storage hiccup")
            await resume(child_id)

        handlers = {**engine.scheduler._handlers, TimerKind.RESUME_PARENT: flaky_resume}
        monkeypatch.setattr(engine.scheduler, "_handlers", handlers)
        job = await engine.create_job("parent", {})
        await wait_for_status(engine, job.id, "finished")
        assert len(calls) == 2


async def test_a_worker_that_does_not_read_its_websocket_holds_nothing_up(monkeypatch) -> None:
    """cancel_task goes out from a follow-up, never inside a commit: a worker whose socket blocks
    delays neither the cancel nor other jobs."""
    monkeypatch.setattr("avtomatika.runtime.scheduler.SEND_TIMEOUT_S", 0.2)
    stuck = asyncio.Event()

    class _BlockedSocket:
        closed = False

        async def send_json(self, message: dict[str, Any]) -> None:
            stuck.set()
            await asyncio.Event().wait()  # never drains

        async def close(self, **_: Any) -> None:
            return None

    async with started_engine(plain_blueprint()) as engine:
        worker = await FakeWorker(engine, "w1").register()
        engine.channels.attach("w1", _BlockedSocket())  # type: ignore[arg-type]
        first = await engine.create_job("plain", {})
        await worker.take()
        cancelled = await asyncio.wait_for(engine.cancel_job(first.id), 2.0)
        assert cancelled.status == JobStatus.CANCELLED
        await wait_for(lambda: _set(stuck), "cancel_task sent to the worker")
        second = await engine.create_job("plain", {})
        await worker.run_one()
        await wait_for_status(engine, second.id, "finished")


async def _set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_the_scheduler_hands_each_timer_kind_to_a_handler() -> None:
    async with started_engine() as engine:
        scheduler: Scheduler = engine.scheduler
        assert set(scheduler._handlers) == set(TimerKind)
