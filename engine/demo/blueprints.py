"""Demo blueprints: a condition, a fan-out, and a task that sometimes lands in quarantine."""

from __future__ import annotations

from typing import Any

from avtomatika import StateMachineBlueprint


def _demo(name: str, endpoint: str, description: str, example: dict[str, Any]) -> StateMachineBlueprint:
    """A demo blueprint: its jobs are created with ``POST /api/v1/jobs/<endpoint>``, and the studio's
    start form is filled in with ``example``."""
    return StateMachineBlueprint(
        name, api_version="v1", api_endpoint=f"/jobs/{endpoint}", description=description, input_example=example
    )


orders = _demo(
    "order_flow",
    "orders",
    "Routes urgent orders to a fast lane (a .when() condition).",
    {"priority": "urgent", "items": ["book", "pen"]},
)


@orders.handler_for("received", is_start=True)
async def receive_order(context):
    context.state_history["items"] = len(context.initial_data.get("items", []))
    context.actions.transition_to("triage")


@orders.handler_for("triage").when("context.initial_data.priority == 'urgent'")
async def urgent_order(context):
    context.actions.dispatch_task(
        task_type="ship_express",
        params={"order": context.job_id},
        transitions={"success": "shipped", "failure": "delayed"},
        priority=10,
    )


@orders.handler_for("triage")
async def normal_order(context):
    context.actions.dispatch_task(
        task_type="ship_standard",
        params={"order": context.job_id},
        transitions={"success": "shipped", "failure": "delayed"},
    )


@orders.handler_for("shipped", is_end=True)
async def order_shipped(context):
    context.state_history["done"] = True


@orders.handler_for("delayed", is_end=True)
async def order_delayed(context):
    context.state_history["delayed"] = True


images = _demo(
    "image_batch",
    "images",
    "Resizes every image of a batch in parallel, then aggregates.",
    {"images": [f"photo-{n}.jpg" for n in range(1, 41)]},
)


@images.handler_for("split", is_start=True)
async def split_batch(context):
    for image in context.initial_data.get("images", []):
        context.actions.dispatch_task(task_type="resize", params={"image": image}, transitions={"success": "collect"})


@images.aggregator_for("collect")
async def collect_results(context):
    sizes = [result.get("data", {}).get("bytes", 0) for result in context.aggregation_results.values()]
    context.state_history["total_bytes"] = sum(sizes)
    context.actions.transition_to("published")


@images.handler_for("published", is_end=True)
async def publish_batch(context):
    context.state_history["published"] = True


imports = _demo(
    "flaky_import",
    "imports",
    "Imports a file; a file named *.corrupt is refused (quarantined for a person).",
    {"file": "customers.csv"},
)


@imports.handler_for("fetch", is_start=True)
async def fetch_file(context):
    context.actions.dispatch_task(
        task_type="import_file", params={"file": context.initial_data.get("file")}, transitions={"success": "imported"}
    )


@imports.handler_for("imported", is_end=True)
async def imported(context):
    context.state_history["imported"] = True


DEMO_BLUEPRINTS = [orders, images, imports]
