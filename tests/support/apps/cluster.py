"""The engine served by the multi-engine tests (``tests/test_multi_engine.py``): one of several
processes sharing one Redis.

Run as its own process::

    REDIS_URL=unix:///tmp/redis.sock python -m avtomatika serve tests/support/apps/cluster.py:engine --port 8080

The storage is built here rather than from ``REDIS_URL`` alone so that the tests can shorten the
leases (``MULTI_LEASE_S``): a killed engine's jobs are then taken over within seconds.

Every handler leaves a mark in Redis before acting: a set per job and state, ``multi:runs:<job id>:
<state>``, gets one member per run of that state's handler (a fresh id, so a command retried after a
lost reply does not count twice). The tests compare these runs with the job's visits.
"""

from __future__ import annotations

import os
import uuid

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.storage.redis import RedisStorage

RUNS_PREFIX = "multi:runs:"
TASK_TYPE = "multi_echo"

storage = RedisStorage(url=os.environ["REDIS_URL"], lease_s=float(os.environ.get("MULTI_LEASE_S", "30")))


async def _mark_run(context) -> None:
    await storage.redis.sadd(f"{RUNS_PREFIX}{context.job_id}:{context.current_state}", uuid.uuid4().hex)


# -- start -> dispatch -> second -> done ------------------------------------------------------------
chain = StateMachineBlueprint("multi_chain", api_version="v1", api_endpoint="/jobs/multi_chain")


@chain.handler_for("start", is_start=True)
async def chain_start(context):
    await _mark_run(context)
    context.actions.transition_to("dispatch")


@chain.handler_for("dispatch")
async def chain_dispatch(context):
    await _mark_run(context)
    context.actions.dispatch_task(
        task_type=TASK_TYPE,
        params=dict(context.initial_data.get("params") or {}),
        transitions={"success": "second"},
        timeout_seconds=float(context.initial_data.get("task_timeout_s") or 10),
    )


@chain.handler_for("second")
async def chain_second(context):
    await _mark_run(context)
    context.actions.transition_to("done")


@chain.handler_for("done", is_end=True)
async def chain_done(context):
    await _mark_run(context)


# -- waits for a human: advanced on one engine, watched on another ---------------------------------
approval = StateMachineBlueprint("multi_approval", api_version="v1", api_endpoint="/jobs/multi_approval")


@approval.handler_for("ask", is_start=True)
async def approval_ask(context):
    context.actions.await_human_approval("test", "go on?", {"go": "approved"})


@approval.handler_for("approved", is_end=True)
async def approval_done(context):
    pass


# -- one long task, cancelled from an engine the worker is not connected to -------------------------
long_task = StateMachineBlueprint("multi_long", api_version="v1", api_endpoint="/jobs/multi_long")


@long_task.handler_for("run", is_start=True)
async def long_run(context):
    context.actions.dispatch_task(
        task_type=context.initial_data.get("task_type") or TASK_TYPE,
        params=dict(context.initial_data.get("params") or {}),
        transitions={"success": "done"},
    )


@long_task.handler_for("done", is_end=True)
async def long_done(context):
    pass


engine = OrchestratorEngine(storage, Config())
for _blueprint in (chain, approval, long_task):
    engine.register_blueprint(_blueprint)
