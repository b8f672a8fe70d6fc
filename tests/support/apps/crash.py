"""The engine of the crash-point harness (``tests/test_crash_points.py``): blueprints that go through
every write path of the engine (steps, results, fan-in, sub-jobs, approvals, retries, timeouts,
operators), served by engine processes sharing one Redis.

Run as its own process (the harness sets ``AVTOMATIKA_CRASH_AT`` on the engine it kills)::

    REDIS_URL=unix:///tmp/redis.sock python -m avtomatika serve tests/support/apps/crash.py:engine --port 8080

``initial_data`` steers each job: ``params`` go to its task (the echo worker's ``outcome``,
``fail_times``, ``sleep_s``...), ``task_type`` names another task type, ``task_timeout_s`` bounds the
task, ``race_s`` and ``race_dir`` make a fan-out's branches answer at their timeout, ``flaky`` makes
the ``work`` handler raise once, and ``engine_error`` makes the engine fail outside the handler on the
first state (its step is quarantined, see JobRunner).
"""

from __future__ import annotations

import os
import random
from typing import Any

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.models import Job
from avtomatika.storage.redis import RedisStorage

TASK_TYPE = "crash_echo"
#: Marks of handlers that raise on their first run (one per job), so the retry runs them again.
RAISED_PREFIX = "crash:raised:"

storage = RedisStorage(url=os.environ["REDIS_URL"], lease_s=float(os.environ.get("MULTI_LEASE_S", "30")))


def _task(context: Any, transitions: dict[str, str], **params: Any) -> dict[str, Any]:
    return {
        "task_type": context.initial_data.get("task_type") or TASK_TYPE,
        "params": {**dict(context.initial_data.get("params") or {}), **params},
        "transitions": transitions,
        "timeout_seconds": float(context.initial_data.get("task_timeout_s") or 10),
    }


# -- start -> work (a task; its handler raises once with "flaky") -> finish ---------------------------
chain = StateMachineBlueprint("crash_chain", api_version="v1", api_endpoint="/jobs/crash_chain")


@chain.handler_for("start", is_start=True)
async def chain_start(context):
    context.actions.transition_to("work")


@chain.handler_for("work")
async def chain_work(context):
    if context.initial_data.get("flaky") and await storage.redis.sadd(f"{RAISED_PREFIX}{context.job_id}", "work"):
        raise RuntimeError("flaky on its first run")
    context.actions.dispatch_task(**_task(context, {"success": "finish"}))


@chain.handler_for("finish", is_end=True)
async def chain_finish(context):
    pass


# -- start -> three branches -> gather (the aggregator notes what it got) -> finish -----------------
fanout = StateMachineBlueprint("crash_fanout", api_version="v1", api_endpoint="/jobs/crash_fanout")


@fanout.handler_for("start", is_start=True)
async def fanout_start(context):
    branches = int(context.initial_data.get("branches") or 3)
    tasks = [_task(context, {"success": "gather"}, branch=i, **_race(context, i)) for i in range(branches)]
    context.actions.dispatch_parallel(tasks=tasks, aggregate_into="gather")


def _race(context: Any, branch: int) -> dict[str, Any]:
    """With ``race_s``: the branch's first attempt answers at its timeout, give or take ``race_s``
    (a file in ``race_dir`` marks the first); the retries answer at once."""
    race_s = float(context.initial_data.get("race_s") or 0)
    if not race_s:
        return {}
    timeout_s = float(context.initial_data.get("task_timeout_s") or 10)
    once = f"{context.initial_data['race_dir']}/{context.job_id}-{branch}"
    return {"sleep_s": timeout_s + random.uniform(-race_s, race_s), "sleep_once_file": once}


@fanout.aggregator_for("gather")
async def fanout_gather(context):
    results = context.aggregation_results or {}
    context.state_history["branches"] = sorted(r["data"]["echo"]["branch"] for r in results.values())
    context.actions.transition_to("finish")


@fanout.handler_for("finish", is_end=True)
async def fanout_finish(context):
    pass


# -- start -> a sub-job (crash_chain's like) -> finish ----------------------------------------------
parent = StateMachineBlueprint("crash_parent", api_version="v1", api_endpoint="/jobs/crash_parent")


@parent.handler_for("start", is_start=True)
async def parent_start(context):
    child = {
        "params": context.initial_data.get("params") or {},
        "task_timeout_s": context.initial_data.get("task_timeout_s"),
    }
    context.actions.run_blueprint("crash_child", child, {"success": "finish", "failure": "finish"})


@parent.handler_for("finish", is_end=True)
async def parent_finish(context):
    pass


child = StateMachineBlueprint("crash_child", api_version="v1", api_endpoint="/jobs/crash_child")


@child.handler_for("start", is_start=True)
async def child_start(context):
    context.actions.dispatch_task(**_task(context, {"success": "finish"}))


@child.handler_for("finish", is_end=True)
async def child_finish(context):
    pass


# -- ask (a person decides) -> finish --------------------------------------------------------------
approval = StateMachineBlueprint("crash_approval", api_version="v1", api_endpoint="/jobs/crash_approval")


@approval.handler_for("ask", is_start=True)
async def approval_ask(context):
    context.actions.await_human_approval("harness", "go on?", {"go": "finish"})


@approval.handler_for("finish", is_end=True)
async def approval_finish(context):
    pass


engine = OrchestratorEngine(storage, Config())
for _blueprint in (chain, fanout, parent, child, approval):
    engine.register_blueprint(_blueprint)

_run_handler = engine.runner.run_handler


async def _run_handler_or_fail(job: Job, **options: Any) -> Any:
    """An engine failure outside the handler (as a storage error would be), on a job that asks for it."""
    if job.initial_data.get("engine_error") and job.state == "start":
        raise RuntimeError("an engine error outside the handler, injected by the crash harness")
    return await _run_handler(job, **options)


engine.runner.run_handler = _run_handler_or_fail  # type: ignore[method-assign]
