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
