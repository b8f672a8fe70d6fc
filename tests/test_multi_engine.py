"""Several engine processes on one Redis (issue 3): real redis-server, engines, workers, PostgreSQL.

The process tests (marked ``slow``) run two ``python -m avtomatika serve tests/support/apps/cluster.py``
engines on one redis-server, with two echo workers, each pointed at one engine, and one PostgreSQL
database both engines write history to. Jobs (start -> dispatch -> second -> done) are created over
both engines' APIs in turn; each handler leaves a mark in Redis, so the tests count the handlers' runs
as well as the ``state_entered`` lines in history, against the visits the job document counts.

The first tests need no processes: the step lease and the worker command relay, in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster, running_cluster
from support.postgres_server import PostgresServer

from avtomatika.server.channels import WorkerChannels
from avtomatika.storage import MemoryStorage
from avtomatika.storage.redis import RedisStorage

JOBS = 300


# -- the step lease ---------------------------------------------------------------------------------
async def test_memory_storage_grants_every_step_lease() -> None:
    storage = MemoryStorage()
    assert await storage.lease_job("j", "a")
    assert await storage.lease_job("j", "b")  # one process: the runner keeps a job's steps apart itself
    await storage.release_job_lease("j", "a")


async def test_step_lease_is_held_by_one_holder_until_released(redis_client: aioredis.Redis) -> None:
    one, other = RedisStorage(redis_client, lease_s=0.6), RedisStorage(redis_client, lease_s=0.6)
    await one.connect()
    await other.connect()
    try:
        assert await one.lease_job("job-1", "holder-a")
        assert await one.lease_job("job-1", "holder-a")  # the same holder again (a retried SET)
        assert not await other.lease_job("job-1", "holder-b")
        assert await other.lease_job("job-2", "holder-b")  # other jobs are free
        await asyncio.sleep(1.5)  # past the lease: renewed in the background while held
        assert not await other.lease_job("job-1", "holder-b")
        await other.release_job_lease("job-1", "holder-b")  # not its holder: nothing happens
        assert not await other.lease_job("job-1", "holder-b")
        await one.release_job_lease("job-1", "holder-a")
        assert await other.lease_job("job-1", "holder-b")
    finally:
        await one.close()
        await other.close()


async def test_step_lease_of_a_process_that_stops_renewing_expires(redis_client: aioredis.Redis) -> None:
    dead, alive = RedisStorage(redis_client, lease_s=0.3), RedisStorage(redis_client, lease_s=0.3)
    await alive.connect()
    try:
        assert await dead.lease_job("job-1", "dead-holder")
        await dead._runnable.stop()  # its renewer stops, as when the process is killed
        assert not await alive.lease_job("job-1", "alive-holder")
        await asyncio.sleep(0.5)
        assert await alive.lease_job("job-1", "alive-holder")
    finally:
        await alive.close()


# -- worker commands across engines -----------------------------------------------------------------
class _FakeSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_cancel_task_reaches_a_worker_connected_to_another_engine(redis_client: aioredis.Redis) -> None:
    storage = RedisStorage(redis_client)
    here, there = WorkerChannels(), WorkerChannels()
    socket, bystander = _FakeSocket(), _FakeSocket()
    there.attach("w1", socket)  # type: ignore[arg-type]
    there.attach("w2", bystander)  # type: ignore[arg-type]
    relays = [asyncio.create_task(c.run_relay(storage.worker_command_transport())) for c in (here, there)]
    try:
        await asyncio.sleep(0.2)  # subscribed
        assert await here.cancel_task("w1", "job-1", "task-1")
        deadline = time.monotonic() + 2
        while not socket.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert socket.sent == [
            {"command": "cancel_task", "type": "cancel_task", "task_id": "task-1", "job_id": "job-1"}
        ]
        assert bystander.sent == []
        assert there.relayed_in == 1
        # The engine holding the socket delivers it itself, without a round trip through Redis.
        assert await there.cancel_task("w1", "job-1", "task-2")
        await asyncio.sleep(0.2)
        assert [m["task_id"] for m in socket.sent] == ["task-1", "task-2"]
    finally:
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


async def test_without_a_relay_an_unknown_worker_gets_nothing() -> None:
    assert not await WorkerChannels().cancel_task("nobody", "job-1", "task-1")


# -- real processes ---------------------------------------------------------------------------------
@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, session: aiohttp.ClientSession) -> Iterator[Cluster]:
    with running_cluster(tmp_path, postgres, session) as running:
        yield running


@pytest.fixture
def aof_cluster(tmp_path: Path, postgres: PostgresServer, session: aiohttp.ClientSession) -> Iterator[Cluster]:
    options = ("--appendonly", "yes", "--appendfsync", "always")
    with running_cluster(tmp_path, postgres, session, redis_options=options) as running:
        yield running


async def _start_workers(cluster: Cluster) -> None:
    for engine in cluster.engines:
        cluster.start_worker(engine)
    await cluster.wait_workers()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_300_jobs_over_two_engines_each_state_entered_once_per_visit(cluster: Cluster) -> None:
    await _start_workers(cluster)
    job_ids = await cluster.create_jobs(JOBS, params={"sleep_s": 0.01})
    statuses = await cluster.wait_terminal(job_ids, timeout_s=60)
    assert set(statuses.values()) == {"finished"}
    counts = await cluster.check_once_per_visit(job_ids)
    assert counts["history_entries"] == JOBS * 4


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_an_engine_killed_mid_run_loses_nothing_and_repeats_nothing(cluster: Cluster) -> None:
    await _start_workers(cluster)
    victim, survivor = cluster.engines
    # Tasks that take a while, so that plenty of jobs are in flight on the victim when it dies.
    job_ids = await cluster.create_jobs(JOBS, params={"sleep_s": 0.3}, task_timeout_s=4)
    await asyncio.sleep(1.0)
    finished_before = sum(1 for s in await cluster.redis_statuses(job_ids) if s == "finished")
    cluster.kill_engine(victim)
    # The victim's worker lost its engine: it is started again on the survivor (same worker id).
    for worker in [w for w in cluster.workers if w.engine is victim]:
        cluster.replace_worker(worker, survivor)
    statuses = await cluster.wait_terminal(job_ids, timeout_s=80)
    assert set(statuses.values()) == {"finished"}
    assert finished_before < JOBS, "every job finished before the kill: nothing was tested"
    # History: every line once (the victim's unwritten lines waited in Redis's feed for the survivor).
    # A handler the victim was running when it died may run again on the survivor; nothing else repeats.
    in_flight = cluster.taken_over(survivor)
    counts = await cluster.check_once_per_visit(job_ids, in_flight=in_flight)
    print(f"killed mid-run with {JOBS - finished_before} jobs unfinished, {len(in_flight)} in flight: {counts}")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_redis_with_appendonly_restarted_mid_run_all_jobs_finish(aof_cluster: Cluster) -> None:
    cluster = aof_cluster
    await _start_workers(cluster)
    job_ids = await cluster.create_jobs(JOBS, params={"sleep_s": 0.2})
    await asyncio.sleep(1.0)
    finished_before = sum(1 for s in await cluster.redis_statuses(job_ids) if s == "finished")
    cluster.redis_stop(kill=True)
    await asyncio.sleep(1.0)
    cluster.redis_start()
    statuses = await cluster.wait_terminal(job_ids, timeout_s=80)
    assert set(statuses.values()) == {"finished"}
    assert finished_before < JOBS, "every job finished before the restart: nothing was tested"
    counts = await cluster.check_once_per_visit(job_ids)
    print(f"Redis killed and restarted with {JOBS - finished_before} jobs unfinished: {counts}")


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_change_made_on_one_engine_reaches_a_subscriber_on_the_other_within_a_second(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    one, other = cluster.engines
    async with session.post(f"{one.url}/api/v1/jobs/multi_approval", json={}) as resp:
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["job_id"]
    deadline = time.monotonic() + 10
    while (await cluster.get(f"/api/v1/jobs/{job_id}", one))["status"] != "waiting_for_human":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with session.get(f"{other.url}/studio/live/jobs/{job_id}") as stream:
        assert stream.status == 200, await stream.text()
        events = _sse_events(stream)
        assert 'data-status="waiting_for_human"' in await _next_event(events, "job-header", "")
        async with session.post(f"{one.url}/_public/webhooks/approval/{job_id}", json={"decision": "go"}) as resp:
            assert resp.status == 200, await resp.text()
        decided_at = time.monotonic()
        header = await _next_event(events, "job-header", 'data-status="finished"', timeout_s=5)
        seen_after_s = time.monotonic() - decided_at
    assert 'data-state="approved"' in header
    assert seen_after_s < 1.0, f"engine {other.name} showed the change after {seen_after_s:.3f} s"


async def _sse_events(stream: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    name, data = "", []
    async for raw in stream.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if name or data:
                yield name, "\n".join(data)
            name, data = "", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def _next_event(events: AsyncIterator[tuple[str, str]], name: str, needle: str, timeout_s: float = 5) -> str:
    async with asyncio.timeout(timeout_s):
        async for kind, data in events:
            if kind == name and needle in data:
                return data
    raise AssertionError(f"the stream ended before a {name} event with {needle!r}")


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_cancel_reaches_a_worker_whose_socket_is_open_on_another_engine(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    one, other = cluster.engines
    worker = cluster.start_worker(one)
    await cluster.wait_workers()
    await _wait_log(worker.log_path, "websocket connected")
    body = {"params": {"sleep_s": 30}}
    async with session.post(f"{other.url}/api/v1/jobs/multi_long", json=body) as resp:
        job_id = (await resp.json())["job_id"]
    await _wait_log(worker.log_path, f"task received job={job_id}")
    async with session.post(f"{other.url}/api/v1/jobs/{job_id}/cancel") as resp:
        assert resp.status == 200, await resp.text()
    log = await _wait_log(worker.log_path, "cancel_task received")
    assert "running=True" in log.split("cancel_task received", 1)[1].splitlines()[0]


async def _wait_log(path: Path, needle: str, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not in {path.name}:\n{text[-3000:]}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_health_names_redis_while_it_is_down_and_recovers(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    engine = cluster.engines[0]
    assert (await _health(session, engine.url))[0] == 200
    cluster.redis_stop(kill=False)
    status, body = await _health(session, engine.url)
    assert status == 503, body
    assert "Redis" in orjson.dumps(body).decode(), body
    cluster.redis_start()
    deadline = time.monotonic() + 15
    while (answer := await _health(session, engine.url))[0] != 200:
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.2)
    # And it works again: a job goes through after the restart.
    await _start_workers(cluster)
    job_ids = await cluster.create_jobs(4)
    assert set((await cluster.wait_terminal(job_ids, timeout_s=20)).values()) == {"finished"}


async def _health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/_public/health") as resp:
        return resp.status, await resp.json(content_type=None)
