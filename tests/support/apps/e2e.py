"""The engine served by the end-to-end worker tests (``tests/test_e2e_workers.py``).

Run as its own process::

    python -m avtomatika serve tests/support/apps/e2e.py:engine --host 127.0.0.1 --port 8080

Configuration comes from the environment (``Config()``). Each scenario picks its behaviour through
the job's ``initial_data``: ``task_type`` (each test's workers serve a task type of their own, so tests
sharing this engine never take each other's tasks) and ``params``, handed as they are to the worker,
whose ``outcome`` / ``fail_times`` / ``sleep_s`` / ``crash_once_file`` drive what it answers.
"""

from __future__ import annotations

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.storage import MemoryStorage

#: The timeout of ``e2e_crash``'s task: a worker that dies with it is replaced after this long.
CRASH_TASK_TIMEOUT_S = 2.0

# -- one task, its result decides ------------------------------------------------------------------
single = StateMachineBlueprint("e2e_single", api_version="v1", api_endpoint="/jobs/e2e_single")


@single.handler_for("dispatch", is_start=True)
async def single_dispatch(context):
    context.actions.dispatch_task(
        task_type=context.initial_data["task_type"],
        params=dict(context.initial_data.get("params") or {}),
        transitions={"success": "done"},
    )


@single.handler_for("done", is_end=True)
async def single_done(context):
    context.state_history["done"] = True


# -- one task with a short timeout, for workers that die holding it --------------------------------
crash = StateMachineBlueprint("e2e_crash", api_version="v1", api_endpoint="/jobs/e2e_crash")


@crash.handler_for("dispatch", is_start=True)
async def crash_dispatch(context):
    context.actions.dispatch_task(
        task_type=context.initial_data["task_type"],
        params=dict(context.initial_data.get("params") or {}),
        transitions={"success": "done"},
        timeout_seconds=CRASH_TASK_TIMEOUT_S,
    )


@crash.handler_for("done", is_end=True)
async def crash_done(context):
    context.state_history["done"] = True


# -- fan-out to many tasks, fan-in in one aggregator -----------------------------------------------
fanout = StateMachineBlueprint("e2e_fanout", api_version="v1", api_endpoint="/jobs/e2e_fanout")


@fanout.handler_for("fan_out", is_start=True)
async def fanout_dispatch(context):
    params = dict(context.initial_data.get("params") or {})
    for index in range(int(context.initial_data["count"])):
        context.actions.dispatch_task(
            task_type=context.initial_data["task_type"],
            params={**params, "index": index},
            transitions={"success": "aggregate"},
        )


@fanout.aggregator_for("aggregate")
async def fanout_aggregate(context):
    """Record what arrived; ``aggregator_runs`` counts the runs (it must end at 1)."""
    history = context.state_history
    history["aggregator_runs"] = int(history.get("aggregator_runs") or 0) + 1
    results = context.aggregation_results
    datas = [r.get("data") or {} for r in results.values()]
    history["result_count"] = len(results)
    history["result_statuses"] = sorted({str(r.get("status")) for r in results.values()})
    history["indices"] = sorted(d["echo"]["index"] for d in datas if "echo" in d)
    history["worker_ids"] = sorted({str(d.get("worker_id")) for d in datas})
    history["distinct_workers"] = len(history["worker_ids"])
    context.actions.transition_to("done")


@fanout.handler_for("done", is_end=True)
async def fanout_done(context):
    pass


BLUEPRINTS = [single, crash, fanout]

engine = OrchestratorEngine(MemoryStorage(), Config())
for _blueprint in BLUEPRINTS:
    engine.register_blueprint(_blueprint)
