"""Blueprints shared by test modules, as small factories (a ``name`` where a test needs its own).

Here are the blueprints a test only needs to have *a* job of some shape:

- ``hop_blueprint``: start -> done. ``one_task_blueprint``: one task, then done; ``plain_blueprint``: the
  same with a task timeout, ending in ``end``. ``echo_blueprint``: start -> work (an echo task) -> done,
  the studio's; ``ClipInput`` gives it a form.
- ``branches_blueprint`` and ``batch_blueprint``: fan-outs into an aggregator. ``routing_blueprint``:
  a ``.when()`` branch before a task.
- The notebook widgets' (``pipeline``, ``report``, ``amount_router``; ``end_states`` adds end states)
  and the HTTP API tests' (``API_BLUEPRINTS``: ``simple``, ``plain``, ``work``, ``approval``, ``typed``,
  module-level because every ``make_api`` engine registers the same ones).

A blueprint stays inline in its test module when it is what the test is about: the handler that raises,
takes no action, changes its mind or writes something unstorable (test_job_lifecycle, test_actions,
test_logging); the fan-outs whose shape is under test (test_fanout, test_fan_in_races); approvals, sub-jobs
and the handlers an operation re-runs (test_operations, test_durability, test_rerun); the transitions a
result may take (test_fault_tolerance's ``full_blueprint``); the graph or the README example drawn
(test_graph, test_blueprint, test_readme); the states a page or a widget shows (test_studio_job,
test_reads, test_notebook_*); the params a metric, a trace or a task's wire format reads (test_telemetry,
test_task_format, test_api_client). Reading those tests means reading their blueprint, so it is right there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from avtomatika import StateMachineBlueprint


def _blueprint(name: str, endpoint: bool) -> StateMachineBlueprint:
    if endpoint:
        return StateMachineBlueprint(name, api_version="v1", api_endpoint=f"/jobs/{name}")
    return StateMachineBlueprint(name)


def hop_blueprint(name: str = "hop", *, endpoint: bool = False) -> StateMachineBlueprint:
    """start -> done, nothing else (``endpoint``: served at ``/api/v1/jobs/<name>``)."""
    bp = _blueprint(name, endpoint)

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def one_task_blueprint(
    name: str = "one_task", *, task_type: str = "echo", endpoint: bool = False
) -> StateMachineBlueprint:
    """start dispatches one task, whose success leads to done. Its type is the job's ``task_type``
    (default: ``task_type``), its params the rest of the job's initial data."""
    bp = _blueprint(name, endpoint)

    @bp.handler_for("start", is_start=True)
    async def start(context):
        params = {key: value for key, value in context.initial_data.items() if key != "task_type"}
        chosen = context.initial_data.get("task_type", task_type)
        context.actions.dispatch_task(chosen, params, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def plain_blueprint() -> StateMachineBlueprint:
    """start dispatches one `echo` task with only a success transition."""
    bp = StateMachineBlueprint("plain")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_task(
            "echo",
            params=dict(context.initial_data),
            transitions={"success": "end"},
            timeout_seconds=context.initial_data.get("timeout"),
        )

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


def branches_blueprint(timeout_s: float = 0.2) -> StateMachineBlueprint:
    """start -> ``initial_data["n"]`` branches (`echo`, param ``branch``) -> gather, which notes in
    ``state_history["got"]`` the branches it got -> done."""
    bp = StateMachineBlueprint("branches")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_parallel(
            [
                {"task_type": "echo", "params": {"branch": i}, "timeout_seconds": timeout_s}
                for i in range(context.initial_data["n"])
            ],
            aggregate_into="gather",
        )

    @bp.aggregator_for("gather")
    async def gather(context):
        context.state_history["got"] = sorted(r["data"]["branch"] for r in context.aggregation_results.values())
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def routing_blueprint(name: str = "routing") -> StateMachineBlueprint:
    """received -> triage, which has a ``.when()`` handler (urgent) and a default one, both dispatching
    an `echo` task (params: ``lane`` and ``initial_data["task"]``) whose success leads to shipped.
    received notes how many ``items`` came; the default handler removes that note again."""
    bp = StateMachineBlueprint(name, input_example={"priority": "urgent", "items": ["book"]})

    @bp.handler_for("received", is_start=True)
    async def received(context):
        context.state_history["items"] = len(context.initial_data.get("items", []))
        context.actions.transition_to("triage")

    @bp.handler_for("triage").when("context.initial_data.priority == 'urgent'")
    async def urgent(context):
        params = {"lane": "fast", **context.initial_data.get("task", {})}
        context.actions.dispatch_task("echo", params, transitions={"success": "shipped"})

    @bp.handler_for("triage")
    async def normal(context):
        context.state_history.pop("items")
        params = {"lane": "slow", **context.initial_data.get("task", {})}
        context.actions.dispatch_task("echo", params, transitions={"success": "shipped"})

    @bp.handler_for("shipped", is_end=True)
    async def shipped(context):
        context.state_history["shipped"] = True

    return bp


def batch_blueprint(name: str = "batch") -> StateMachineBlueprint:
    """split dispatches ``initial_data["n"]`` `echo` tasks (params ``n``, and ``outcome: permanent``
    for branch ``initial_data["bad"]``: it fails for good); collect sums their results' ``px``."""
    bp = StateMachineBlueprint(name)

    @bp.handler_for("split", is_start=True)
    async def split(context):
        for n in range(context.initial_data["n"]):
            outcome = "permanent" if n == context.initial_data.get("bad") else "success"
            context.actions.dispatch_task("echo", {"n": n, "outcome": outcome}, transitions={"success": "collect"})

    @bp.aggregator_for("collect")
    async def collect(context):
        context.state_history["total"] = sum(r["data"].get("px", 0) for r in context.aggregation_results.values())
        context.actions.transition_to("published")

    @bp.handler_for("published", is_end=True)
    async def published(context):
        pass

    return bp


# -- The studio's: an echo task, and one with a form ---------------------------------------------


class ClipInput(BaseModel):
    """The input model of the ``studio_clip`` blueprint: the studio builds its start form from it."""

    url: str = Field(description="Where the clip is")
    bitrate_kbps: int = 4000
    codec: Literal["h264", "av1"] = "h264"
    hdr: bool = False


def echo_blueprint(name: str = "studio_echo", input_model: type | None = None) -> StateMachineBlueprint:
    """start -> (echo task) -> done; ``initial_data`` becomes the task's params.

    ``fail_first: true`` makes the first dispatch from ``work`` ask for INVALID_INPUT (the job fails)
    and every later one succeed, so a retry from ``work`` finishes.
    """
    blueprint = StateMachineBlueprint(
        name, api_version="v1", api_endpoint=f"/jobs/{name}", description="Echoes its input.", input_model=input_model
    )

    @blueprint.handler_for("start", is_start=True)
    async def start(context: Any) -> None:
        context.actions.transition_to("work")

    @blueprint.handler_for("work")
    async def work(context: Any) -> None:
        tries = context.state_history.get("work_tries", 0) + 1
        context.state_history["work_tries"] = tries
        params = {k: v for k, v in context.initial_data.items() if k != "fail_first"}
        if context.initial_data.get("fail_first") and tries == 1:
            params["outcome"] = "invalid"
        context.actions.dispatch_task(task_type="echo", params=params, transitions={"success": "done"})

    @blueprint.handler_for("done", is_end=True)
    async def done(context: Any) -> None:
        context.state_history["done"] = True

    return blueprint


# -- The notebook widgets' (handlers that take ``actions``) -------------------------------------------


def end_states(bp: StateMachineBlueprint, *names: str) -> StateMachineBlueprint:
    """``bp`` with an end state (a handler that does nothing) for each of ``names``."""
    for name in names:

        async def finish(context):
            pass

        bp.handler_for(name, is_end=True)(finish)
    return bp


def pipeline() -> StateMachineBlueprint:
    """validate -> resize (a worker task) -> review -> publish, or rejected."""
    bp = StateMachineBlueprint("nb_pipeline")

    @bp.handler_for("validate", is_start=True)
    async def validate(context, actions):
        if not context.initial_data.get("image"):
            actions.transition_to("rejected")
            return
        context.state_history["checked"] = True
        actions.transition_to("resize")

    @bp.handler_for("resize")
    async def resize(context, actions):
        actions.dispatch_task(
            "resize", {"image": context.initial_data["image"]}, transitions={"success": "review", "failure": "rejected"}
        )

    @bp.handler_for("review").when("context.initial_data.priority == 'high'")
    async def fast_review(context, actions):
        actions.transition_to("publish")

    @bp.handler_for("review")
    async def review(context, actions):
        context.state_history["score"] = context.state_history["width"] // 10
        actions.transition_to("publish")

    return end_states(bp, "publish", "rejected")


def report() -> StateMachineBlueprint:
    """Eight states: a .when() branch, one task, a fan-out of 3 into an aggregator, a human approval."""
    bp = StateMachineBlueprint("nb_report")

    @bp.handler_for("intake", is_start=True).when("context.initial_data.priority == 'rush'")
    async def rush(context, actions):
        actions.transition_to("express")

    @bp.handler_for("intake")
    async def intake(context, actions):
        actions.transition_to("extract")

    @bp.handler_for("express")
    async def express(context, actions):
        context.state_history["pages"] = ["summary"]
        actions.transition_to("fan_out")

    @bp.handler_for("extract")
    async def extract(context, actions):
        actions.dispatch_task(
            "extract_text",
            {"document": context.initial_data["document"]},
            transitions={"success": "fan_out", "failure": "rejected"},
        )

    @bp.handler_for("fan_out")
    async def fan_out(context, actions):
        for page in context.state_history["pages"]:
            actions.dispatch_task("analyze", {"page": page}, transitions={"success": "aggregate"})

    @bp.aggregator_for("aggregate")
    async def aggregate(context, actions):
        scores = [result["data"]["score"] for result in context.aggregation_results.values()]
        context.state_history["total"] = sum(scores)
        actions.transition_to("approval")

    @bp.handler_for("approval")
    async def approval(context, actions):
        total = context.state_history["total"]
        actions.await_human_approval(
            "notebook", f"Publish the report (score {total})?", transitions={"approve": "publish", "reject": "rejected"}
        )

    return end_states(bp, "publish", "rejected")


def amount_router() -> StateMachineBlueprint:
    """route: big_order when the amount is over 1000 (-> manual_review), else small_order; then done."""
    bp = StateMachineBlueprint("cond_orders")

    @bp.handler_for("route", is_start=True).when("context.initial_data.amount > 1000")
    async def big_order(context, actions):
        actions.transition_to("manual_review")

    @bp.handler_for("route")
    async def small_order(context, actions):
        actions.transition_to("done")

    @bp.handler_for("manual_review")
    async def manual_review(context, actions):
        actions.transition_to("done")

    return end_states(bp, "done")


# -- The HTTP API tests' ----------------------------------------------------------------------------
simple = StateMachineBlueprint("simple", api_version="v1", api_endpoint="/jobs/simple")


@simple.handler_for("start", is_start=True)
async def simple_start(context):
    context.state_history["started"] = True
    context.actions.transition_to("done")


@simple.handler_for("done", is_end=True)
async def simple_done(context):
    pass


plain = StateMachineBlueprint("plain", api_endpoint="/jobs/plain")  # no api_version: /api/jobs/plain


@plain.handler_for("start", is_start=True)
async def plain_start(context):
    context.actions.transition_to("done")


@plain.handler_for("done", is_end=True)
async def plain_done(context):
    pass


work = StateMachineBlueprint("work", api_version="v1", api_endpoint="/jobs/work")


@work.handler_for("start", is_start=True)
async def work_start(context):
    context.actions.dispatch_task(
        "echo", params={"n": context.initial_data.get("n", 1)}, transitions={"success": "done"}
    )


@work.handler_for("done", is_end=True)
async def work_done(context):
    pass


approval = StateMachineBlueprint("approval", api_version="v1", api_endpoint="/jobs/approval")


@approval.handler_for("start", is_start=True)
async def approval_start(context):
    context.actions.await_human_approval("slack", "Ship it?", {"approve": "shipped", "reject": "dropped"})


@approval.handler_for("shipped", is_end=True)
async def approval_shipped(context):
    pass


@approval.handler_for("dropped", is_end=True)
async def approval_dropped(context):
    pass


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1)


typed = StateMachineBlueprint("typed", api_version="v1", api_endpoint="/jobs/typed", input_model=Order)


@typed.handler_for("start", is_start=True)
async def typed_start(context):
    context.actions.transition_to("done")


@typed.handler_for("done", is_end=True)
async def typed_done(context):
    pass


API_BLUEPRINTS = (simple, plain, work, approval, typed)
"""The blueprints every ``make_api`` engine serves (module-level: each API test registers the same ones)."""
