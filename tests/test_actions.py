"""Actions: one kind per step, and dispatch_task / dispatch_parallel argument validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from support.engine import started_engine, wait_for_status

from avtomatika import HandlerError, StateMachineBlueprint
from avtomatika.runtime.actions import ActionFactory as Actions
from avtomatika.runtime.actions import Dispatch, HumanApproval, RunBlueprint, TaskSpec, Transition


def actions() -> Actions:
    return Actions("bp", "work")


# -- one kind of action per step ---------------------------------------------------------------


def test_transition_then_dispatch_is_refused_naming_blueprint_and_state() -> None:
    a = actions()
    a.transition_to("next")
    with pytest.raises(HandlerError, match=r"one kind of action") as info:
        a.dispatch_task("echo", {}, {"success": "next"})
    assert "Blueprint 'bp', state 'work'" in str(info.value)
    assert "transition_to() and then dispatch_task()" in str(info.value)


def test_transition_twice_is_refused() -> None:
    a = actions()
    a.transition_to("x")
    with pytest.raises(HandlerError, match="transition_to"):
        a.transition_to("y")


def test_dispatch_task_several_times_is_one_fan_out_action() -> None:
    a = actions()
    a.dispatch_task("echo", {"n": 1}, {"success": "gather"})
    a.dispatch_task("echo", {"n": 2}, {"success": "gather"})
    result = a.result()
    assert isinstance(result, Dispatch)
    assert [t.params for t in result.tasks] == [{"n": 1}, {"n": 2}]


def test_dispatch_task_then_dispatch_parallel_is_refused() -> None:
    a = actions()
    a.dispatch_task("echo", {}, {"success": "gather"})
    with pytest.raises(HandlerError, match="dispatch_parallel"):
        a.dispatch_parallel([{"task_type": "echo"}], "gather")


def test_human_approval_then_run_blueprint_is_refused() -> None:
    a = actions()
    a.await_human_approval("slack", "ok?", {"approve": "next"})
    with pytest.raises(HandlerError, match="run_blueprint"):
        a.run_blueprint("child", {}, {"success": "next"})


def test_no_action_gives_none() -> None:
    assert actions().result() is None


def test_each_action_kind_is_recorded() -> None:
    a = actions()
    a.transition_to("next")
    assert a.result() == Transition("next")
    a = actions()
    a.await_human_approval("email", "approve?", {"yes": "go", "no": "stop"})
    assert a.result() == HumanApproval("email", "approve?", {"yes": "go", "no": "stop"})
    a = actions()
    a.run_blueprint("child", {"x": 1}, {"success": "ok", "failure": "ko"})
    assert a.result() == RunBlueprint("child", {"x": 1}, {"success": "ok", "failure": "ko"})


def _mixing_blueprint() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("mixing")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("end")
        context.actions.dispatch_task("echo", {}, transitions={"success": "end"})

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def test_mixing_action_kinds_quarantines_the_job_with_the_message() -> None:
    async with started_engine(_mixing_blueprint()) as engine:
        job = await engine.create_job("mixing")
        job = await wait_for_status(engine, job.id, "quarantined")
    assert job.state == "start"
    assert job.error is not None
    assert "Blueprint 'mixing', state 'start'" in job.error
    assert "one kind of action" in job.error
    assert job.retry_count == 0  # a blueprint mistake is not retried


async def test_invalid_dispatch_argument_quarantines_the_job_naming_it() -> None:
    bp = StateMachineBlueprint("bad_dispatch")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_task("echo", {}, transitions={"success": "end"}, dispatch_strategy="fastest")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("bad_dispatch")
        job = await wait_for_status(engine, job.id, "quarantined")
    assert "Blueprint 'bad_dispatch', state 'start'" in (job.error or "")
    assert "fastest" in (job.error or "")


async def test_end_state_handler_taking_an_action_is_quarantined() -> None:
    bp = StateMachineBlueprint("end_acts")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        context.actions.transition_to("start")

    async with started_engine(bp) as engine:
        job = await engine.create_job("end_acts")
        job = await wait_for_status(engine, job.id, "quarantined")
    assert "state 'end'" in (job.error or "")
    assert "end state" in (job.error or "")


# -- dispatch_task arguments -------------------------------------------------------------------


def test_dispatch_task_keeps_every_argument() -> None:
    a = actions()
    a.dispatch_task(
        task_type="render",
        params={"frame": 7},
        transitions={"success": "done", "failure": "broken"},
        dispatch_strategy="cheapest",
        resource_requirements={"gpu_info": {"model": "4090", "vram_gb": 16}, "installed_models": ["sdxl"]},
        timeout_seconds=12,
        max_cost=0.5,
        priority=3,
    )
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.tasks == (
        TaskSpec(
            task_type="render",
            params={"frame": 7},
            transitions={"success": "done", "failure": "broken"},
            strategy="cheapest",
            requirements={"gpu_info": {"model": "4090", "vram_gb": 16}, "installed_models": ["sdxl"]},
            timeout_s=12,
            max_cost=0.5,
            priority=3.0,
        ),
    )


def test_dispatch_task_defaults() -> None:
    a = actions()
    a.dispatch_task("echo", transitions={"success": "done"})
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.tasks == (TaskSpec("echo", {}, {"success": "done"}),)
    assert result.aggregate_into is None


@pytest.mark.parametrize("transitions", [None, {}])
def test_dispatch_task_without_transitions_is_refused_at_once(transitions: dict[str, str] | None) -> None:
    with pytest.raises(HandlerError, match="dispatch_task needs transitions"):
        actions().dispatch_task("echo", transitions=transitions)


@pytest.mark.parametrize("strategy", ["default", "round_robin", "least_connections", "cheapest", "best_value"])
def test_every_documented_strategy_is_accepted(strategy: str) -> None:
    a = actions()
    a.dispatch_task("echo", {}, {"success": "x"}, dispatch_strategy=strategy)
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.tasks[0].strategy == strategy


BAD_DISPATCH_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty task_type", {"task_type": ""}, "task_type"),
    ("non-string task_type", {"task_type": 5}, "task_type"),
    ("params not a dict", {"params": ["a"]}, "params"),
    ("transitions not a dict", {"transitions": "done"}, "transitions"),
    ("transition to a non-string", {"transitions": {"success": 1}}, "transitions"),
    ("transition to an empty name", {"transitions": {"success": ""}}, "transitions"),
    ("unknown strategy", {"dispatch_strategy": "fastest"}, "dispatch_strategy"),
    ("requirements not a dict", {"resource_requirements": "gpu"}, "resource_requirements"),
    ("gpu_info not a dict", {"resource_requirements": {"gpu_info": "4090"}}, "gpu_info"),
    ("gpu model not a string", {"resource_requirements": {"gpu_info": {"model": 4090}}}, "model"),
    ("vram not a number", {"resource_requirements": {"gpu_info": {"vram_gb": "lots"}}}, "vram_gb"),
    ("installed_models not a list", {"resource_requirements": {"installed_models": "sdxl"}}, "installed_models"),
    ("zero timeout", {"timeout_seconds": 0}, "timeout_seconds"),
    ("negative timeout", {"timeout_seconds": -1}, "timeout_seconds"),
    ("string timeout", {"timeout_seconds": "5"}, "timeout_seconds"),
    ("boolean timeout", {"timeout_seconds": True}, "timeout_seconds"),
    ("NaN timeout", {"timeout_seconds": math.nan}, "timeout_seconds"),
    ("infinite timeout", {"timeout_seconds": math.inf}, "timeout_seconds"),
    ("negative max_cost", {"max_cost": -0.1}, "max_cost"),
    ("string max_cost", {"max_cost": "cheap"}, "max_cost"),
    ("NaN max_cost", {"max_cost": math.nan}, "max_cost"),
    ("string priority", {"priority": "high"}, "priority"),
    ("NaN priority", {"priority": math.nan}, "priority"),
    ("boolean priority", {"priority": True}, "priority"),
]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(o, n) for _, o, n in BAD_DISPATCH_ARGUMENTS],
    ids=[i for i, _, _ in BAD_DISPATCH_ARGUMENTS],
)
def test_dispatch_task_rejects_a_bad_argument_naming_it(overrides: dict[str, Any], named: str) -> None:
    arguments: dict[str, Any] = {"task_type": "echo", "params": {}, "transitions": {"success": "done"}}
    arguments.update(overrides)
    with pytest.raises(HandlerError, match=named) as info:
        actions().dispatch_task(**arguments)
    assert info.value.blueprint == "bp"
    assert info.value.state == "work"


def test_max_cost_zero_is_allowed() -> None:
    a = actions()
    a.dispatch_task("echo", {}, {"success": "x"}, max_cost=0)
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.tasks[0].max_cost == 0


# -- dispatch_parallel -------------------------------------------------------------------------


def test_dispatch_parallel_defaults_success_to_the_aggregation_state() -> None:
    a = actions()
    a.dispatch_parallel(
        [{"task_type": "a", "params": {"i": 1}}, {"task_type": "b", "transitions": {"failure": "broken"}}], "gather"
    )
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.aggregate_into == "gather"
    assert [t.transitions for t in result.tasks] == [{"success": "gather"}, {"failure": "broken", "success": "gather"}]


@pytest.mark.parametrize("key", ["type", "task_type"])
def test_dispatch_parallel_takes_the_type_as_type_or_task_type(key: str) -> None:
    a = actions()
    a.dispatch_parallel([{key: "resize", "params": {"size": 64}}], aggregate_into="gather")
    result = a.result()
    assert isinstance(result, Dispatch)
    assert [(t.task_type, t.params) for t in result.tasks] == [("resize", {"size": 64})]


def test_dispatch_parallel_accepts_type_and_task_type_when_they_agree() -> None:
    a = actions()
    a.dispatch_parallel([{"type": "resize", "task_type": "resize"}], "gather")
    result = a.result()
    assert isinstance(result, Dispatch)
    assert result.tasks[0].task_type == "resize"


@pytest.mark.parametrize(
    ("tasks", "aggregate_into", "named"),
    [
        ([], "gather", "non-empty list"),
        ("echo", "gather", "non-empty list"),
        (["echo"], "gather", "#0 is not a dict"),
        ([{"params": {}}], "gather", "#0"),
        ([{"task_type": "echo", "color": "red"}], "gather", "#0"),
        ([{"task_type": "echo", "priority": "high"}], "gather", "priority"),
        ([{"task_type": "echo", "transitions": {"success": "elsewhere"}}], "gather", "must be the aggregation"),
        ([{"task_type": "echo"}], "", "aggregate_into"),
        ([{"type": "resize", "task_type": "crop"}], "gather", "names its type twice"),
        ([{"type": ""}], "gather", "task_type must be a non-empty string"),
    ],
    ids=[
        "empty",
        "not-a-list",
        "not-a-dict",
        "no-type",
        "unknown-key",
        "bad-priority",
        "success-elsewhere",
        "no-target",
        "two-types",
        "empty-type",
    ],
)
def test_dispatch_parallel_rejects_bad_input(tasks: Any, aggregate_into: str, named: str) -> None:
    with pytest.raises(HandlerError, match=named):
        actions().dispatch_parallel(tasks, aggregate_into)


# -- other actions -----------------------------------------------------------------------------


def test_human_approval_needs_decisions() -> None:
    with pytest.raises(HandlerError, match="needs transitions"):
        actions().await_human_approval("slack", "approve?", {})


def test_run_blueprint_needs_a_dict_of_initial_data() -> None:
    with pytest.raises(HandlerError, match="initial_data"):
        actions().run_blueprint("child", ["x"], {"success": "ok"})  # type: ignore[arg-type]


def test_run_blueprint_needs_a_blueprint_name() -> None:
    with pytest.raises(HandlerError, match="blueprint_name"):
        actions().run_blueprint("", {}, {"success": "ok"})


async def test_dispatch_params_that_cannot_be_stored_quarantine_the_job() -> None:
    bp = StateMachineBlueprint("unstorable_params")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_task("echo", {"handle": object()}, transitions={"success": "end"})

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("unstorable_params")
        job = await wait_for_status(engine, job.id, "quarantined")
    assert "Blueprint 'unstorable_params', state 'start'" in (job.error or "")
    assert "params cannot be stored as JSON" in (job.error or "")
