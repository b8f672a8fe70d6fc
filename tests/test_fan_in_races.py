"""Races across two engines on one redis-server, with real echo workers and history in PostgreSQL.

- Fan-out branches answered right at their timeout (±100 ms): the result races the timeout, the
  withdrawal and the retry, on either engine; every aggregator gets exactly one result per branch.
- The same result posted to both engines at once: one takes it, the other says it is a duplicate
  (200), never 409.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.cluster import WORKER_TOKEN, Cluster, running_cluster
from support.crash_harness import CRASH_APP, TASK_TYPE, Harness
from support.postgres_server import PostgresServer

pytestmark = [pytest.mark.slow]

#: Fan-out jobs in the race, and branches each.
JOBS, BRANCHES = 100, 4
#: Result posts raced over both engines.
PAIRS = 30


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, session: aiohttp.ClientSession) -> Iterator[Cluster]:
    with running_cluster(tmp_path, postgres, session, engines=0) as running:
        for _ in range(2):
            running.start_engine(CRASH_APP)
        running.wait_engines()
        yield running


async def _create(cluster: Cluster, blueprint: str, count: int, **data: object) -> list[str]:
    engines = cluster.live_engines()

    async def create(index: int) -> str:
        url = f"{engines[index % 2].url}/api/v1/jobs/{blueprint}"
        async with cluster.session.post(url, json=data) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 202, body
            return str(body["job_id"])

    return list(await asyncio.gather(*(create(i) for i in range(count))))


@pytest.mark.timeout(150)
async def test_branches_answered_at_their_timeout_reach_each_aggregator_once(cluster: Cluster, tmp_path: Path) -> None:
    for engine in cluster.engines:
        for _ in range(2):
            cluster.start_worker(engine, task_types=TASK_TYPE)
    await cluster.wait_workers()
    race_dir = tmp_path / "race"
    race_dir.mkdir()
    job_ids = await _create(
        cluster, "crash_fanout", JOBS, branches=BRANCHES, task_timeout_s=1.0, race_s=0.1, race_dir=str(race_dir)
    )
    statuses = await cluster.wait_terminal(job_ids, timeout_s=120)
    assert set(statuses.values()) == {"finished"}
    jobs = await cluster.redis_jobs(job_ids)
    wrong = {job["id"]: job["state_history"].get("branches") for job in jobs}
    assert {job_id: got for job_id, got in wrong.items() if got != list(range(BRANCHES))} == {}
    harness = Harness(cluster)
    counts = await harness.check_histories(dict(zip(job_ids, jobs, strict=True)), statuses)
    retried = sum(log.count("result rejected") for log in _worker_logs(cluster))
    print(f"{JOBS} fan-outs of {BRANCHES}: {counts}, {retried} late results refused")
    assert retried > 0, "no result lost its race to the timeout: nothing was tested"


def _worker_logs(cluster: Cluster) -> list[str]:
    return [worker.log_path.read_text(errors="replace") for worker in cluster.workers]


@pytest.mark.timeout(90)
async def test_the_same_result_posted_to_two_engines_at_once_is_taken_once(cluster: Cluster) -> None:
    first, second = cluster.engines
    headers = {"X-Worker-Token": WORKER_TOKEN}
    register = {"worker_id": "racer", "supported_tasks": [TASK_TYPE], "max_concurrent_tasks": PAIRS}
    async with cluster.session.post(f"{first.url}/_worker/workers/register", json=register, headers=headers) as resp:
        assert resp.status == 200
    job_ids = await _create(cluster, "crash_chain", PAIRS)
    tasks = []
    while len(tasks) < PAIRS:
        async with cluster.session.get(f"{first.url}/_worker/workers/racer/tasks/next", headers=headers) as resp:
            if resp.status == 200:
                tasks.append(await resp.json())

    async def post(engine_url: str, task: dict[str, object]) -> tuple[int, str]:
        body = {
            "job_id": task["job_id"],
            "task_id": task["task_id"],
            "worker_id": "racer",
            "result": {"status": "success", "data": {}},
        }
        async with cluster.session.post(f"{engine_url}/_worker/tasks/result", json=body, headers=headers) as resp:
            return resp.status, (await resp.json(content_type=None)).get("status", "")

    answers = await asyncio.gather(*(post(url, t) for t in tasks for url in (first.url, second.url)))
    assert {status for status, _ in answers} == {200}, answers
    kinds = sorted(kind for _, kind in answers)
    assert kinds == sorted(["result_accepted_success", "result_accepted_duplicate"] * PAIRS)
    statuses = await cluster.wait_terminal(job_ids, timeout_s=30)
    assert set(statuses.values()) == {"finished"}
