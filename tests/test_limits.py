"""Limits: params and data sizes, open long polls and streams, rate limits with Retry-After.

A worker polling back to back is never locked out, whatever the rate limits (the original's bug).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from support.api import CLIENT_HEADER, WORKER_HEADER, Api
from support.blueprints import API_BLUEPRINTS

from avtomatika import Config, OrchestratorEngine
from avtomatika.api.app import create_app
from avtomatika.api.limits import UNLIMITED_RATES, Limits, TokenBuckets
from avtomatika.storage import MemoryStorage

ALICE, BOB = "alice-limits", "bob-limits"


@pytest.fixture
async def serve(aiohttp_client, tmp_path):
    """``await serve(limits, **config)``: the API of a started engine with ``limits``; tokens alice and bob."""
    engines: list[OrchestratorEngine] = []
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[alice]\ntoken = "{ALICE}"\n[bob]\ntoken = "{BOB}"\n')

    async def make(limits: Limits, *, routes: Any = None, **settings: Any) -> Api:
        config = {
            "EXECUTOR_CONCURRENCY": 2,
            "WORKER_POLL_TIMEOUT_SECONDS": 0.01,
            "RETRY_BACKOFF_BASE_SECONDS": 0.01,
            "CLIENTS_CONFIG_PATH": clients,
            "CLIENT_TOKEN": None,
            "GLOBAL_WORKER_TOKEN": "global",
            "LOG_FORMAT": "text",
            **settings,
        }
        engine = OrchestratorEngine(MemoryStorage(), Config(**config))
        for blueprint in API_BLUEPRINTS:
            engine.register_blueprint(blueprint)
        await engine.start(http=False)
        engines.append(engine)
        app = create_app(engine, limits=limits)
        if routes is not None:
            routes(app)
        return Api(await aiohttp_client(app), engine, ALICE, "global")

    yield make
    for engine in engines:
        await engine.stop()


def unlimited(**changes: Any) -> Limits:
    return replace(Limits.from_config(Config()), rates=dict(UNLIMITED_RATES), **changes)


# -- sizes -----------------------------------------------------------------------------------------
async def test_initial_data_over_the_limit_is_413_naming_it(serve):
    api = await serve(unlimited(max_params_bytes=1000))
    status, body = await api.client("POST", "/api/v1/jobs/simple", json={"blob": "x" * 1000})
    assert status == 413
    assert body["field"] == "initial_data"
    assert "1000" in body["error"]
    assert await api.engine.list_jobs() == []
    await api.create("/api/v1/jobs/simple", {"blob": "x" * 900})


async def test_release_params_over_the_limit_are_413_and_change_nothing(serve):
    api = await serve(unlimited(max_params_bytes=1000))
    job_id, _ = await api.quarantined()
    before = await api.engine_job(job_id)
    status, body = await api.client("POST", f"/api/v1/jobs/{job_id}/release", json={"params": {"p": "y" * 2000}})
    assert (status, body["field"]) == (413, "params")
    assert await api.engine_job(job_id) == before


async def test_result_data_over_the_limit_is_413_and_changes_nothing(serve):
    api = await serve(unlimited(max_result_data_bytes=2000))
    job_id, task = await api.take()
    before = await api.engine_job(job_id)
    status, body = await api.result(task, "w1", data={"d": "z" * 3000})
    assert (status, body["field"]) == (413, "result.data")
    assert await api.engine_job(job_id) == before
    assert (await api.result(task, "w1", data={"d": "small"}))[0] == 200
    await api.wait_job(job_id, "finished")


# -- rates -----------------------------------------------------------------------------------------
def test_token_bucket_refills_at_its_rate():
    now = [100.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.take("k", (2.0, 3)) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", (2.0, 3)) == pytest.approx(0.5)
    assert buckets.take("other", (2.0, 3)) == 0.0
    now[0] += 0.5
    assert buckets.take("k", (2.0, 3)) == 0.0
    assert buckets.take("k", (0.0, 0)) == 0.0  # rate 0: unlimited


async def test_rate_limit_answers_429_with_retry_after_per_client(serve):
    api = await serve(unlimited().with_rates(client_read=(0.5, 3)))
    for _ in range(3):
        assert (await api.client("GET", "/api/v1/jobs"))[0] == 200
    async with api.http.get("/api/v1/jobs", headers={CLIENT_HEADER: ALICE}) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert "rate limit" in (await response.json())["error"]
    assert (await api.client("GET", "/api/v1/jobs", token=BOB))[0] == 200  # another client has its own
    assert (await api.client("POST", "/api/v1/jobs/simple", json={}))[0] == 202  # writes are another class


async def test_unauthenticated_calls_are_limited_by_address_without_touching_clients(serve):
    api = await serve(unlimited().with_rates(unauthenticated=(0.1, 5)))
    statuses = [(await api.client("GET", "/api/v1/jobs", token=f"guess-{i}"))[0] for i in range(8)]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert (await api.client("GET", "/api/v1/jobs"))[0] == 200


async def test_a_worker_polling_back_to_back_is_never_locked_out(serve):
    api = await serve(unlimited().with_rates(worker=(0.1, 3)), WORKER_POLL_TIMEOUT_SECONDS=0.005)
    await api.register("w1")
    statuses = [(await api.worker("GET", "/_worker/workers/w1/tasks/next"))[0] for _ in range(60)]
    assert set(statuses) == {204}
    # other worker calls are rate limited meanwhile...
    beats = [(await api.worker("PATCH", "/_worker/workers/w1"))[0] for _ in range(4)]
    assert beats[-1] == 429
    # ...and still the polls go on, and get the work
    job_id = await api.create()
    task = await api.next_task("w1")
    assert task["job_id"] == job_id


async def test_open_long_polls_per_worker_are_bounded(serve):
    api = await serve(unlimited(max_open_polls_per_worker=2), WORKER_POLL_TIMEOUT_SECONDS=5)
    await api.register("w1")
    await api.register("w2")
    path = "/_worker/workers/{}/tasks/next"
    polls = [asyncio.ensure_future(api.worker("GET", path.format("w1"))) for _ in range(2)]
    await asyncio.sleep(0.2)
    status, body = await api.worker("GET", path.format("w1"))
    assert status == 429
    assert "w1" in body["error"]
    other = asyncio.ensure_future(api.worker("GET", path.format("w2")))  # another worker is not affected
    for _ in range(3):
        await api.create()
    answers = await asyncio.gather(*polls, other)
    assert [status for status, _ in answers] == [200, 200, 200]
    # slots are given back: the worker polls again
    await api.create()
    assert (await api.worker("GET", path.format("w1")))[0] == 200


async def test_a_poll_whose_worker_hung_up_does_not_count(serve):
    api = await serve(unlimited(max_open_polls_per_worker=1), WORKER_POLL_TIMEOUT_SECONDS=3)
    await api.register("w1")
    path = "/_worker/workers/w1/tasks/next"
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.2):
            await api.worker("GET", path)  # the worker gives up; the server still waits for a task
    await asyncio.sleep(0.05)
    job_id = await api.create()
    task = await api.next_task("w1")
    assert task["job_id"] == job_id


async def test_open_event_streams_per_caller_are_bounded(serve):
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: hi\n\n")
        await release.wait()
        return response

    api = await serve(
        unlimited(max_streams_per_client=2), routes=lambda app: app.router.add_get("/_public/test-stream", stream)
    )
    headers = {"Accept": "text/event-stream"}
    opened = [await api.http.get("/_public/test-stream", headers=headers) for _ in range(2)]
    assert [r.status for r in opened] == [200, 200]
    async with api.http.get("/_public/test-stream", headers=headers) as third:
        assert third.status == 429
        assert third.headers["Retry-After"] == "1"
    release.set()
    for response in opened:
        await response.read()
        response.release()
    async with api.http.get("/_public/test-stream", headers=headers) as again:
        assert again.status == 200


def test_the_defaults_are_sane():
    limits = Limits.from_config(Config())
    assert limits.max_params_bytes < Config().MAX_REQUEST_BODY_BYTES
    assert limits.max_open_polls_per_worker >= 16  # SDK workers keep several polls open
    for name, (rate, burst) in limits.rates.items():
        assert rate > 0, name
        assert burst >= rate / 10, name
    assert WORKER_HEADER  # long polls have no rate class at all
    assert "worker_poll" not in limits.rates
