"""A breakpoint on a live cluster: two engine processes on one redis-server, real echo workers.

A breakpoint set through one engine holds a job created through the other before its state's
handler runs (the task it would dispatch is not sent); the job's context is edited and continued
through the first, and the worker's answer shows the edit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.cluster import Cluster, Engine, running_cluster
from support.postgres_server import PostgresServer

pytestmark = [pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, session: aiohttp.ClientSession) -> Iterator[Cluster]:
    with running_cluster(tmp_path, postgres, session) as running:
        yield running


async def _call(cluster: Cluster, engine: Engine, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with cluster.session.request(method, engine.url + path, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.timeout(90)
async def test_a_breakpoint_holds_a_job_on_any_engine_and_continue_takes_the_edit(cluster: Cluster) -> None:
    one, two = cluster.engines
    for engine in cluster.engines:
        cluster.start_worker(engine)
    await cluster.wait_workers()
    status, breakpoint = await _call(
        cluster, one, "POST", "/api/v1/breakpoints", {"blueprint": "multi_chain", "state": "dispatch"}
    )
    assert status == 201, breakpoint
    status, created = await _call(cluster, two, "POST", "/api/v1/jobs/multi_chain", {"params": {"size": 10}})
    assert status == 202, created
    job_id = created["job_id"]
    held = await cluster.wait_status(one, job_id, "held")
    assert held["current_state"] == "dispatch"
    assert held["task_count"] == 0  # the handler that dispatches has not run
    await asyncio.sleep(1.0)  # workers polling on both engines get nothing: the job stays held
    assert (await cluster.get(f"/api/v1/jobs/{job_id}", two))["status"] == "held"
    assert (await cluster.get("/api/v1/breakpoints", two))["breakpoints"][0]["id"] == breakpoint["id"]

    edited = {"params": {"size": 42}}
    status, body = await _call(cluster, one, "POST", f"/api/v1/jobs/{job_id}/continue", {"initial_data": edited})
    assert (status, body["status"]) == (200, "running"), body
    finished = await cluster.wait_status(two, job_id, "finished")
    assert finished["initial_data"] == edited
    assert finished["state_history"]["echo"] == {"size": 42}  # what the worker was sent
    assert (await cluster.handler_runs([job_id], ("dispatch",)))[(job_id, "dispatch")] == 1

    # Removed through the other engine: a job held at it then is continued.
    second = (await _call(cluster, one, "POST", "/api/v1/jobs/multi_chain", {"params": {"n": 2}}))[1]["job_id"]
    await cluster.wait_status(two, second, "held")
    status, removed = await _call(cluster, two, "DELETE", f"/api/v1/breakpoints/{breakpoint['id']}")
    assert (status, removed["continued"]) == (200, [second]), removed
    await cluster.wait_status(one, second, "finished")
    counts = await cluster.check_once_per_visit([job_id, second])
    assert counts["history_entries"] == 8
