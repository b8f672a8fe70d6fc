"""The engine served by the benchmarks, in a process of its own::

    python -m avtomatika serve benchmarks.app:engine --host 127.0.0.1 --port 8080

Storage: in memory, or Redis when ``REDIS_URL`` is set (``RedisStorage(url=...)``). The rest of the
configuration comes from the environment (``Config()``), as for any served engine.

Blueprints (one per workload of ``python -m benchmarks``):

- ``bench_chain`` (W1): start -> s1 -> s2 -> s3 -> end, no worker.
- ``bench_echo`` (W2): start dispatches one ``echo`` task -> end. W4 uses it too, with a
  ``task_type`` no worker serves, so its jobs wait.
- ``bench_fanout`` (W3): start dispatches ``count`` ``echo`` tasks, one aggregator, then end.
"""

from __future__ import annotations

import os

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.storage import MemoryStorage, Storage


def _storage() -> Storage:
    url = os.environ.get("REDIS_URL")
    if not url:
        return MemoryStorage()
    from avtomatika.storage import RedisStorage  # type: ignore[attr-defined]

    return RedisStorage(url=url)  # type: ignore[no-any-return]


# -- W1: a chain of transitions -------------------------------------------------------------------
chain = StateMachineBlueprint("bench_chain", api_version="v1", api_endpoint="/jobs/bench_chain")


@chain.handler_for("start", is_start=True)
async def chain_start(context):
    context.actions.transition_to("s1")


@chain.handler_for("s1")
async def chain_s1(context):
    context.actions.transition_to("s2")


@chain.handler_for("s2")
async def chain_s2(context):
    context.actions.transition_to("s3")


@chain.handler_for("s3")
async def chain_s3(context):
    context.actions.transition_to("end")


@chain.handler_for("end", is_end=True)
async def chain_end(context):
    pass


# -- W2 / W4: one task ----------------------------------------------------------------------------
echo = StateMachineBlueprint("bench_echo", api_version="v1", api_endpoint="/jobs/bench_echo")


@echo.handler_for("start", is_start=True)
async def echo_start(context):
    context.actions.dispatch_task(
        task_type=context.initial_data.get("task_type", "echo"),
        params={"n": context.initial_data.get("n", 0)},
        transitions={"success": "end"},
    )


@echo.handler_for("end", is_end=True)
async def echo_end(context):
    pass


# -- W3: fan-out and fan-in -----------------------------------------------------------------------
fanout = StateMachineBlueprint("bench_fanout", api_version="v1", api_endpoint="/jobs/bench_fanout")


@fanout.handler_for("start", is_start=True)
async def fanout_start(context):
    for index in range(int(context.initial_data["count"])):
        context.actions.dispatch_task(task_type="echo", params={"index": index}, transitions={"success": "gather"})


@fanout.aggregator_for("gather")
async def fanout_gather(context):
    context.state_history["results"] = len(context.aggregation_results)
    context.actions.transition_to("end")


@fanout.handler_for("end", is_end=True)
async def fanout_end(context):
    pass


engine = OrchestratorEngine(_storage(), Config())
for _blueprint in (chain, echo, fanout):
    engine.register_blueprint(_blueprint)
