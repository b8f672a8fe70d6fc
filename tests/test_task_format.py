"""The original's task format: ``dispatch_parallel(tasks=[{"type": ...}])``, run over real HTTP."""

from __future__ import annotations

from support.api import MakeApi

from avtomatika import StateMachineBlueprint

thumbnails = StateMachineBlueprint("thumbnails", api_version="v1", api_endpoint="/jobs/thumbnails")


@thumbnails.handler_for("split", is_start=True)
async def split(context):
    context.actions.dispatch_parallel(
        tasks=[{"type": "resize", "params": {"size": size}} for size in context.initial_data["sizes"]],
        aggregate_into="gather",
    )


@thumbnails.aggregator_for("gather")
async def gather(context):
    context.state_history["sizes"] = sorted(r["data"]["size"] for r in context.aggregation_results.values())
    context.actions.transition_to("done")


@thumbnails.handler_for("done", is_end=True)
async def done(context):
    pass


async def test_tasks_given_by_type_reach_the_worker_and_the_job_finishes(make_api: MakeApi) -> None:
    api = await make_api(thumbnails)
    await api.register("resizer", ["resize"])
    job_id = await api.create("/api/v1/jobs/thumbnails", {"sizes": [64, 128]})
    tasks = [await api.next_task("resizer") for _ in range(2)]
    assert [t["type"] for t in tasks] == ["resize", "resize"]
    for task in tasks:
        status, body = await api.result(task, "resizer", data={"size": task["params"]["size"]})
        assert status == 200, body
    view = await api.wait_job(job_id, "finished")
    assert view["state_history"]["sizes"] == [64, 128]
