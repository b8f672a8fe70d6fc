"""Demo blueprints: a condition, a fan-out, and a task that sometimes lands in quarantine."""

from __future__ import annotations

from avtomatika import StateMachineBlueprint

orders = StateMachineBlueprint(
    "order_flow",
    api_version="v1",
    api_endpoint="/jobs/orders",
    description="Routes urgent orders to a fast lane (a .when() condition).",
    input_example={"priority": "urgent", "items": ["book", "pen"]},
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


images = StateMachineBlueprint(
    "image_batch",
    api_version="v1",
    api_endpoint="/jobs/images",
    description="Resizes every image of a batch in parallel, then aggregates.",
    input_example={"images": [f"photo-{n}.jpg" for n in range(1, 41)]},
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


imports = StateMachineBlueprint(
    "flaky_import",
    api_version="v1",
    api_endpoint="/jobs/imports",
    description="Imports a file; a file named *.corrupt is refused (quarantined for a person).",
    input_example={"file": "customers.csv"},
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
