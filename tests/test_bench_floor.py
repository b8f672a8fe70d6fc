"""The floor (``benchmarks.floor``): the harness's requests answered by aiohttp alone, no engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.__main__ import floor_multiple, table
from benchmarks.floor import application
from benchmarks.workloads import WORKLOADS, Options


async def test_a_chain_job_is_finished_when_created(aiohttp_client: Any) -> None:
    http = await aiohttp_client(application())
    created = await http.post("/api/v1/jobs/bench_chain", json={"n": 1})
    assert created.status == 202
    job_id = (await created.json())["job_id"]
    answer = await http.get(f"/api/v1/jobs/{job_id}")
    assert (await answer.json())["status"] == "finished"
    assert (await http.get("/api/v1/jobs/nope")).status == 404


async def test_a_fanout_job_finishes_with_its_last_result(aiohttp_client: Any) -> None:
    http = await aiohttp_client(application())
    registered = await http.post("/_worker/workers/register", json={"worker_id": "w1"})
    assert registered.status == 200
    assert (await (await http.get("/api/v1/workers")).json())["workers"] == [{"worker_id": "w1"}]
    job_id = (await (await http.post("/api/v1/jobs/bench_fanout", json={"count": 3})).json())["job_id"]
    for left in (2, 1, 0):
        task = await (await http.get("/_worker/workers/w1/tasks/next")).json()
        assert (task["job_id"], task["type"]) == (job_id, "echo")
        await http.post("/_worker/tasks/result", json={"job_id": job_id, "task_id": task["task_id"]})
        status = (await (await http.get(f"/api/v1/jobs/{job_id}")).json())["status"]
        assert status == ("finished" if left == 0 else "waiting_for_worker")


async def test_a_long_poll_is_answered_by_the_next_task(aiohttp_client: Any) -> None:
    http = await aiohttp_client(application())
    poll = asyncio.ensure_future(http.get("/_worker/workers/w1/tasks/next"))
    await asyncio.sleep(0.05)
    assert not poll.done()
    job_id = (await (await http.post("/api/v1/jobs/bench_echo", json={})).json())["job_id"]
    task = await (await poll).json()
    assert task["job_id"] == job_id


async def test_a_job_for_a_task_type_no_worker_serves_waits(aiohttp_client: Any) -> None:
    http = await aiohttp_client(application())
    for _ in range(3):
        await http.post("/api/v1/jobs/bench_echo", json={"task_type": "never"})
    await http.post("/api/v1/jobs/bench_chain", json={})
    dashboard = await (await http.get("/api/v1/dashboard")).json()
    assert dashboard["jobs"]["by_status"] == {"waiting_for_worker": 3, "finished": 1}


@pytest.mark.parametrize("workload", ["W1", "W1W", "W2", "W3", "W4"])
async def test_the_harness_runs_every_workload_against_the_floor(workload: str) -> None:
    options = Options(
        jobs=40,
        clients=4,
        workers=1,
        worker_concurrency=4,
        fanout=20,
        repeats=2,
        waiting_jobs=200,
        warmup=4,
        timeout_s=60.0,
    )
    result = await WORKLOADS[workload]("floor", options)
    assert (result.status, result.errors) == ("ok", 0), result.note
    assert result.jobs == {"W1": 40, "W1W": 40, "W2": 40, "W3": 2, "W4": 200}[workload]


async def test_the_engine_is_measured_against_the_floor_of_the_same_run() -> None:
    """Waiting clients cost two requests a job; CPU per job is a multiple of the floor's; with Redis,
    commands per job, redis-server's memory per waiting job and the create rate are read."""
    options = Options(jobs=300, clients=8, waiting_jobs=100, warmup=3, timeout_s=60.0)  # CPU past clock ticks
    floor = await WORKLOADS["W1W"]("floor", options)
    engine = await WORKLOADS["W1W"]("redis", options)
    for result in (floor, engine):
        assert (result.status, result.errors, result.jobs) == ("ok", 0, 300), result.note
        assert result.requests == 2 * result.jobs  # a create and one GET ?wait_s= a job
    multiple = floor_multiple(engine, [floor, engine])
    assert multiple is not None
    assert multiple > 0
    assert engine.redis_commands_per_job is not None
    assert engine.redis_commands_per_job > 0
    waiting = await WORKLOADS["W4"]("redis", options)
    assert waiting.status == "ok", waiting.note
    assert waiting.create_rate is not None
    assert waiting.redis_memory_per_waiting_job_b is not None
    assert "x floor" in table([floor, engine, waiting])
