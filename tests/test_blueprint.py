"""Blueprints: handler registration, conditions, validation, handler signatures, version."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from support.engine import started_engine, wait_for_status

from avtomatika import BlueprintInvalid, OrchestratorEngine, StateMachineBlueprint
from avtomatika.runtime.actions import ActionFactory
from avtomatika.runtime.context import DataStores, JobContext
from avtomatika.storage import MemoryStorage


def make_context(initial_data: dict[str, Any] | None = None, state: str = "start") -> JobContext:
    return JobContext(
        job_id="job-1",
        blueprint_name="bp",
        current_state=state,
        initial_data=initial_data or {},
        state_history={"seen": 1},
        actions=ActionFactory("bp", state),
        data_stores=DataStores({"cache": "the-cache"}),
        client={"name": "acme"},
    )


def minimal(name: str = "bp") -> StateMachineBlueprint:
    """start -> end, valid."""
    bp = StateMachineBlueprint(name)

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


def problems_of(bp: StateMachineBlueprint) -> str:
    with pytest.raises(BlueprintInvalid) as info:
        OrchestratorEngine(MemoryStorage()).register_blueprint(bp)
    assert info.value.blueprint == bp.name
    return str(info.value)


# -- conditional handlers ----------------------------------------------------------------------


def _urgent_first() -> StateMachineBlueprint:
    bp = minimal()

    @bp.handler_for("decide").when("context.initial_data.type == 'urgent'")
    async def urgent(context):
        context.actions.transition_to("end")

    @bp.handler_for("decide")
    async def normal(context):
        context.actions.transition_to("end")

    return bp


def _default_first() -> StateMachineBlueprint:
    bp = minimal()

    @bp.handler_for("decide")
    async def normal(context):
        context.actions.transition_to("end")

    @bp.handler_for("decide").when("context.initial_data.type == 'urgent'")
    async def urgent(context):
        context.actions.transition_to("end")

    return bp


@pytest.mark.parametrize("build", [_urgent_first, _default_first], ids=["when-first", "default-first"])
def test_when_handler_is_chosen_whichever_order_it_was_registered(build) -> None:
    bp = build()
    assert bp.find_handler("decide", make_context({"type": "urgent"})).function.__name__ == "urgent"
    assert bp.find_handler("decide", make_context({"type": "normal"})).function.__name__ == "normal"
    assert bp.find_handler("decide", make_context({})).function.__name__ == "normal"


def test_first_matching_condition_wins() -> None:
    bp = minimal()

    @bp.handler_for("decide").when("context.initial_data.n > 1")
    async def above_one(context):
        context.actions.transition_to("end")

    @bp.handler_for("decide").when("context.initial_data.n > 10")
    async def above_ten(context):
        context.actions.transition_to("end")

    assert bp.find_handler("decide", make_context({"n": 50})).function.__name__ == "above_one"


def test_two_default_handlers_for_one_state_are_rejected() -> None:
    bp = minimal()

    @bp.handler_for("start")
    async def another_start(context):
        context.actions.transition_to("end")

    message = problems_of(bp)
    assert "state 'start'" in message
    assert "two default handlers" in message


def test_two_handlers_with_the_same_condition_are_rejected() -> None:
    bp = minimal()

    @bp.handler_for("start").when("context.initial_data.a == 1")
    async def first(context):
        context.actions.transition_to("end")

    @bp.handler_for("start").when("context.initial_data.a == 1")
    async def second(context):
        context.actions.transition_to("end")

    assert "share the condition" in problems_of(bp)


def test_state_with_only_conditional_handlers_is_a_warning() -> None:
    bp2 = StateMachineBlueprint("bp2")

    @bp2.handler_for("start", is_start=True).when("context.initial_data.a == 1")
    async def conditional_start(context):
        context.actions.transition_to("end")

    @bp2.handler_for("end", is_end=True)
    async def end(context):
        pass

    warnings = [str(p) for p in bp2.check()]
    assert any("state 'start'" in w and "default" in w for w in warnings), warnings


# -- validation --------------------------------------------------------------------------------


def test_valid_blueprint_registers() -> None:
    engine = OrchestratorEngine(MemoryStorage())
    engine.register_blueprint(minimal())
    assert "bp" in engine.blueprints


def test_blueprint_without_start_state_is_rejected() -> None:
    bp = StateMachineBlueprint("no_start")

    @bp.handler_for("a")
    async def a(context):
        context.actions.transition_to("b")

    @bp.handler_for("b", is_end=True)
    async def b(context):
        pass

    assert "no start state" in problems_of(bp)


def test_blueprint_with_two_start_states_is_rejected() -> None:
    bp = minimal()

    @bp.handler_for("other", is_start=True)
    async def other(context):
        context.actions.transition_to("end")

    message = problems_of(bp)
    assert "more than one start state" in message
    assert "start" in message
    assert "other" in message


def test_blueprint_without_end_state_is_rejected() -> None:
    bp = StateMachineBlueprint("no_end")

    @bp.handler_for("a", is_start=True)
    async def a(context):
        context.actions.transition_to("a")

    assert "no end state" in problems_of(bp)


def test_transition_to_an_unknown_state_found_in_source_is_rejected() -> None:
    bp = minimal()

    @bp.handler_for("work")
    async def work(context):
        context.actions.transition_to("nowhere")

    message = problems_of(bp)
    assert "two default" not in message
    assert "state 'work'" in message
    assert "unknown state 'nowhere'" in message


def test_dispatch_transition_to_an_unknown_state_is_rejected() -> None:
    bp = minimal()

    @bp.handler_for("work")
    async def work(context):
        context.actions.dispatch_task("echo", {}, transitions={"success": "end", "failure": "missing_state"})

    assert "unknown state 'missing_state'" in problems_of(bp)


def test_unreachable_state_is_a_warning_not_an_error(caplog) -> None:
    bp = minimal()

    @bp.handler_for("orphan")
    async def orphan(context):
        context.actions.transition_to("end")

    warnings = bp.check()
    assert [(w.state, w.severity) for w in warnings] == [("orphan", "warning")]
    engine = OrchestratorEngine(MemoryStorage())
    with caplog.at_level(logging.WARNING, logger="avtomatika.engine"):
        engine.register_blueprint(bp)
    assert "orphan" in caplog.text
    assert "bp" in engine.blueprints


def test_state_reached_only_through_a_declared_transition_is_reachable() -> None:
    bp = StateMachineBlueprint("computed")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to(context.initial_data["next"])

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    assert [w.state for w in bp.check()] == ["end"]
    bp.transition("start", "end")
    assert bp.check() == []


def test_bad_condition_fails_registration_naming_blueprint_state_and_column() -> None:
    bp = minimal("conditions_bp")

    @bp.handler_for("start").when("context.initial_data.type === 'x'")
    async def broken(context):
        context.actions.transition_to("end")

    message = problems_of(bp)
    assert "Blueprint 'conditions_bp'" in message
    assert "state 'start'" in message
    assert "column" in message


def test_forbidden_condition_fails_registration() -> None:
    bp = minimal()

    @bp.handler_for("start").when("__import__('os').system('true')")
    async def evil(context):
        context.actions.transition_to("end")

    message = problems_of(bp)
    assert "state 'start'" in message
    assert "Invalid condition" in message


def test_handler_with_an_unusable_signature_is_rejected() -> None:
    bp = minimal()

    @bp.handler_for("work")
    async def work(context, actions, extra):
        actions.transition_to("end")

    message = problems_of(bp)
    assert "state 'work'" in message
    assert "cannot call it" in message


def test_handler_mixing_positional_names_with_injected_ones_is_rejected() -> None:
    bp = minimal()

    @bp.handler_for("work")
    async def work(ctx, job_id):  # job_id would silently receive `actions`
        ctx.actions.transition_to("end")

    message = problems_of(bp)
    assert "state 'work'" in message
    assert "job_id" in message


def test_rejection_lists_every_problem_at_once() -> None:
    bp = StateMachineBlueprint("many")

    @bp.handler_for("a").when("context.x ==")
    async def a(context):
        context.actions.transition_to("ghost")

    message = problems_of(bp)
    assert "no start state" in message
    assert "no end state" in message
    assert "unknown state 'ghost'" in message
    assert "Invalid condition" in message


def test_second_blueprint_with_the_same_name_is_rejected() -> None:
    engine = OrchestratorEngine(MemoryStorage())
    engine.register_blueprint(minimal("same"))
    with pytest.raises(BlueprintInvalid, match="already registered"):
        engine.register_blueprint(minimal("same"))


# -- handler signatures ------------------------------------------------------------------------


async def _invoke(bp: StateMachineBlueprint, state: str, context: JobContext) -> None:
    await bp.find_handler(state, context).invoke(context)


async def test_handler_taking_context_alone_gets_the_context() -> None:
    bp = StateMachineBlueprint("sig")
    seen: list[Any] = []

    @bp.handler_for("s")
    async def handler(ctx):
        seen.append(ctx)

    context = make_context(state="s")
    await _invoke(bp, "s", context)
    assert seen == [context]


async def test_handler_taking_context_and_actions_gets_both() -> None:
    bp = StateMachineBlueprint("sig")
    seen: list[Any] = []

    @bp.handler_for("s")
    async def handler(ctx, acts):
        seen.extend([ctx, acts])

    context = make_context(state="s")
    await _invoke(bp, "s", context)
    assert seen == [context, context.actions]


async def test_handler_parameters_are_injected_by_name_in_any_order() -> None:
    bp = StateMachineBlueprint("sig")
    seen: dict[str, Any] = {}

    @bp.handler_for("s")
    async def handler(state_history, actions, job_id, initial_data, data_stores, client, aggregation_results):
        seen.update(
            state_history=state_history,
            actions=actions,
            job_id=job_id,
            initial_data=initial_data,
            cache=data_stores.cache,
            client=client,
            aggregation_results=aggregation_results,
        )

    context = make_context({"a": 1}, state="s")
    await _invoke(bp, "s", context)
    assert seen == {
        "state_history": {"seen": 1},
        "actions": context.actions,
        "job_id": "job-1",
        "initial_data": {"a": 1},
        "cache": "the-cache",
        "client": {"name": "acme"},
        "aggregation_results": {},
    }


async def test_handler_parameters_of_every_kind_get_their_values() -> None:
    """By position, keyword-only and positional-only: what each name says, whichever way it is passed."""
    bp = StateMachineBlueprint("sig")
    seen: dict[str, Any] = {}

    @bp.handler_for("one")
    async def one(initial_data):
        seen["one"] = initial_data

    @bp.handler_for("keyword")
    async def keyword(job_id, *, actions, context):
        seen["keyword"] = (job_id, actions, context)

    @bp.handler_for("positional")
    async def positional(actions, /, job_id):
        seen["positional"] = (actions, job_id)

    @bp.handler_for("context")
    async def context_alone(context):
        seen["context"] = context

    contexts = {state: make_context({"a": 1}, state=state) for state in ("one", "keyword", "positional", "context")}
    for state, context in contexts.items():
        await _invoke(bp, state, context)
    assert seen["one"] == {"a": 1}
    assert seen["keyword"] == ("job-1", contexts["keyword"].actions, contexts["keyword"])
    assert seen["positional"] == (contexts["positional"].actions, "job-1")
    assert seen["context"] is contexts["context"]
    spec = bp.states["context"].handlers()[0]
    assert spec.invoke is context_alone  # called as itself
    assert spec.name.endswith("context_alone")


async def test_synchronous_handler_is_supported() -> None:
    bp = StateMachineBlueprint("sig")

    @bp.handler_for("s")
    def handler(context):
        context.actions.transition_to("t")

    context = make_context(state="s")
    bp.find_handler("s", context).invoke(context)
    assert context.actions.result() is not None


async def test_injected_handlers_run_a_job_to_the_end() -> None:
    bp = StateMachineBlueprint("injected")

    @bp.handler_for("start", is_start=True)
    async def start(actions, initial_data, state_history):
        state_history["doubled"] = initial_data["n"] * 2
        actions.transition_to("middle")

    @bp.handler_for("middle")
    async def middle(context, actions):
        context.state_history["seen_doubled"] = context.state_history["doubled"]
        actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    async with started_engine(bp) as engine:
        job = await engine.create_job("injected", {"n": 21})
        done = await wait_for_status(engine, job.id, "finished")
    assert done.state_history == {"doubled": 42, "seen_doubled": 42}


# -- aggregators and version -------------------------------------------------------------------


def test_aggregator_for_marks_an_aggregation_state() -> None:
    bp = minimal()

    @bp.aggregator_for("gather")
    async def gather(context):
        context.actions.transition_to("end")

    assert bp.states["gather"].is_aggregator
    assert not bp.states["end"].is_aggregator


def test_aggregation_state_cannot_be_the_start_state() -> None:
    bp = StateMachineBlueprint("agg_start")

    @bp.aggregator_for("start")
    async def gather(context):
        context.actions.transition_to("end")

    @bp.handler_for("start", is_start=True).when("context.initial_data.x == 1")
    async def start(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    assert "aggregation state cannot be the start state" in problems_of(bp)


def test_version_changes_when_a_handler_is_added() -> None:
    bp = minimal()
    before = bp.version
    assert before == minimal().version  # same graph, same version

    @bp.handler_for("start").when("context.initial_data.fast == True")
    async def fast(context):
        context.actions.transition_to("end")

    after = bp.version
    assert after != before

    @bp.handler_for("extra")
    async def extra(context):
        context.actions.transition_to("end")

    assert bp.version not in (before, after)
