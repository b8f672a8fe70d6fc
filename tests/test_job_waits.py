"""Clients that wait for a job instead of polling: ``GET /api/v1/jobs/{id}?wait_s=N[&until=change]``.

The answer comes as soon as the job ends (or changes), at most ``wait_s`` later with the job as it is
then; a cancel ends the wait; a client that hangs up frees its wait; thousands of waiting clients
cost a bounded number of bytes each, and no engine coroutine, executor slot or storage connection.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest
from support.api import Api, MakeApi

from avtomatika.events import Event, EventBus, EventKind
from avtomatika.models import Job
from avtomatika.runtime.watchers import JobWatcher, Until


async def _waiting(api: Api, count: int) -> None:
    """Until ``count`` clients wait."""
    for _ in range(500):
        if api.engine.watcher.waiting == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{api.engine.watcher.waiting} clients wait, not {count}")


async def test_a_waiting_client_is_answered_when_the_job_ends(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    waiting = asyncio.create_task(api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=30"))
    await _waiting(api, 1)
    assert not waiting.done()
    await api.engine.decide(job_id, "approve")
    status, view = await asyncio.wait_for(waiting, 5)
    assert (status, view["status"], view["current_state"]) == (200, "finished", "shipped")
    assert api.engine.watcher.waiting == 0


async def test_a_wait_ends_after_wait_s_with_the_job_as_it_is(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    await api.wait_job(job_id, "waiting_for_human")
    status, view = await api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=1")
    assert (status, view["status"]) == (200, "waiting_for_human")
    assert api.engine.watcher.waiting == 0


async def test_a_cancel_ends_the_wait(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    waiting = asyncio.create_task(api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=30"))
    await _waiting(api, 1)
    status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert status == 200
    status, view = await asyncio.wait_for(waiting, 5)
    assert view["status"] == "cancelled"


async def test_until_change_answers_at_the_next_status_or_state(make_api: MakeApi) -> None:
    api = await make_api()
    job_id, task = await api.take()
    waiting = asyncio.create_task(api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=30&until=change"))
    await _waiting(api, 1)
    status, _ = await api.result(task, "w1", "failure", error={"code": "PERMANENT_ERROR", "message": "no"})
    assert status == 200
    status, view = await asyncio.wait_for(waiting, 5)
    assert (status, view["status"]) == (200, "quarantined")


async def test_an_ended_job_is_answered_at_once_and_bad_values_are_400(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/simple")
    await api.wait_job(job_id, "finished")
    status, view = await asyncio.wait_for(api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=60"), 2)
    assert (status, view["status"]) == (200, "finished")
    for query, field in (
        ("wait_s=-1", "wait_s"),
        ("wait_s=61", "wait_s"),
        ("wait_s=x", "wait_s"),
        ("until=x", "until"),
    ):
        status, body = await api.client("GET", f"/api/v1/jobs/{job_id}?{query}")
        assert (status, body["field"]) == (400, field), query
    status, _ = await api.client("GET", "/api/v1/jobs/nope?wait_s=5")
    assert status == 404


async def test_a_client_that_hangs_up_frees_its_wait(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    waiting = asyncio.create_task(api.client("GET", f"/api/v1/jobs/{job_id}?wait_s=30"))
    await _waiting(api, 1)
    waiting.cancel()  # the client's request is abandoned: its connection closes
    await asyncio.gather(waiting, return_exceptions=True)
    await _waiting(api, 0)


async def test_a_stopping_engine_answers_its_waiting_clients() -> None:
    watcher = JobWatcher(EventBus())
    job = Job(id="j", blueprint="b", state="s", status="waiting_for_human")

    async def read(job_id: str) -> Job:
        return job

    waiting = asyncio.create_task(watcher.wait(job, 30, Until.TERMINAL, read))
    await asyncio.sleep(0.01)
    watcher.end_waits()
    assert await asyncio.wait_for(waiting, 1) is job


@pytest.mark.parametrize("clients", [2000])
async def test_thousands_of_waiting_clients_cost_a_bounded_amount_each(clients: int) -> None:
    """The waits alone (no HTTP): a future and a set entry each, well under 1 KB, all freed after."""
    bus = EventBus()
    watcher = JobWatcher(bus)
    jobs = [Job(id=f"job-{i}", blueprint="b", state="s", status="waiting_for_human") for i in range(clients)]
    ended: dict[str, Job] = {}

    async def read(job_id: str) -> Any:
        return ended.get(job_id) or next(j for j in jobs if j.id == job_id)

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        waits = [asyncio.create_task(watcher.wait(job, 30, Until.TERMINAL, read)) for job in jobs]
        await asyncio.sleep(0.05)
        assert watcher.waiting == clients
        per_client = (tracemalloc.get_traced_memory()[0] - before) / clients
    finally:
        tracemalloc.stop()
    for job in jobs:
        ended[job.id] = Job(id=job.id, blueprint="b", state="done", status="finished")
        bus.publish(Event(EventKind.JOB_FINISHED, job.id))
    done = await asyncio.gather(*waits)
    assert {job.status for job in done} == {"finished"}
    assert watcher.waiting == 0
    print(f"{clients} waiting clients: {per_client:.0f} B each (task and its coroutine included)")
    assert per_client < 4096
