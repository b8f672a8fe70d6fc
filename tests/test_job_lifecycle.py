"""A job's life without workers: handlers, conditions, state_history, ending, handler failures."""

from __future__ import annotations

from typing import Any

from support.engine import assert_no_silent_stall, started_engine, wait_for_status

from avtomatika import StateMachineBlueprint
from avtomatika.events import Event, EventKind
from avtomatika.models import JobStatus


def seed_quick_start() -> StateMachineBlueprint:
    """The seed README's Quick Start blueprint, as written there."""
    my_blueprint = StateMachineBlueprint(name="my_first_blueprint", api_version="v1", api_endpoint="/jobs/my_flow")

    @my_blueprint.handler_for("start", is_start=True)
    async def start_handler(context):
        """The initial state for each new job."""
        print(f"Job {context.job_id} | Start: {context.initial_data}")
        # Tell the orchestrator what to do next
        context.actions.transition_to("end")

    @my_blueprint.handler_for("end", is_end=True)
    async def end_handler(context):
        """The final state. The pipeline ends here."""
        print(f"Job {context.job_id} | Complete.")

    return my_blueprint


async def test_seed_quick_start_blueprint_runs_to_finished(capsys) -> None:
    async with started_engine(seed_quick_start()) as engine:
        job = await engine.create_job("my_first_blueprint", {"hello": "world"})
        assert job.status == JobStatus.PENDING
        assert job.state == "start"
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state == "end"
    assert done.error is None
    out = capsys.readouterr().out
    assert f"Job {job.id} | Start: {{'hello': 'world'}}" in out
    assert f"Job {job.id} | Complete." in out


async def test_job_whose_start_state_is_an_end_state_finishes() -> None:
    bp = StateMachineBlueprint("one_step")

    @bp.handler_for("only", is_start=True, is_end=True)
    async def only(context):
        context.state_history["ran"] = True

    async with started_engine(bp) as engine:
        job = await engine.create_job("one_step")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"ran": True}


def routing_blueprint() -> StateMachineBlueprint:
    """The seed README's .when() example inside a runnable blueprint."""
    bp = StateMachineBlueprint("routing")

    @bp.handler_for("decision_step", is_start=True).when("context.initial_data.type == 'urgent'")
    async def handle_urgent(context):
        context.actions.transition_to("urgent_processing")

    @bp.handler_for("decision_step", is_start=True)
    async def handle_normal(context):
        context.actions.transition_to("normal_processing")

    @bp.handler_for("urgent_processing")
    async def urgent(context):
        context.state_history["path"] = "urgent"
        context.actions.transition_to("end")

    @bp.handler_for("normal_processing")
    async def normal(context):
        context.state_history["path"] = "normal"
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def test_conditions_pick_the_handler() -> None:
    async with started_engine(routing_blueprint()) as engine:
        urgent = await engine.create_job("routing", {"type": "urgent"})
        normal = await engine.create_job("routing", {"type": "normal"})
        untyped = await engine.create_job("routing", {})
        results = {j.id: await wait_for_status(engine, j.id, "finished") for j in (urgent, normal, untyped)}
    assert results[urgent.id].state_history == {"path": "urgent"}
    assert results[normal.id].state_history == {"path": "normal"}
    assert results[untyped.id].state_history == {"path": "normal"}


async def test_state_history_is_carried_from_step_to_step() -> None:
    bp = StateMachineBlueprint("history")

    @bp.handler_for("a", is_start=True)
    async def a(context):
        context.state_history["a"] = context.initial_data["seed"]
        context.state_history["items"] = [1]
        context.actions.transition_to("b")

    @bp.handler_for("b")
    async def b(context):
        context.state_history["b"] = context.state_history["a"] + 1
        context.state_history["items"].append(2)
        context.actions.transition_to("c")

    @bp.handler_for("c", is_end=True)
    async def c(context):
        context.state_history["c"] = context.state_history.b * 10

    async with started_engine(bp) as engine:
        job = await engine.create_job("history", {"seed": 1})
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"a": 1, "items": [1, 2], "b": 2, "c": 20}
    assert done.initial_data == {"seed": 1}


async def test_long_chain_of_transitions_finishes() -> None:
    bp = StateMachineBlueprint("loop")

    @bp.handler_for("count", is_start=True)
    async def count(context):
        n = context.state_history.get("n", 0) + 1
        context.state_history["n"] = n
        if n < 100:
            context.actions.transition_to("count")
        else:
            context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("loop")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"n": 100}
    assert done.visits["count"] == 100


def failing_blueprint(fail_times: int, calls: list[int]) -> StateMachineBlueprint:
    bp = StateMachineBlueprint("flaky")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        calls.append(1)
        if len(calls) <= fail_times:
            raise RuntimeError(f"database unavailable (call {len(calls)})")
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def test_handler_exception_is_retried_and_the_job_can_still_finish() -> None:
    calls: list[int] = []
    async with started_engine(failing_blueprint(2, calls)) as engine:
        job = await engine.create_job("flaky")
        done = await wait_for_status(engine, job.id, "finished")
    assert len(calls) == 3
    assert done.retry_count == 2
    assert done.error is None


async def test_handler_exception_retried_with_backoff_then_quarantined_with_its_message() -> None:
    calls: list[int] = []
    events: list[Event] = []
    async with started_engine(failing_blueprint(100, calls), JOB_MAX_RETRIES=3) as engine:
        engine.events.subscribe(events.append)
        job = await engine.create_job("flaky")
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert len(calls) == 4  # the first run and JOB_MAX_RETRIES retries
    assert done.retry_count == 3
    assert done.error is not None
    assert "Blueprint 'flaky', state 'start'" in done.error
    assert "RuntimeError: database unavailable (call 4)" in done.error
    retries = [e for e in events if e.kind == EventKind.HANDLER_RETRY]
    delays = [e.data["retry_in_s"] for e in retries]
    assert len(delays) == 3
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]  # exponential, not constant
    assert all(e.status == JobStatus.AWAITING_RETRY for e in retries)


async def test_job_awaiting_a_handler_retry_is_not_stalled() -> None:
    calls: list[int] = []
    async with started_engine(failing_blueprint(100, calls), RETRY_BACKOFF_BASE_SECONDS=30) as engine:
        job = await engine.create_job("flaky")
        waiting = await wait_for_status(engine, job.id, "awaiting_retry")
        assert waiting.wait is not None
        assert waiting.wait["kind"] == "retry"
        await assert_no_silent_stall(engine)


async def test_quarantined_handler_failure_released_runs_the_handler_again() -> None:
    calls: list[int] = []
    async with started_engine(failing_blueprint(4, calls), JOB_MAX_RETRIES=3) as engine:
        job = await engine.create_job("flaky")
        await wait_for_status(engine, job.id, "quarantined")
        await engine.release_job(job.id)
        done = await wait_for_status(engine, job.id, "finished")
    assert len(calls) == 5
    assert done.error is None


async def test_handler_taking_no_action_is_quarantined_with_a_clear_message() -> None:
    bp = StateMachineBlueprint("idle")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.state_history["forgot"] = "to act"

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    bp.transition("start", "end")
    async with started_engine(bp) as engine:
        job = await engine.create_job("idle")
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert done.error is not None
    assert "Blueprint 'idle', state 'start'" in done.error
    assert "took no action" in done.error
    assert done.retry_count == 0


async def test_transition_to_an_unknown_computed_state_is_quarantined() -> None:
    bp = StateMachineBlueprint("computed")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to(context.initial_data["next"])

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    bp.transition("start", "end")
    async with started_engine(bp) as engine:
        ok = await engine.create_job("computed", {"next": "end"})
        bad = await engine.create_job("computed", {"next": "nowhere"})
        await wait_for_status(engine, ok.id, "finished")
        done = await wait_for_status(engine, bad.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert done.state == "start"
    assert "unknown state 'nowhere'" in (done.error or "")
    assert "Blueprint 'computed', state 'start'" in (done.error or "")


async def test_no_matching_condition_and_no_default_is_quarantined() -> None:
    bp = StateMachineBlueprint("picky")

    @bp.handler_for("start", is_start=True).when("context.initial_data.ok == True")
    async def start(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("picky", {"ok": False})
        done = await wait_for_status(engine, job.id, "quarantined")
    assert "no .when() condition held" in (done.error or "")


async def test_data_stores_reach_handlers() -> None:
    store: dict[str, Any] = {"user:123": "Ada"}
    bp = StateMachineBlueprint("with_store", data_stores={"cache": store})

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.state_history["user"] = context.data_stores.cache["user:123"]
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("with_store")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"user": "Ada"}


async def test_zero_argument_end_handler_is_accepted() -> None:
    bp = StateMachineBlueprint("bare_end")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end():
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("bare_end")
        await wait_for_status(engine, job.id, "finished")


async def test_many_jobs_all_finish_and_none_stall() -> None:
    async with started_engine(routing_blueprint()) as engine:
        jobs = [await engine.create_job("routing", {"type": "urgent" if i % 2 else "x"}) for i in range(50)]
        for job in jobs:
            await wait_for_status(engine, job.id, "finished")
        await assert_no_silent_stall(engine)
        dashboard = await engine.dashboard()
    assert dashboard["jobs"]["by_status"] == {"finished": 50}


async def test_nested_state_history_changed_through_attributes_is_kept() -> None:
    bp = StateMachineBlueprint("nested")

    @bp.handler_for("a", is_start=True)
    async def a(context):
        context.state_history["stats"] = {"count": 0, "inner": {"seen": []}}
        context.actions.transition_to("b")

    @bp.handler_for("b")
    async def b(context):
        context.state_history.stats["count"] += 1
        context.state_history.stats.inner.seen.append("b")
        context.state_history.stats.inner["flag"] = True
        context.actions.transition_to("c")

    @bp.handler_for("c", is_end=True)
    async def c(context):
        context.state_history["count_seen_by_c"] = context.state_history.stats.count

    async with started_engine(bp) as engine:
        job = await engine.create_job("nested")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {
        "stats": {"count": 1, "inner": {"seen": ["b"], "flag": True}},
        "count_seen_by_c": 1,
    }


async def test_engine_error_outside_the_handler_quarantines_instead_of_stalling(monkeypatch, caplog) -> None:
    async with started_engine(seed_quick_start()) as engine:

        def broken_client_info(client):
            raise RuntimeError("client registry unavailable")

        monkeypatch.setattr(engine.runtime, "client_info", broken_client_info)
        job = await engine.create_job("my_first_blueprint")
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
        monkeypatch.undo()
        await engine.release_job(job.id)
        await wait_for_status(engine, job.id, "finished")
    assert "client registry unavailable" in (done.error or "")
    assert "stepping job" in caplog.text


async def test_state_history_that_cannot_be_stored_is_quarantined_naming_the_state() -> None:
    bp = StateMachineBlueprint("unstorable")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.state_history["tags"] = {"a", "b"}  # a set is not JSON
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("unstorable")
        done = await wait_for_status(engine, job.id, "quarantined")
        await assert_no_silent_stall(engine)
    assert "Blueprint 'unstorable', state 'start'" in (done.error or "")
    assert "state_history" in (done.error or "")


async def test_failed_step_leaves_state_history_as_it_was_for_the_retry() -> None:
    calls: list[int] = []
    bp = StateMachineBlueprint("atomic")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.state_history["items"] = [0]
        context.state_history["nested"] = {"list": []}
        context.actions.transition_to("work")

    @bp.handler_for("work")
    async def work(context):
        calls.append(1)
        context.state_history["items"].append(len(calls))
        context.state_history.nested.list.append("touched")
        context.state_history["attempt"] = len(calls)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("atomic")
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"items": [0, 3], "nested": {"list": ["touched"]}, "attempt": 3}


async def test_handler_changing_initial_data_in_place_does_not_change_the_job() -> None:
    bp = StateMachineBlueprint("readonly")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.initial_data["options"]["speed"] = "fast"
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        context.state_history["speed_seen"] = context.initial_data.options.speed

    async with started_engine(bp) as engine:
        job = await engine.create_job("readonly", {"options": {"speed": "slow"}})
        done = await wait_for_status(engine, job.id, "finished")
    assert done.initial_data == {"options": {"speed": "slow"}}
    assert done.state_history == {"speed_seen": "slow"}
