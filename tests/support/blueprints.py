"""Blueprints shared by several test modules."""

from __future__ import annotations

from avtomatika import StateMachineBlueprint


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
